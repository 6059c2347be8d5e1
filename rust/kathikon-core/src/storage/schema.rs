//! redb table layout and the record encoding.
//!
//! `jobs` holds one record per job. Every other table is an index derived from a record's
//! state and is rewritten with it in the same transaction:
//!
//! | table       | key                                      | holds jobs that are        |
//! |-------------|------------------------------------------|----------------------------|
//! | `available` | `(queue, priority, scheduled_at, id)`    | available (rebuilds claim queues at open) |
//! | `due`       | `(scheduled_at, id)`                     | scheduled or retryable     |
//! | `executing` | id                                       | executing (rescued at open)|
//! | `finished`  | `(finished_at, id)`                      | completed/cancelled/discarded (pruner) |
//! | `counts`    | `(queue, state)` → number of jobs        | (every job, counted)       |
//!
//! A record is one version byte followed by the postcard encoding of [`Job`]. A reader refuses
//! a version byte newer than its own, so an old Kathikon never misreads a newer file.

use redb::TableDefinition;

use crate::error::{Error, Result};
use crate::job::Job;

/// Version of the record encoding and table layout this build writes.
pub const FORMAT_VERSION: u64 = 1;

pub(crate) const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
pub(crate) const AVAILABLE: TableDefinition<(&str, u8, i64, u64), ()> =
    TableDefinition::new("available");
pub(crate) const DUE: TableDefinition<(i64, u64), ()> = TableDefinition::new("due");
pub(crate) const EXECUTING: TableDefinition<u64, ()> = TableDefinition::new("executing");
pub(crate) const FINISHED: TableDefinition<(i64, u64), ()> = TableDefinition::new("finished");
/// Jobs per `(queue, state as u8)`, updated in the same transaction as the jobs, so stats
/// are exact and cost one small range read.
pub(crate) const COUNTS: TableDefinition<(&str, u8), u64> = TableDefinition::new("counts");
/// `format_version` and `next_id`; its presence marks a file as a Kathikon store.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("kathikon_meta");

pub(crate) const META_FORMAT: &str = "format_version";
pub(crate) const META_NEXT_ID: &str = "next_id";

/// Encode a record.
pub(crate) fn encode(job: &Job) -> Vec<u8> {
    // Sized up front so encoding never reallocates (it showed in profiles as growth copies).
    let errors: usize = job.errors.iter().map(|e| e.error.len() + 16).sum();
    let tags: usize = job.tags.iter().map(|t| t.len() + 2).sum();
    let capacity =
        96 + job.queue.len() + job.worker.len() + job.args.len() + job.meta.len() + tags + errors;
    let mut out = Vec::with_capacity(capacity);
    out.push(FORMAT_VERSION as u8);
    // Serialising a plain struct into a Vec cannot fail.
    postcard::to_extend(job, out).expect("postcard encodes a Job")
}

/// Decode a record, naming the job id in any error.
pub(crate) fn decode(id: u64, bytes: &[u8]) -> Result<Job> {
    let damaged = |detail: String| Error::Corrupted { path: "<store>".into(), detail };
    match bytes.first() {
        Some(&v) if u64::from(v) == FORMAT_VERSION => postcard::from_bytes(&bytes[1..])
            .map_err(|e| damaged(format!("job {id}: record does not decode: {e}"))),
        Some(&v) => Err(damaged(format!("job {id}: unknown record version {v}"))),
        None => Err(damaged(format!("job {id}: empty record"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::NewJob;

    #[test]
    fn round_trip_and_refusals() {
        let job = NewJob {
            queue: "q".into(),
            worker: "w".into(),
            args: r#"{"a":[1,2,"é"]}"#.into(),
            meta: "{}".into(),
            tags: vec!["t".into()],
            max_attempts: 3,
            priority: 4,
            scheduled_at: Some(99),
        }
        .into_job(5, 10);
        let bytes = encode(&job);
        assert_eq!(decode(5, &bytes).unwrap(), job);
        let mut newer = bytes.clone();
        newer[0] = 200;
        assert!(decode(5, &newer).unwrap_err().to_string().contains("unknown record version 200"));
        assert!(decode(5, &bytes[..bytes.len() / 2]).is_err());
        assert!(decode(5, &[]).is_err());
    }
}
