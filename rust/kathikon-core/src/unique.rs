//! Unique jobs: an insert that carries a [`UniqueSpec`] stores its job only if no job with the
//! same key exists in the states, and within the period, the spec names; otherwise it returns
//! the job that holds the key, flagged as a conflict ([`Inserted::conflicts`]).
//!
//! The key is computed here, in the core, so every process and every store agree on it: the
//! SHA-256 (hex) of the canonical JSON of the chosen fields (an object with sorted keys, args
//! and meta restricted to the spec's `keys` when it names some). The store keeps one
//! [`EntryKind::Unique`] entry per key, naming the job that holds it and expiring at that job's
//! `inserted_at + period`. The check and the entry are written in the writer's transaction,
//! with the job, so two inserts of one key (threads, client processes, one `insert_all`, an
//! owner and its successor) can never both store a job. Expired entries are deleted by
//! `plugins::unique`; an expired entry that is still there is harmless, as the check compares
//! the holder's `inserted_at` with the period itself.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::claim::key_of;
use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::job::{Job, JobId, NewJob};
use crate::state::JobState;
use crate::storage::{EntryKind, WriteTxn};
use crate::writer::Effects;

/// The fields a key may be made of, by bit (`1 << index`).
pub const FIELDS: [&str; 4] = ["worker", "queue", "args", "meta"];

/// The fields a conflicting insert may overwrite on the job it found, by bit.
pub const REPLACEABLE: [&str; 7] =
    ["args", "meta", "tags", "priority", "queue", "scheduled_at", "max_attempts"];

/// States in which the job holding a key may still be replaced.
const REPLACEABLE_STATES: [JobState; 3] =
    [JobState::Scheduled, JobState::Available, JobState::Retryable];

const WORKER: u8 = 1;
const QUEUE: u8 = 1 << 1;
const ARGS: u8 = 1 << 2;
const META: u8 = 1 << 3;

const R_ARGS: u8 = 1;
const R_META: u8 = 1 << 1;
const R_TAGS: u8 = 1 << 2;
const R_PRIORITY: u8 = 1 << 3;
const R_QUEUE: u8 = 1 << 4;
const R_SCHEDULED_AT: u8 = 1 << 5;
const R_MAX_ATTEMPTS: u8 = 1 << 6;

/// How an insert is unique: which fields make its key, which states and how long a job holds
/// it, and what a conflicting insert overwrites. Bitsets keep it small on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniqueSpec {
    /// Bits of [`FIELDS`].
    pub fields: u8,
    /// Compare only these keys of args and meta (all of them when empty).
    pub keys: Vec<String>,
    /// How long after its insert a job holds its key, in µs; `None`: as long as it exists.
    pub period: Option<Micros>,
    /// Bits `1 << state as u8` of the states in which a job holds its key.
    pub states: u8,
    /// Bits of [`REPLACEABLE`].
    pub replace: u8,
}

fn bits_of(names: &[String], table: &[&str], what: &str) -> Result<u8> {
    let mut bits = 0;
    for name in names {
        let Some(i) = table.iter().position(|n| n == name) else {
            return Err(Error::InvalidJob(format!(
                "unique {what} {name:?} is not one of {}; pick among those",
                table.join(", ")
            )));
        };
        bits |= 1 << i;
    }
    Ok(bits)
}

impl UniqueSpec {
    /// A spec from names, as a host passes them: `fields` among [`FIELDS`], `states` job
    /// state names, `replace` among [`REPLACEABLE`]. Refuses an unknown name, naming it.
    pub fn from_names(
        fields: &[String],
        keys: Vec<String>,
        period: Option<Micros>,
        states: &[String],
        replace: &[String],
    ) -> Result<UniqueSpec> {
        let mut state_bits = 0;
        for name in states {
            state_bits |= 1 << JobState::parse(name)? as u8;
        }
        let spec = UniqueSpec {
            fields: bits_of(fields, &FIELDS, "field")?,
            keys,
            period,
            states: state_bits,
            replace: bits_of(replace, &REPLACEABLE, "replace field")?,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Check what names cannot: a key needs fields, states and a period that is not negative.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidJob(m));
        if self.fields == 0 || self.fields >> FIELDS.len() != 0 {
            return bad(format!(
                "unique fields are empty or unknown (bits {:#b}); pick among {}",
                self.fields,
                FIELDS.join(", ")
            ));
        }
        if !self.keys.is_empty() && self.fields & (ARGS | META) == 0 {
            return bad(format!(
                "unique keys {:?} restrict args and meta, but fields name neither; add \"args\" \
                 (or \"meta\") to fields, or drop keys",
                self.keys
            ));
        }
        if self.states == 0 || self.states >> JobState::ALL.len() != 0 {
            return bad("unique states are empty; name the states in which a job counts, e.g. \
                        scheduled, available, executing, retryable, completed"
                .into());
        }
        if let Some(period) = self.period {
            if period < 0 {
                return bad(format!(
                    "unique period {period} µs is negative; pass seconds above 0, or None for \
                     as long as the job exists"
                ));
            }
        }
        if self.replace >> REPLACEABLE.len() != 0 {
            return bad(format!("unique replace bits {:#b} are unknown", self.replace));
        }
        Ok(())
    }

    fn holds_in(&self, state: JobState) -> bool {
        self.states & (1 << state as u8) != 0
    }

    /// When the key `job` takes expires: its insert plus the period, if the spec has one.
    pub fn expiry(&self, job: &Job) -> Option<Micros> {
        self.period.map(|p| job.inserted_at.saturating_add(p))
    }

    /// Whether `job`, found under this spec's key, holds it at `now`: it is in one of the
    /// spec's states and was inserted within its period.
    pub fn held_by(&self, job: &Job, now: Micros) -> bool {
        let within = self.period.is_none_or(|p| now < job.inserted_at.saturating_add(p));
        within && self.holds_in(job.state)
    }

    /// The key of `job` under this spec: SHA-256, in hex, of the canonical JSON of its
    /// chosen fields.
    pub fn key(&self, job: &NewJob) -> Result<String> {
        let mut object = Map::new();
        if self.fields & WORKER != 0 {
            object.insert("worker".into(), Value::String(job.worker.clone()));
        }
        if self.fields & QUEUE != 0 {
            object.insert("queue".into(), Value::String(job.queue.clone()));
        }
        for (bit, name, text) in [(ARGS, "args", &job.args), (META, "meta", &job.meta)] {
            if self.fields & bit != 0 {
                object.insert(name.into(), self.restricted(text, name)?);
            }
        }
        // `Map` is ordered by key (serde_json without `preserve_order`), nested objects too,
        // so equal values always print the same text.
        let canonical = Value::Object(object).to_string();
        Ok(hex(&Sha256::digest(canonical.as_bytes())))
    }

    /// `text` (args or meta) parsed, keeping only the spec's keys when it names some (a key
    /// the job lacks is left out).
    fn restricted(&self, text: &str, what: &str) -> Result<Value> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::InvalidJob(format!("{what} is not valid JSON ({e})")))?;
        match value {
            Value::Object(mut all) if !self.keys.is_empty() => {
                all.retain(|k, _| self.keys.iter().any(|key| key == k));
                Ok(Value::Object(all))
            }
            other => Ok(other),
        }
    }
}

/// `bytes` in lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

/// What an insert stored or found: the jobs, one per job asked for, in order, and which of
/// them were already stored (a unique insert's conflict) rather than made by this insert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inserted {
    /// The jobs, in the order they were asked for.
    pub jobs: Vec<Job>,
    /// Indexes into `jobs` of the jobs that existed already, ascending (empty without
    /// unique inserts, so a plain insert allocates nothing for it).
    pub conflicts: Vec<u32>,
}

impl Inserted {
    /// Whether `jobs[index]` existed already.
    pub fn is_conflict(&self, index: usize) -> bool {
        self.conflicts.binary_search(&(index as u32)).is_ok()
    }
}

/// The job holding `key` for `spec` at `now`, if any: the entry has not expired (by the
/// period of the insert that wrote it) and names a job that still exists, is in one of the
/// spec's states and was inserted within the spec's period. Checking the entry's own expiry
/// makes the answer the same whether or not the expiry plugin has deleted it yet.
fn holder(
    txn: &mut dyn WriteTxn,
    spec: &UniqueSpec,
    key: &str,
    now: Micros,
) -> Result<Option<Job>> {
    let Some(entry) = txn.entry(EntryKind::Unique, key)? else { return Ok(None) };
    if entry.expires.is_some_and(|at| at <= now) {
        return Ok(None);
    }
    let Ok(id) = postcard::from_bytes::<JobId>(&entry.value) else { return Ok(None) };
    let Some(job) = txn.get(id)? else { return Ok(None) };
    Ok(spec.held_by(&job, now).then_some(job))
}

/// Point `key` at `job`, expiring after the spec's period.
fn hold(
    txn: &mut dyn WriteTxn,
    spec: &UniqueSpec,
    key: &str,
    job: &Job,
    effects: &mut Effects,
) -> Result<()> {
    let value = postcard::to_allocvec(&job.id).map_err(|e| Error::Storage(e.to_string()))?;
    let expires = spec.expiry(job);
    if let Some(at) = expires {
        effects.unique_expiry = Some(effects.unique_expiry.map_or(at, |e| e.min(at)));
    }
    txn.put_entry(EntryKind::Unique, key, &value, expires)
}

/// Insert `new` (whose unique spec, taken out of it, is `spec`) as job `id` (a new id when
/// `None`), unless a job holds its key: then return that job (with the spec's replace
/// applied) and `true`.
pub(crate) fn insert(
    txn: &mut dyn WriteTxn,
    new: NewJob,
    spec: &UniqueSpec,
    id: Option<JobId>,
    now: Micros,
    effects: &mut Effects,
) -> Result<(Job, bool)> {
    let key = spec.key(&new)?;
    if let Some(found) = holder(txn, spec, &key, now)? {
        return Ok((replace(txn, found, new, spec, now, effects)?, true));
    }
    let id = match id {
        Some(id) => id,
        None => txn.allocate_ids(1)?,
    };
    let job = new.into_job(id, now);
    txn.put(None, &job)?;
    if job.state == JobState::Available {
        effects.ready(&job);
    }
    hold(txn, spec, &key, &job, effects)?;
    Ok((job, false))
}

/// `old` with the fields `spec` replaces overwritten by `new`'s, if `old` may still change
/// (scheduled, available or retryable): an available job moved later is scheduled again.
/// Equal to `old` when nothing changes. Every store applies a conflicting insert's replace
/// with this.
pub fn replaced(old: &Job, new: NewJob, spec: &UniqueSpec, now: Micros) -> Result<Job> {
    let mut job = old.clone();
    if spec.replace == 0 || !REPLACEABLE_STATES.contains(&old.state) {
        return Ok(job);
    }
    let r = spec.replace;
    if r & R_ARGS != 0 {
        job.args = new.args;
    }
    if r & R_META != 0 {
        job.meta = new.meta;
    }
    if r & R_TAGS != 0 {
        job.tags = new.tags;
    }
    if r & R_PRIORITY != 0 {
        job.priority = new.priority;
    }
    if r & R_QUEUE != 0 {
        job.queue = new.queue;
    }
    if r & R_MAX_ATTEMPTS != 0 {
        // Never below the attempts already made: the job must be able to run once more.
        job.max_attempts = new.max_attempts.max(job.attempt + 1);
    }
    if r & R_SCHEDULED_AT != 0 {
        let at = new.scheduled_at.unwrap_or(now);
        if job.state == JobState::Available && at > now {
            job.reschedule(at)?;
        } else {
            // Scheduled or retryable keep their state (the scheduler promotes them when
            // due, at once if `at` has passed); available stays available.
            job.scheduled_at = at;
        }
    }
    Ok(job)
}

/// Apply `new`'s replace to `old` ([`replaced`]) and store it; moves its index entries and
/// claim queue place.
fn replace(
    txn: &mut dyn WriteTxn,
    old: Job,
    new: NewJob,
    spec: &UniqueSpec,
    now: Micros,
    effects: &mut Effects,
) -> Result<Job> {
    let job = replaced(&old, new, spec, now)?;
    if job == old {
        return Ok(old);
    }
    if job.queue == old.queue {
        txn.put(Some(old.placement()), &job)?;
    } else {
        // The indexes and counts are keyed by queue, which a placement does not carry.
        txn.remove(&old)?;
        txn.put(None, &job)?;
    }
    if old.state == JobState::Available {
        effects.unready(old.queue.clone(), key_of(&old));
    }
    if job.state == JobState::Available {
        effects.ready(&job);
    }
    Ok(job)
}

/// The answer to a resent insert: for each job asked for, the one the first send stored
/// (`first + index`) or, where it found a conflict, the job holding the key now (flagged).
/// A job pruned or quarantined since is left out.
pub(crate) fn stored_by(
    txn: &mut dyn WriteTxn,
    jobs: &[NewJob],
    first: JobId,
    now: Micros,
) -> Result<Inserted> {
    let mut out = Inserted { jobs: Vec::with_capacity(jobs.len()), conflicts: Vec::new() };
    for (offset, new) in jobs.iter().enumerate() {
        if let Some(job) = txn.get(first + offset as u64)? {
            out.jobs.push(job);
            continue;
        }
        let Some(spec) = &new.unique else { continue };
        let key = spec.key(new)?;
        if let Some(job) = holder(txn, spec, &key, now)? {
            out.conflicts.push(out.jobs.len() as u32);
            out.jobs.push(job);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::tests::new_job;

    fn spec(fields: &[&str], keys: &[&str]) -> UniqueSpec {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        UniqueSpec::from_names(&names(fields), names(keys), None, &names(&["available"]), &[])
            .unwrap()
    }

    fn with_args(args: &str) -> NewJob {
        NewJob { args: args.into(), ..new_job() }
    }

    /// The key ignores key order and, with keys, every other key; it tells fields apart.
    #[test]
    fn keys_are_canonical_and_restricted() {
        let all = spec(&["worker", "args"], &[]);
        let a = all.key(&with_args(r#"{"a":1,"b":{"y":2,"x":1}}"#)).unwrap();
        let b = all.key(&with_args(r#"{"b":{"x":1,"y":2},"a":1}"#)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(a, all.key(&with_args(r#"{"a":2,"b":{"x":1,"y":2}}"#)).unwrap());
        let by_a = spec(&["worker", "args"], &["a"]);
        assert_eq!(
            by_a.key(&with_args(r#"{"a":1,"page":1}"#)).unwrap(),
            by_a.key(&with_args(r#"{"a":1,"page":2}"#)).unwrap()
        );
        let worker_only = spec(&["worker"], &[]);
        assert_ne!(worker_only.key(&new_job()).unwrap(), all.key(&new_job()).unwrap());
        // The digest of the canonical text, so another implementation can compute it.
        let text = r#"{"worker":"m.f"}"#;
        let want = hex(&Sha256::digest(text.as_bytes()));
        assert_eq!(worker_only.key(&new_job()).unwrap(), want);
        assert_eq!(hex(&[0x00, 0x9f, 0xa0]), "009fa0");
    }

    #[test]
    fn bad_names_are_refused_naming_them() {
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        let err = |r: Result<UniqueSpec>| r.unwrap_err().to_string();
        let e =
            err(UniqueSpec::from_names(&s(&["args", "id"]), vec![], None, &s(&["available"]), &[]));
        assert!(e.contains("\"id\"") && e.contains("worker, queue, args, meta"), "{e}");
        let e = err(UniqueSpec::from_names(&s(&["args"]), vec![], None, &s(&["running"]), &[]));
        assert!(e.contains("\"running\""), "{e}");
        let e =
            err(UniqueSpec::from_names(&s(&["args"]), vec![], Some(-1), &s(&["available"]), &[]));
        assert!(e.contains("negative"), "{e}");
        let e = err(UniqueSpec::from_names(
            &s(&["args"]),
            vec![],
            None,
            &s(&["available"]),
            &s(&["id"]),
        ));
        assert!(e.contains("replace field \"id\""), "{e}");
        let e =
            err(UniqueSpec::from_names(&s(&["worker"]), s(&["a"]), None, &s(&["available"]), &[]));
        assert!(e.contains("add \"args\""), "{e}");
        let e = err(UniqueSpec::from_names(&s(&["args"]), vec![], None, &[], &[]));
        assert!(e.contains("states are empty"), "{e}");
    }
}
