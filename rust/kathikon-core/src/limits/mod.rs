//! Queue limits that hold across every process on the store: a global limit (at most N jobs
//! of the queue executing at once) and a rate limit (at most N job starts per sliding
//! period), each for the whole queue or per partition (by worker and/or chosen args keys).
//!
//! The rules are part of a queue's stored settings ([`crate::QueueSettings`]). They are
//! enforced where claims are decided: in the owner's claim queues ([`Limiter`]), so a client
//! process's claim is limited by the same counts as the owner's own.
//!
//! A limited queue's ready jobs are kept per *bucket* (the job's global partition and rate
//! partition together); a claim takes one job from each bucket in turn that has room, so a
//! partition with few jobs gets its share beside one with many. Within a bucket jobs go by
//! (priority, `scheduled_at`, id) as everywhere.

mod limiter;
mod store;
mod window;

pub(crate) use limiter::Taken;
pub use limiter::{Limiter, Usage};
pub(crate) use store::{claimed, install, load};
pub use window::Window;

use serde::{Deserialize, Serialize};

use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::job::Job;

/// What a partition groups jobs by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionField {
    /// The job's worker name.
    Worker,
    /// Values of the job's args (the [`Partition::keys`], or the whole args without keys).
    Args,
}

/// How a limit splits a queue: each distinct value of the chosen fields is limited apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// The fields, in order, without repeats.
    pub fields: Vec<PartitionField>,
    /// The args keys whose values make the partition (with [`PartitionField::Args`]); none:
    /// the whole args.
    #[serde(default)]
    pub keys: Vec<String>,
}

impl Partition {
    /// The partition `job` falls in: its worker and/or the JSON text of each key's value
    /// (`null` when missing), joined by a separator no JSON text or worker name contains.
    pub fn value_of(&self, job: &Job) -> String {
        let mut out = String::new();
        for field in &self.fields {
            match field {
                PartitionField::Worker => out.push_str(&job.worker),
                PartitionField::Args if self.keys.is_empty() => out.push_str(&job.args),
                PartitionField::Args => {
                    let args = serde_json::from_str::<serde_json::Value>(&job.args).ok();
                    for key in &self.keys {
                        let value = args.as_ref().and_then(|a| a.get(key));
                        match value {
                            Some(v) => out.push_str(&v.to_string()),
                            None => out.push_str("null"),
                        }
                        out.push('\u{1f}');
                    }
                }
            }
            out.push('\u{1e}');
        }
        out
    }

    /// The partition value [`Partition::value_of`] gives, from the values a store computed
    /// for it: per field in order, the worker name (a JSON string), or the whole args or
    /// each key's value (`null` when missing). `None` when they do not fit the fields.
    pub fn value_of_parts(&self, parts: &[serde_json::Value]) -> Option<String> {
        let mut parts = parts.iter();
        let mut out = String::new();
        for field in &self.fields {
            match field {
                PartitionField::Worker => out.push_str(parts.next()?.as_str()?),
                PartitionField::Args if self.keys.is_empty() => {
                    out.push_str(&parts.next()?.to_string());
                }
                PartitionField::Args => {
                    for _ in &self.keys {
                        out.push_str(&parts.next()?.to_string());
                        out.push('\u{1f}');
                    }
                }
            }
            out.push('\u{1e}');
        }
        parts.next().is_none().then_some(out)
    }

    fn check(&self, what: &str) -> Result<()> {
        if self.fields.is_empty() {
            return Err(Error::InvalidJob(format!(
                "{what}: partition fields are empty; pass [\"worker\"], [\"args\"] or both"
            )));
        }
        let mut seen = self.fields.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != self.fields.len() {
            return Err(Error::InvalidJob(format!(
                "{what}: partition fields {:?} repeat a field; name each once",
                self.fields
            )));
        }
        if !self.keys.is_empty() && !self.fields.contains(&PartitionField::Args) {
            return Err(Error::InvalidJob(format!(
                "{what}: partition keys {:?} need \"args\" among the fields",
                self.keys
            )));
        }
        if let Some(bad) = self.keys.iter().find(|k| k.is_empty()) {
            return Err(Error::InvalidJob(format!(
                "{what}: partition key {bad:?} is empty; name an args key such as \"account_id\""
            )));
        }
        Ok(())
    }
}

/// At most `allowed` jobs of the queue executing at once over the whole store (per partition
/// value, with a partition). A claimed job counts until it leaves the executing state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalLimit {
    /// Jobs executing at once.
    pub allowed: u32,
    /// Limit each partition apart; `None`: the queue as a whole.
    #[serde(default)]
    pub partition: Option<Partition>,
}

/// At most `allowed` job starts (claims) in any `period_us` long window, per partition value
/// with a partition. The starts are stored, so a restart does not reset the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Starts per period.
    pub allowed: u32,
    /// The sliding window's length, µs.
    pub period_us: u64,
    /// Limit each partition apart; `None`: the queue as a whole.
    #[serde(default)]
    pub partition: Option<Partition>,
}

/// A limit from its JSON form (as [`GlobalLimit`] and [`RateLimit`] serialize); text that is
/// not one is [`Error::InvalidJob`] naming it.
fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| Error::InvalidJob(format!("{what} {text:?} is not a valid limit ({e})")))
}

impl GlobalLimit {
    /// The limit serialized as `text` (how the binding passes it).
    pub fn from_json(text: &str) -> Result<GlobalLimit> {
        from_json("global_limit", text)
    }

    /// Its JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a limit encodes as JSON")
    }
}

impl RateLimit {
    /// The limit serialized as `text` (how the binding passes it).
    pub fn from_json(text: &str) -> Result<RateLimit> {
        from_json("rate_limit", text)
    }

    /// Its JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a limit encodes as JSON")
    }
}

/// The longest rate-limit period: one week (a window's starts are kept in memory and in the
/// store until they leave it).
pub const MAX_PERIOD_US: u64 = 7 * 24 * 3600 * 1_000_000;

/// A queue's limits; both `None` is an unlimited queue (no [`Limiter`], nothing paid).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The global limit.
    pub global: Option<GlobalLimit>,
    /// The rate limit.
    pub rate: Option<RateLimit>,
}

impl Limits {
    /// Whether the queue has no limit.
    pub fn is_none(&self) -> bool {
        self.global.is_none() && self.rate.is_none()
    }

    /// Refuse a limit that cannot work, naming it and the fix.
    pub fn check(&self, queue: &str) -> Result<()> {
        if let Some(global) = &self.global {
            let what = format!("queue {queue:?}: global_limit");
            if global.allowed == 0 {
                return Err(Error::InvalidJob(format!(
                    "{what} allowed 0 runs nothing; pass 1 or more (to run nothing, pause the \
                     queue)"
                )));
            }
            if let Some(p) = &global.partition {
                p.check(&what)?;
            }
        }
        if let Some(rate) = &self.rate {
            let what = format!("queue {queue:?}: rate_limit");
            if rate.allowed == 0 {
                return Err(Error::InvalidJob(format!(
                    "{what} allowed 0 starts nothing; pass 1 or more (to run nothing, pause the \
                     queue)"
                )));
            }
            if rate.period_us < 1_000 || rate.period_us > MAX_PERIOD_US {
                return Err(Error::InvalidJob(format!(
                    "{what} period of {} s is out of range; pass from 0.001 s to one week \
                     (604800 s)",
                    rate.period_us as f64 / 1e6
                )));
            }
            if let Some(p) = &rate.partition {
                p.check(&what)?;
            }
        }
        Ok(())
    }

    /// The bucket `job` falls in under these limits.
    pub fn bucket_of(&self, job: &Job) -> Bucket {
        let part = |p: Option<&Partition>| p.map(|p| p.value_of(job)).unwrap_or_default();
        Bucket {
            global: part(self.global.as_ref().and_then(|g| g.partition.as_ref())),
            rate: part(self.rate.as_ref().and_then(|r| r.partition.as_ref())),
        }
    }
}

/// Where a limited queue keeps a job: its global partition's value and its rate partition's
/// (each empty when that limit is not partitioned, or absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket {
    /// The global limit's partition value.
    pub global: String,
    /// The rate limit's partition value.
    pub rate: String,
}

/// A partition value as people read it: the worker and the keys' JSON values, in the
/// partition's order, joined by `, `; the whole queue (no partition) is empty.
pub fn shown(value: &str) -> String {
    let parts: Vec<&str> =
        value.split(['\u{1e}', '\u{1f}']).filter(|part| !part.is_empty()).collect();
    parts.join(", ")
}

/// The name of the entry holding queue `queue`'s rate window for partition `rate`.
pub(crate) fn window_entry_name(queue: &str, rate: &str) -> String {
    format!("{queue}\u{1d}{rate}")
}

/// The queue and rate partition an entry named by [`window_entry_name`] holds.
pub(crate) fn split_window_entry_name(name: &str) -> Option<(&str, &str)> {
    name.split_once('\u{1d}')
}

/// How long after `now` a window entry last written at `now` can matter.
pub(crate) fn window_expiry(now: Micros, rate: &RateLimit) -> Micros {
    now.saturating_add(rate.period_us as Micros)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn job(id: u64, worker: &str, args: &str) -> Job {
        let new = crate::job::NewJob {
            queue: "q".into(),
            worker: worker.into(),
            args: args.into(),
            meta: "{}".into(),
            tags: Vec::new(),
            max_attempts: 3,
            priority: 0,
            scheduled_at: None,
            unique: None,
            batch: None,
        };
        new.into_job(id, 0)
    }

    #[test]
    fn partition_values_split_by_worker_and_keys() {
        let part = Partition {
            fields: vec![PartitionField::Worker, PartitionField::Args],
            keys: vec!["account".into()],
        };
        let one = part.value_of(&job(1, "w", r#"{"account": 1, "x": 2}"#));
        let same = part.value_of(&job(1, "w", r#"{"account": 1, "x": 3}"#));
        let text = part.value_of(&job(1, "w", r#"{"account": "1"}"#));
        let other_worker = part.value_of(&job(1, "v", r#"{"account": 1}"#));
        assert_eq!(one, same, "other keys do not matter");
        assert_ne!(one, text, "1 and \"1\" are different values");
        assert_ne!(one, other_worker, "the worker matters");
        let missing = part.value_of(&job(1, "w", "{}"));
        assert_eq!(missing, part.value_of(&job(1, "w", r#"{"account": null}"#)));
    }

    #[test]
    fn a_value_from_its_parts_is_the_value_of_the_job() {
        let part = Partition {
            fields: vec![PartitionField::Args, PartitionField::Worker],
            keys: vec!["a".into(), "b".into()],
        };
        let j = job(1, "w", r#"{"a": {"x": [1, 2.5]}, "c": 3}"#);
        let parts = serde_json::json!([{"x": [1, 2.5]}, null, "w"]);
        let parts = parts.as_array().unwrap();
        assert_eq!(part.value_of_parts(parts).unwrap(), part.value_of(&j));
        assert_eq!(part.value_of_parts(&parts[..2]), None, "too few parts");
        let whole = Partition { fields: vec![PartitionField::Args], keys: vec![] };
        let j = job(1, "w", r#"{"a":1}"#);
        assert_eq!(
            whole.value_of_parts(&[serde_json::json!({"a": 1})]).unwrap(),
            whole.value_of(&j)
        );
    }

    #[test]
    fn bad_limits_are_refused_with_the_fix() {
        let zero = Limits { global: Some(GlobalLimit { allowed: 0, partition: None }), rate: None };
        assert!(zero.check("q").unwrap_err().to_string().contains("pass 1 or more"));
        let period = Limits {
            global: None,
            rate: Some(RateLimit { allowed: 1, period_us: 10, partition: None }),
        };
        assert!(period.check("q").unwrap_err().to_string().contains("out of range"));
        let keys_without_args =
            Partition { fields: vec![PartitionField::Worker], keys: vec!["a".into()] };
        let limits = Limits {
            global: Some(GlobalLimit { allowed: 1, partition: Some(keys_without_args) }),
            rate: None,
        };
        assert!(limits.check("q").unwrap_err().to_string().contains("need \"args\""));
    }
}
