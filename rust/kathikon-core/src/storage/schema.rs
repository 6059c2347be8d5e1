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
/// A random id given to the store when it first gets a write-ahead log; each log record
/// carries it, so a log found beside another store is ignored.
pub(crate) const META_STORE_ID: &str = "store_id";
/// The last write-ahead log record that redb's durable state includes.
pub(crate) const META_WAL_SEQ: &str = "wal_seq";

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

/// Property tests of the record codec: arbitrary bytes never panic the decoder, and every job
/// survives a round trip. `PROPTEST_CASES` raises the case count (default 256 each).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::job::JobError;
    use crate::state::JobState;

    fn job() -> impl Strategy<Value = Job> {
        let texts = (any::<String>(), any::<String>(), any::<String>(), any::<String>());
        let numbers = (any::<u64>(), any::<u32>(), any::<u32>(), any::<u8>());
        let times = (
            any::<i64>(),
            any::<i64>(),
            any::<Option<i64>>(),
            any::<Option<i64>>(),
            any::<Option<i64>>(),
            any::<Option<i64>>(),
        );
        let lists = (
            prop::collection::vec(any::<String>(), 0..4),
            prop::collection::vec(
                (any::<i64>(), any::<u32>(), any::<String>())
                    .prop_map(|(at, attempt, error)| JobError { at, attempt, error }),
                0..4,
            ),
            prop::sample::select(JobState::ALL.to_vec()),
        );
        (texts, numbers, times, lists).prop_map(
            |(
                (queue, worker, args, meta),
                (id, attempt, max_attempts, priority),
                (inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at),
                (tags, errors, state),
            )| Job {
                id,
                state,
                queue,
                worker,
                args,
                meta,
                tags,
                attempt,
                max_attempts,
                priority,
                errors,
                inserted_at,
                scheduled_at,
                attempted_at,
                completed_at,
                cancelled_at,
                discarded_at,
            },
        )
    }

    /// Bytes a decoder meets: anything, or a current version byte followed by anything, or a
    /// real record with a few bytes changed.
    fn record_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            prop::collection::vec(any::<u8>(), 0..256).prop_map(|mut rest| {
                rest.insert(0, FORMAT_VERSION as u8);
                rest
            }),
            (job(), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6))
                .prop_map(|(job, changes)| {
                    let mut bytes = encode(&job);
                    for (at, value) in changes {
                        let i = at.index(bytes.len());
                        bytes[i] = value;
                    }
                    bytes
                }),
        ]
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_returns_a_job_or_a_corruption_error(bytes in record_bytes()) {
            match decode(7, &bytes) {
                Ok(job) => prop_assert_eq!(decode(7, &encode(&job)).unwrap(), job),
                Err(Error::Corrupted { detail, .. }) => prop_assert!(detail.starts_with("job 7:")),
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
        }

        #[test]
        fn every_job_round_trips(job in job()) {
            let bytes = encode(&job);
            prop_assert_eq!(bytes[0], FORMAT_VERSION as u8);
            prop_assert_eq!(decode(job.id, &bytes).unwrap(), job.clone());
            // Every cut-off record is refused, never misread.
            for cut in 0..bytes.len() {
                prop_assert!(decode(job.id, &bytes[..cut]).is_err(), "cut at {}", cut);
            }
        }
    }
}
