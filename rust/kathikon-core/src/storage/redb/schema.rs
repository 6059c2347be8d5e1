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
//! | `failed`    | `(queue, state, id)`                     | retryable/cancelled/discarded (listing) |
//!
//! `failed` (format 3) lets a listing of one queue's failed jobs read them alone: those
//! states are entered off the happy path (a failure, a cancel, a discard), so the entry costs
//! a completed job nothing. Jobs of the other states are listed from the tables above.
//! `quarantine` holds records that no longer decode (damaged on disk), moved aside under their
//! id with the time and the reason, so the rest of the store keeps working and an operator can
//! see what was lost: `(quarantined_at, reason, the record's bytes)`.
//!
//! A record is one version byte followed by its body. Version 4 (written since format 5): a
//! CRC-32C of the postcard encoding of [`Job`] (4 bytes, little-endian), then that encoding, so
//! damage inside a record that still decodes (a flipped bit in a timestamp, zeros in a long
//! args string) is detected on every read. Older versions encode a [`Job`] without its last
//! fields and still read, as jobs without them: version 3 (format 4) lacks `batch`, version 2
//! (formats 2 and 3) also `result`, and version 1 (format 1) is version 2's encoding without
//! the CRC. Postcard encodes `None` as one zero byte, so an old body followed by a zero per
//! missing field is the current encoding of the same job. A reader refuses a version byte
//! newer than its own, so an old Kathikon never misreads a newer file, and a decoded record
//! must carry the id it is stored under.

use redb::TableDefinition;

use crate::error::{Error, Result};
use crate::job::Job;
use crate::state::JobState;

/// Version of the record encoding and table layout this build writes. Older stores are
/// upgraded at open: format 1 gets the `quarantine` table, formats 1 and 2 the `failed`
/// index, built from the records; old records stay as they are (read as jobs without a
/// result or batch) and are rewritten as version 4 when they next change. Formats 4 and 5
/// are format 3 with version 3 and 4 records, which an older build must not meet (it would
/// quarantine them as damaged): it refuses the store as too new instead. Format 5 also
/// stores batches as entries (`EntryKind::Batch`).
pub const FORMAT_VERSION: u64 = 5;

/// Record version 1: postcard alone, of a job without `result`.
const RECORD_V1: u8 = 1;
/// Record version 2: CRC-32C, then postcard, of a job without `result`.
const RECORD_V2: u8 = 2;
/// Record version 3: CRC-32C, then postcard, of a job without `batch`.
const RECORD_V3: u8 = 3;
/// Record version 4: CRC-32C, then postcard.
const RECORD_V4: u8 = 4;

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
/// Records that no longer decode, by id: `(quarantined_at, reason, record bytes)`.
pub(crate) const QUARANTINE: TableDefinition<u64, (i64, &str, &[u8])> =
    TableDefinition::new("quarantine");

/// Jobs in a failure state by `(queue, state as u8, id)`: retryable, cancelled and
/// discarded jobs only (format 3).
pub(crate) const FAILED: TableDefinition<(&str, u8, u64), ()> = TableDefinition::new("failed");

/// Whether `state`'s jobs have an entry in `failed`.
pub(crate) fn in_failed(state: JobState) -> bool {
    matches!(state, JobState::Retryable | JobState::Cancelled | JobState::Discarded)
}

/// Inserts that came with a request id (over the socket), by `(made at, nonce)`: the first
/// job id they stored and how many, so a resent insert is answered with the same jobs. Added
/// without a format change: a store without it gets it at its first such insert, and an
/// older Kathikon never opens it.
pub(crate) const REQUESTS: TableDefinition<(i64, u64), (u64, u64)> =
    TableDefinition::new("requests");

// `entries` and `entry_expiry` (small records by kind and name: unique keys, cron slots, queue
// settings) are defined in `entries.rs`, added without a format change as `requests` was.

pub(crate) const META_FORMAT: &str = "format_version";
pub(crate) const META_NEXT_ID: &str = "next_id";
/// A random id given to the store when it first gets a write-ahead log; each log record
/// carries it, so a log found beside another store is ignored.
pub(crate) const META_STORE_ID: &str = "store_id";
/// The last write-ahead log record that redb's durable state includes.
pub(crate) const META_WAL_SEQ: &str = "wal_seq";
/// 1 while the store is open (set durably once its log exists, before any record is
/// appended), 0 after a clean close (set in the close's checkpoint, before the log is
/// deleted). At 1, records past `wal_seq` may exist only in the log, so a missing log is
/// damage, not an empty one. Stores written before this key existed lack it: their open
/// cannot tell, and a missing log reads as empty, as it always did.
pub(crate) const META_LOG_OPEN: &str = "log_open";

/// Encode a record (version 4).
pub(crate) fn encode(job: &Job) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(job, &mut out);
    out
}

/// Append the record (version 4) of `job` to `out`.
pub(crate) fn encode_into(job: &Job, out: &mut Vec<u8>) {
    // Room made up front so encoding never reallocates (it showed in profiles as growth copies).
    let errors: usize = job.errors.iter().map(|e| e.error.len() + 16).sum();
    let tags: usize = job.tags.iter().map(|t| t.len() + 2).sum();
    let result =
        job.result.as_ref().map_or(0, String::len) + job.batch.as_ref().map_or(0, String::len);
    let size = 100
        + job.queue.len()
        + job.worker.len()
        + job.args.len()
        + job.meta.len()
        + tags
        + errors
        + result;
    out.reserve(size);
    let start = out.len();
    out.push(RECORD_V4);
    out.extend_from_slice(&[0; 4]);
    // Serialising a plain struct into a Vec cannot fail. `to_extend` takes its Vec by value
    // (`&mut Vec` is not `Extend`), so it is lent and put back.
    *out = postcard::to_extend(job, std::mem::take(out)).expect("postcard encodes a Job");
    let body = start + 5;
    let crc = crc32c::crc32c(&out[body..]);
    out[start + 1..body].copy_from_slice(&crc.to_le_bytes());
}

/// Decode a record, naming the job id in any error (in its words and as its `job`).
pub(crate) fn decode(id: u64, bytes: &[u8]) -> Result<Job> {
    let damaged =
        |detail: String| Error::Corrupted { path: "<store>".into(), detail, job: Some(id) };
    // How many of the job's last fields (`result`, `batch`) the version's encoding lacks.
    let (body, missing) = match bytes.first() {
        Some(&RECORD_V1) => (&bytes[1..], 2),
        Some(&version @ (RECORD_V2 | RECORD_V3 | RECORD_V4)) => {
            let Some((stored, body)) = bytes[1..].split_first_chunk::<4>() else {
                return Err(damaged(format!("job {id}: record cut short")));
            };
            let (stored, actual) = (u32::from_le_bytes(*stored), crc32c::crc32c(body));
            if stored != actual {
                return Err(damaged(format!(
                    "job {id}: record checksum mismatch (stored {stored:08x}, computed \
                     {actual:08x}): its bytes changed on disk"
                )));
            }
            (body, usize::from(RECORD_V4 - version))
        }
        Some(&v) => return Err(damaged(format!("job {id}: unknown record version {v}"))),
        None => return Err(damaged(format!("job {id}: empty record"))),
    };
    // The whole body must be the job: a version 4 record read as version 3 (its version byte
    // damaged) would otherwise decode, with a byte left over.
    let exactly = |bytes: &[u8]| match postcard::take_from_bytes::<Job>(bytes) {
        Ok((job, [])) => Ok(job),
        Ok((_, rest)) => Err(format!("{} bytes left over", rest.len())),
        Err(e) => Err(e.to_string()),
    };
    let decoded = if missing > 0 {
        // The body of a job without its last fields, then the one zero byte of each `None`.
        let mut whole = Vec::with_capacity(body.len() + missing);
        whole.extend_from_slice(body);
        whole.resize(body.len() + missing, 0);
        exactly(&whole)
    } else {
        exactly(body)
    };
    let job = decoded.map_err(|e| damaged(format!("job {id}: record does not decode: {e}")))?;
    if job.id != id {
        return Err(damaged(format!("job {id}: the record stored under it is job {}'s", job.id)));
    }
    Ok(job)
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
            unique: None,
            batch: None,
        }
        .into_job(5, 10);
        let bytes = encode(&job);
        assert_eq!(decode(5, &bytes).unwrap(), job);
        let mut newer = bytes.clone();
        newer[0] = 200;
        assert!(decode(5, &newer).unwrap_err().to_string().contains("unknown record version 200"));
        assert!(decode(5, &bytes[..bytes.len() / 2]).is_err());
        assert!(decode(5, &[]).is_err());
        assert!(decode(5, &[RECORD_V4, 1, 2]).unwrap_err().to_string().contains("cut short"));
        // Stored under another id: refused, naming both.
        let err = decode(6, &bytes).unwrap_err().to_string();
        assert!(err.contains("job 6: the record stored under it is job 5's"), "{err}");
    }

    /// The encoding of `job` as a build before `batch` wrote it: postcard without the last
    /// field (`None`'s one zero byte), which `job` must not have.
    fn body_without_batch(job: &Job) -> Vec<u8> {
        assert_eq!(job.batch, None, "an old record has no batch");
        let mut body = postcard::to_allocvec(job).unwrap();
        assert_eq!(body.pop(), Some(0));
        body
    }

    /// The encoding of `job` as a build before `result` wrote it: without its last two fields.
    fn body_without_result(job: &Job) -> Vec<u8> {
        assert_eq!(job.result, None, "an old record has no result");
        let mut body = body_without_batch(job);
        assert_eq!(body.pop(), Some(0));
        body
    }

    /// A record of `version` with a CRC: the version byte, the CRC-32C of `body`, `body`.
    fn checked(version: u8, body: Vec<u8>) -> Vec<u8> {
        let mut out = vec![version];
        out.extend(crc32c::crc32c(&body).to_le_bytes());
        out.extend(body);
        out
    }

    /// The version 3 encoding, as format 4 stores hold it.
    pub(super) fn encode_v3(job: &Job) -> Vec<u8> {
        checked(RECORD_V3, body_without_batch(job))
    }

    /// The version 1 encoding, as format 1 stores hold it.
    pub(super) fn encode_v1(job: &Job) -> Vec<u8> {
        let mut out = vec![RECORD_V1];
        out.extend(body_without_result(job));
        out
    }

    /// The version 2 encoding, as format 2 and 3 stores hold it.
    pub(super) fn encode_v2(job: &Job) -> Vec<u8> {
        checked(RECORD_V2, body_without_result(job))
    }

    /// Job 9 of queue `q` with these args, inserted at time 10.
    fn job_with_args(args: &str) -> Job {
        NewJob {
            queue: "q".into(),
            worker: "w".into(),
            args: args.into(),
            meta: "{}".into(),
            tags: vec![],
            max_attempts: 3,
            priority: 4,
            scheduled_at: None,
            unique: None,
            batch: None,
        }
        .into_job(9, 10)
    }

    #[test]
    fn version_1_to_3_records_are_still_read_as_jobs_without_their_later_fields() {
        let job = job_with_args("[1]");
        assert_eq!(decode(9, &encode_v1(&job)).unwrap(), job);
        assert_eq!(decode(9, &encode_v2(&job)).unwrap(), job);
        assert_eq!(encode(&job)[0], RECORD_V4);
        let mut with_result = job;
        with_result.result = Some(r#"{"ok":true}"#.into());
        assert_eq!(decode(9, &encode_v3(&with_result)).unwrap(), with_result);
        assert_eq!(decode(9, &encode(&with_result)).unwrap(), with_result);
        let mut in_batch = with_result;
        in_batch.batch = Some("album-3".into());
        assert_eq!(decode(9, &encode(&in_batch)).unwrap(), in_batch);
    }

    #[test]
    fn a_flipped_bit_in_a_long_args_string_is_caught() {
        // The damage a page checksum would catch but postcard cannot: the record still decodes.
        let mut job = job_with_args(&format!("\"{}\"", "z".repeat(1000)));
        job.attempted_at = Some(123_456);
        let bytes = encode(&job);
        let mut v1 = encode_v1(&job);
        let at = v1.len() / 2;
        v1[at] ^= 0x01;
        let misread = decode(9, &v1).unwrap();
        assert_ne!(misread, job, "version 1 records cannot tell");
        let mut v2 = bytes.clone();
        v2[bytes.len() / 2] ^= 0x01;
        let err = decode(9, &v2).unwrap_err().to_string();
        assert!(err.contains("job 9: record checksum mismatch"), "{err}");
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
            any::<Option<String>>(),
            any::<Option<String>>(),
        );
        (texts, numbers, times, lists).prop_map(
            |(
                (queue, worker, args, meta),
                (id, attempt, max_attempts, priority),
                (inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at),
                (tags, errors, state, result, batch),
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
                result,
                batch,
            },
        )
    }

    /// Bytes a decoder meets: anything, or a current version byte followed by anything, or a
    /// real record with a few bytes changed.
    fn record_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            prop::collection::vec(any::<u8>(), 0..256).prop_map(|mut rest| {
                rest.insert(0, RECORD_V4);
                rest
            }),
            prop::collection::vec(any::<u8>(), 0..256).prop_map(|mut rest| {
                rest.insert(0, RECORD_V3);
                rest
            }),
            prop::collection::vec(any::<u8>(), 0..256).prop_map(|mut rest| {
                rest.insert(0, RECORD_V2);
                rest
            }),
            prop::collection::vec(any::<u8>(), 0..256).prop_map(|mut rest| {
                rest.insert(0, RECORD_V1);
                rest
            }),
            // A version 1 record with a few bytes changed (these may decode, changed).
            (job(), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6))
                .prop_map(|(mut job, changes)| {
                    job.result = None;
                    job.batch = None;
                    let mut bytes = super::tests::encode_v1(&job);
                    for (at, value) in changes {
                        let i = at.index(bytes.len());
                        bytes[i] = value;
                    }
                    bytes
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
            prop_assert_eq!(bytes[0], RECORD_V4);
            prop_assert_eq!(decode(job.id, &bytes).unwrap(), job.clone());
            let v3 = Job { batch: None, ..job.clone() };
            prop_assert_eq!(decode(job.id, &super::tests::encode_v3(&v3)).unwrap(), v3.clone());
            let old = Job { result: None, ..v3 };
            prop_assert_eq!(decode(job.id, &super::tests::encode_v1(&old)).unwrap(), old.clone());
            prop_assert_eq!(decode(job.id, &super::tests::encode_v2(&old)).unwrap(), old);
            // Every single flipped bit is caught (CRC-32C detects every 1-, 2- and 3-bit error
            // in records far longer than these).
            let mut flipped = bytes.clone();
            for bit in 0..bytes.len() * 8 {
                flipped[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(decode(job.id, &flipped).is_err(), "bit {} flipped", bit);
                flipped[bit / 8] ^= 1 << (bit % 8);
            }
            // Every cut-off record is refused, never misread.
            for cut in 0..bytes.len() {
                prop_assert!(decode(job.id, &bytes[..cut]).is_err(), "cut at {}", cut);
            }
        }
    }
}
