//! Listing, counting and bulk actions by filter: what a [`ListFilter`] selects, decided once
//! per call ([`Matcher`]) and applied to each stored job, and the walk over the jobs in id
//! order (either way) that [`crate::Jobs::list`] pages through.
//!
//! The filter is part of the contract, so the socket client sends it whole and a store on a
//! database server can translate it to its own query. `args` and `meta` match *contained*
//! JSON, as `PostgreSQL`'s `@>` does: an object contains another when each of the other's keys
//! is present with a contained value, an array when each of the other's elements is contained
//! in one of its elements, and any other value only an equal one.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::job::{Job, JobId};
use crate::jobs::ListFilter;
use crate::storage::ReadTxn;

/// At most this many jobs per writer command of a bulk action, so one command never holds the
/// writer (and every other caller) for long.
pub const BULK_CHUNK: usize = 1_000;

/// A half-open time range, in µs since the Unix epoch: at or after `after`, before `before`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    /// The earliest time included.
    pub after: Option<Micros>,
    /// The first time no longer included.
    pub before: Option<Micros>,
}

impl TimeRange {
    fn is_open(&self) -> bool {
        self.after.is_none() && self.before.is_none()
    }

    fn holds(&self, at: Option<Micros>) -> bool {
        if self.is_open() {
            return true;
        }
        at.is_some_and(|at| {
            self.after.is_none_or(|a| at >= a) && self.before.is_none_or(|b| at < b)
        })
    }
}

/// What a bulk action does to each job its filter selects ([`crate::Jobs::bulk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BulkAction {
    /// Cancel jobs not yet finished (finished ones are left as they are).
    Cancel,
    /// Make scheduled, retryable and finished jobs available now (executing and available
    /// ones are left as they are).
    Retry,
    /// Delete finished jobs; with `force`, jobs in any state (an executing job's worker then
    /// finds its ack stale).
    Delete {
        /// Also delete jobs that are not finished.
        force: bool,
    },
}

/// A [`ListFilter`] checked once: its JSON parsed, its bounds known.
#[derive(Debug)]
pub(crate) struct Matcher {
    filter: ListFilter,
    args: Option<Value>,
    meta: Option<Value>,
}

impl Matcher {
    /// Check `filter`; a contained-JSON filter that is not JSON is [`Error::InvalidJob`]
    /// naming it.
    pub(crate) fn new(filter: &ListFilter) -> Result<Matcher> {
        let parse = |what: &str, text: &Option<String>| -> Result<Option<Value>> {
            text.as_deref()
                .map(|t| {
                    serde_json::from_str(t).map_err(|e| {
                        Error::InvalidJob(format!(
                            "the {what} filter {t:?} is not JSON ({e}); pass the JSON a job's \
                             {what} must contain, such as {{\"user_id\": 7}}"
                        ))
                    })
                })
                .transpose()
        };
        Ok(Matcher {
            args: parse("args", &filter.args)?,
            meta: parse("meta", &filter.meta)?,
            filter: filter.clone(),
        })
    }

    /// The filter checked.
    pub(crate) fn filter(&self) -> &ListFilter {
        &self.filter
    }

    /// Whether `job` is selected (the id bounds aside: the walk keeps to them).
    pub(crate) fn matches(&self, job: &Job) -> bool {
        let f = &self.filter;
        f.state.is_none_or(|s| s == job.state)
            && (f.states.is_empty() || f.states.contains(&job.state))
            && f.queue.as_ref().is_none_or(|q| *q == job.queue)
            && f.worker.as_ref().is_none_or(|w| *w == job.worker)
            && f.tags.iter().all(|t| job.tags.contains(t))
            && f.inserted.holds(Some(job.inserted_at))
            && f.scheduled.holds(Some(job.scheduled_at))
            && f.finished.holds(job.finished_at())
            && json_holds(self.args.as_ref(), &job.args)
            && json_holds(self.meta.as_ref(), &job.meta)
    }

    /// Whether the stored per-queue-and-state counts answer a count of this filter alone.
    pub(crate) fn counts_suffice(&self) -> bool {
        let f = &self.filter;
        f.worker.is_none()
            && f.tags.is_empty()
            && self.args.is_none()
            && self.meta.is_none()
            && f.inserted.is_open()
            && f.scheduled.is_open()
            && f.finished.is_open()
            && f.after.is_none()
            && f.before.is_none()
    }

    /// The count of the rows of a `counts` answer this filter selects (see `counts_suffice`).
    pub(crate) fn sum_counts(&self, counts: &[(String, crate::JobState, u64)]) -> u64 {
        let f = &self.filter;
        counts
            .iter()
            .filter(|(queue, state, _)| {
                f.state.is_none_or(|s| s == *state)
                    && (f.states.is_empty() || f.states.contains(state))
                    && f.queue.as_ref().is_none_or(|q| q == queue)
            })
            .map(|(_, _, n)| n)
            .sum()
    }
}

fn json_holds(want: Option<&Value>, have: &str) -> bool {
    match want {
        None => true,
        Some(want) => serde_json::from_str::<Value>(have).is_ok_and(|have| contains(&have, want)),
    }
}

/// Whether `have` contains `want` (see the module doc).
pub(crate) fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(have), Value::Object(want)) => {
            want.iter().all(|(k, w)| have.get(k).is_some_and(|h| contains(h, w)))
        }
        (Value::Array(have), Value::Array(want)) => {
            want.iter().all(|w| have.iter().any(|h| contains(h, w)))
        }
        (Value::Number(h), Value::Number(w)) => h.as_f64() == w.as_f64(),
        _ => have == want,
    }
}

/// Walk the jobs between the filter's id bounds in its order, keeping those `matcher`
/// selects, until `f` returns false: through the store's indexes when that reads less
/// (`listing_index.rs`), else every record in id order. Undecodable records go to `damaged`.
pub(crate) fn walk(
    txn: &mut dyn ReadTxn,
    matcher: &Matcher,
    damaged: &mut Vec<JobId>,
    f: &mut dyn FnMut(Job) -> bool,
) -> Result<()> {
    if crate::listing_index::walk_indexed(txn, matcher, damaged, f)? {
        return Ok(());
    }
    walk_ids(txn, matcher, damaged, f)
}

/// [`walk`] over every record in id order.
pub(crate) fn walk_ids(
    txn: &mut dyn ReadTxn,
    matcher: &Matcher,
    damaged: &mut Vec<JobId>,
    f: &mut dyn FnMut(Job) -> bool,
) -> Result<()> {
    let (after, before) = (matcher.filter.after, matcher.filter.before);
    if matcher.filter.descending {
        txn.scan_desc(
            before,
            &mut |job| {
                if after.is_some_and(|a| job.id <= a) {
                    return false;
                }
                !matcher.matches(&job) || f(job)
            },
            damaged,
        )
    } else {
        txn.scan(
            after,
            &mut |job| {
                if before.is_some_and(|b| job.id >= b) {
                    return false;
                }
                !matcher.matches(&job) || f(job)
            },
            damaged,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::contains;
    use serde_json::json;

    #[test]
    fn containment_follows_postgres_jsonb() {
        let have = json!({"user": {"id": 7, "roles": ["a", "b"]}, "n": 1.0, "s": "x"});
        assert!(contains(&have, &json!({})));
        assert!(contains(&have, &json!({"user": {"id": 7}})));
        assert!(contains(&have, &json!({"user": {"roles": ["b"]}, "n": 1})));
        assert!(!contains(&have, &json!({"user": {"id": 8}})));
        assert!(!contains(&have, &json!({"user": {"roles": ["c"]}})));
        assert!(!contains(&have, &json!({"missing": null})));
        assert!(!contains(&have, &json!({"s": "y"})));
        assert!(contains(&json!([1, [2, 3]]), &json!([[3]])));
    }
}
