//! Queues controlled at runtime: each queue's stored settings (paused, a concurrency set by
//! `scale_queue`, started or stopped at runtime), how a change applies to them, and the
//! owner's in-memory copy that claims and the contract's `queue_settings` read.
//!
//! A queue's settings are one [`EntryKind::Queue`] entry, written by the writer in a batch
//! with the jobs, so a change is durable and ordered with every other write, and a restarted
//! or new owner loads them at open ([`RuntimeQueues::load`]). The value is JSON with every
//! field defaulted, so fields added later (a global limit, a rate limit) leave entries
//! written before them readable, and older readers skip the new fields. A queue whose
//! settings are all back to their defaults has no entry.
//!
//! Pausing is exact at the owner: the claim path checks its queue's paused flag (one atomic
//! load per claim call), and the writer refuses a claim whose queue is paused when the claim
//! is applied, so once a pause is answered no claim of that queue succeeds in any process.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits::{GlobalLimit, Limits, RateLimit};
use crate::storage::{Entry, EntryKind, WriteTxn};

/// A queue's settings as stored; [`QueueSettings::default`] is a queue nobody changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueSettings {
    /// The queue.
    pub name: String,
    /// No job of the queue starts anywhere until it is resumed (running ones finish).
    pub paused: bool,
    /// The concurrency every worker process runs the queue at (`scale_queue`); `None`: each
    /// process's own configured value.
    pub concurrency: Option<u32>,
    /// Started at runtime (`start_queue`) with this concurrency: every worker process runs
    /// it, and it is an allowed insert target, though no app declared it.
    pub started: Option<u32>,
    /// Stopped (`stop_queue`): worker processes do not claim from it; its jobs stay stored
    /// and `start_queue` runs it again.
    pub stopped: bool,
    /// At most this many of its jobs executing at once over the store (see [`crate::limits`]).
    pub global_limit: Option<GlobalLimit>,
    /// At most this many of its jobs starting per sliding period over the store.
    pub rate_limit: Option<RateLimit>,
}

impl QueueSettings {
    /// Whether nothing differs from a queue nobody changed (then it needs no entry).
    pub fn is_default(&self) -> bool {
        !self.paused
            && self.concurrency.is_none()
            && self.started.is_none()
            && !self.stopped
            && self.limits().is_none()
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        Limits { global: self.global_limit.clone(), rate: self.rate_limit.clone() }
    }

    fn decode(entry: &Entry) -> Result<QueueSettings> {
        Self::decode_value(&entry.name, &entry.value)
    }

    /// The settings stored for queue `name` as `value`.
    pub(crate) fn decode_value(name: &str, value: &[u8]) -> Result<QueueSettings> {
        let mut settings: QueueSettings = serde_json::from_slice(value).map_err(|e| {
            Error::Storage(format!("queue {name:?}: its stored settings do not decode: {e}"))
        })?;
        name.clone_into(&mut settings.name);
        Ok(settings)
    }

    /// The value stored for these settings.
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("queue settings encode as JSON")
    }
}

/// A change to one queue's settings ([`crate::Jobs::set_queue`]). Each sets a value, so
/// applying one twice changes nothing more (a client may resend it to a new owner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueChange {
    /// No job of the queue starts until [`QueueChange::Resume`].
    Pause,
    /// Jobs of the queue start again; waiting claimers are woken at once.
    Resume,
    /// Run the queue at this concurrency in every worker process; `None`: back to each
    /// process's configured value.
    Scale(Option<u32>),
    /// Run the queue in every worker process (at this concurrency; `None`: the one it was
    /// started with before), and un-stop it.
    Start(Option<u32>),
    /// Stop claiming from the queue in every worker process; its jobs stay stored.
    Stop,
    /// Set the queue's global limit (`None`: none).
    GlobalLimit(Option<GlobalLimit>),
    /// Set the queue's rate limit (`None`: none).
    RateLimit(Option<RateLimit>),
}

impl QueueChange {
    /// Whether it changes the queue's limits (the claim queue is then rebuilt).
    pub fn changes_limits(&self) -> bool {
        matches!(self, QueueChange::GlobalLimit(_) | QueueChange::RateLimit(_))
    }

    /// The change applied to `settings`, or why it is refused.
    fn apply(self, settings: &mut QueueSettings) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidJob(what));
        match self {
            QueueChange::Pause => settings.paused = true,
            QueueChange::Resume => settings.paused = false,
            QueueChange::Scale(Some(0)) | QueueChange::Start(Some(0)) => {
                return bad(format!(
                    "queue {:?}: concurrency 0 runs nothing; pass 1 or more (to stop running \
                     it, stop or pause the queue)",
                    settings.name
                ));
            }
            QueueChange::Scale(n) => settings.concurrency = n,
            QueueChange::Start(n) => {
                settings.started = n.or(settings.started);
                settings.stopped = false;
            }
            QueueChange::Stop => settings.stopped = true,
            QueueChange::GlobalLimit(limit) => {
                let limits = Limits { global: limit.clone(), rate: None };
                limits.check(&settings.name)?;
                settings.global_limit = limit;
            }
            QueueChange::RateLimit(limit) => {
                let limits = Limits { global: None, rate: limit.clone() };
                limits.check(&settings.name)?;
                settings.rate_limit = limit;
            }
        }
        Ok(())
    }
}

/// Queue `name`'s settings after `change`, from those stored (`None`: a queue nobody
/// changed); a bad change or name is [`Error::InvalidJob`] naming it. Every store applies a
/// change with this, then stores the result (no entry when [`QueueSettings::is_default`]).
pub(crate) fn changed(
    name: &str,
    stored: Option<QueueSettings>,
    change: QueueChange,
) -> Result<QueueSettings> {
    if name.is_empty() {
        return Err(Error::InvalidJob(
            "queue name is empty; pass a queue name such as \"default\"".into(),
        ));
    }
    let mut settings = stored
        .unwrap_or_else(|| QueueSettings { name: name.to_string(), ..QueueSettings::default() });
    change.apply(&mut settings)?;
    Ok(settings)
}

/// Apply `change` to queue `name`'s stored settings inside the writer's transaction. The
/// inner result is the settings as they now are, or the change's refusal (nothing written);
/// the outer one a storage failure, which fails the batch.
pub(crate) fn set(
    txn: &mut dyn WriteTxn,
    name: &str,
    change: QueueChange,
) -> Result<Result<QueueSettings>> {
    // An empty name is refused by `changed`; there is no entry to read for it.
    let stored = if name.is_empty() {
        None
    } else {
        txn.entry(EntryKind::Queue, name)?.map(|e| QueueSettings::decode(&e)).transpose()?
    };
    let settings = match changed(name, stored, change) {
        Ok(settings) => settings,
        Err(refused) => return Ok(Err(refused)),
    };
    if settings.is_default() {
        txn.remove_entry(EntryKind::Queue, name)?;
    } else {
        txn.put_entry(EntryKind::Queue, name, &settings.encode(), None)?;
    }
    Ok(Ok(settings))
}

/// The owner's copy of every queue's stored settings, changed only after the writer commits
/// a change, with a generation that moves on with each change so a poller can skip an
/// unchanged answer. The generation starts at the open's time in µs, so an owner that takes
/// over never repeats a generation its predecessor handed out (their clocks agree).
#[derive(Debug, Default)]
pub struct RuntimeQueues {
    state: Mutex<(u64, BTreeMap<String, QueueSettings>)>,
}

impl RuntimeQueues {
    /// Take the settings stored in `entries` (a store's [`EntryKind::Queue`] entries), at
    /// generation `start` (at open).
    pub(crate) fn load(&self, entries: &[Entry], start: u64) -> Result<()> {
        let mut all = BTreeMap::new();
        for entry in entries {
            let settings = QueueSettings::decode(entry)?;
            all.insert(settings.name.clone(), settings);
        }
        *self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (start, all);
        Ok(())
    }

    /// The generation and every queue with settings, by name.
    pub fn snapshot(&self) -> (u64, Vec<QueueSettings>) {
        let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (state.0, state.1.values().cloned().collect())
    }

    /// After a commit: `settings` are stored now.
    pub(crate) fn changed(&self, settings: &QueueSettings) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.0 += 1;
        if settings.is_default() {
            state.1.remove(&settings.name);
        } else {
            state.1.insert(settings.name.clone(), settings.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(changes: &[QueueChange]) -> Result<QueueSettings> {
        let mut s = QueueSettings { name: "q".into(), ..QueueSettings::default() };
        for c in changes {
            c.clone().apply(&mut s)?;
        }
        Ok(s)
    }

    #[test]
    fn changes_set_values_and_back_to_default_needs_no_entry() {
        let s = applied(&[QueueChange::Pause, QueueChange::Scale(Some(4))]).unwrap();
        assert!(s.paused && s.concurrency == Some(4));
        let s = applied(&[QueueChange::Pause, QueueChange::Resume, QueueChange::Scale(None)]);
        assert!(s.unwrap().is_default());
        let s =
            applied(&[QueueChange::Start(Some(3)), QueueChange::Stop, QueueChange::Start(None)]);
        assert_eq!(s.unwrap().started, Some(3), "a restart keeps the concurrency it had");
        assert!(applied(&[QueueChange::Scale(Some(0))]).is_err());
    }

    #[test]
    fn settings_written_with_unknown_fields_still_decode() {
        let entry = Entry {
            name: "q".into(),
            value: br#"{"paused":true,"weight":{"allowed":5}}"#.to_vec(),
            expires: None,
        };
        let s = QueueSettings::decode(&entry).unwrap();
        assert!(s.paused && s.name == "q" && s.concurrency.is_none());
    }
}
