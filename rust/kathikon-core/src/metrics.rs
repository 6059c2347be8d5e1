//! Metrics history: per queue and per minute of the engine clock, how many attempts ended
//! completed, failed (to be retried), discarded or cancelled, and a histogram of attempt
//! durations (from `attempted_at` to the ack) from which percentiles are read.
//!
//! The verbs record each outcome into the [`Rollup`] the writer keeps in memory (one map
//! lookup and one push into a reused buffer per job: no allocation, lock or write per ack).
//! The metrics plugin (`plugins::metrics`) writes each (queue, minute) as one
//! [`EntryKind::Metrics`] entry once its minute is over, when a reader asks
//! ([`crate::Jobs::metrics`]) and when the engine closes; each entry expires [`KEEP`] after its
//! minute, through the entries' expiry index. A crash loses what was not written yet: at most
//! the counts since the last write.

use std::collections::BTreeMap;

use foldhash::HashMap;

use crate::clock::{Micros, SECOND};
use crate::error::Result;
use crate::storage::{Entry, EntryKind, WriteTxn};

/// One minute of the engine clock.
pub const MINUTE: Micros = 60 * SECOND;

/// How long a minute's entry is kept after the minute.
pub const KEEP: Micros = 24 * 60 * MINUTE;

/// Histogram buckets: exact below 8 µs, then 8 per doubling (each at most 12.5% wide), up to
/// about 50 days; longer attempts count in the last.
const BUCKETS: usize = 320;

/// How an attempt (or a job) ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Completed = 0,
    /// The attempt failed and the job will be retried.
    Failed = 1,
    Discarded = 2,
    Cancelled = 3,
}

impl Ended {
    /// How an acked attempt counts, by the state the ack left its job in (`None`: a snooze or
    /// an interrupt, which hand the job back without ending anything). Every store's ack
    /// counts by this rule.
    pub(crate) fn after_ack(state: crate::state::JobState) -> Option<Ended> {
        use crate::state::JobState;
        match state {
            JobState::Completed => Some(Ended::Completed),
            JobState::Retryable => Some(Ended::Failed),
            JobState::Discarded => Some(Ended::Discarded),
            JobState::Cancelled => Some(Ended::Cancelled),
            _ => None,
        }
    }
}

/// One queue's minute, as [`crate::Jobs::metrics`] returns it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetricPoint {
    /// The queue.
    pub queue: String,
    /// The minute's start, in µs since the Unix epoch on the engine clock.
    pub minute: Micros,
    /// Jobs completed.
    pub completed: u64,
    /// Attempts that failed with a retry left.
    pub failed: u64,
    /// Jobs discarded (attempts exhausted, or discarded by their worker).
    pub discarded: u64,
    /// Jobs cancelled (by a caller or by their worker).
    pub cancelled: u64,
    /// Median attempt duration in µs (within 6.25% of the true value), `None` without an
    /// attempt that ended in the minute; likewise `p95` and `p99`.
    pub p50: Option<Micros>,
    /// 95th percentile of attempt durations, in µs.
    pub p95: Option<Micros>,
    /// 99th percentile of attempt durations, in µs.
    pub p99: Option<Micros>,
}

/// Counts and histogram of one (queue, minute).
#[derive(Clone)]
pub(crate) struct Record {
    counts: [u64; 4],
    histogram: Box<[u32; BUCKETS]>,
}

impl Record {
    pub(crate) fn new() -> Record {
        Record { counts: [0; 4], histogram: Box::new([0; BUCKETS]) }
    }

    /// Count one outcome, and its attempt's duration when one ended.
    pub(crate) fn count(&mut self, ended: Ended, duration: Option<Micros>) {
        self.counts[ended as usize] += 1;
        if let Some(d) = duration {
            let n = &mut self.histogram[bucket_of(d)];
            *n = n.saturating_add(1);
        }
    }

    pub(crate) fn add(&mut self, other: &Record) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        for (a, b) in self.histogram.iter_mut().zip(other.histogram.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// `[version 1][4 × u64 counts][u16 n][n × (u16 bucket, u32 count)]`, little-endian.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let used: Vec<(usize, u32)> =
            self.histogram.iter().copied().enumerate().filter(|(_, n)| *n > 0).collect();
        let mut out = Vec::with_capacity(35 + used.len() * 6);
        out.push(1);
        for count in self.counts {
            out.extend_from_slice(&count.to_le_bytes());
        }
        out.extend_from_slice(&(used.len() as u16).to_le_bytes());
        for (bucket, n) in used {
            out.extend_from_slice(&(bucket as u16).to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        out
    }

    /// `None` for bytes this version did not write.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Record> {
        let (&version, rest) = bytes.split_first()?;
        if version != 1 || rest.len() < 34 {
            return None;
        }
        let mut record = Record::new();
        for (i, count) in record.counts.iter_mut().enumerate() {
            *count = u64::from_le_bytes(rest[i * 8..i * 8 + 8].try_into().ok()?);
        }
        let n = u16::from_le_bytes(rest[32..34].try_into().ok()?) as usize;
        let pairs = rest.get(34..34 + n * 6)?;
        for pair in pairs.chunks_exact(6) {
            let bucket = u16::from_le_bytes([pair[0], pair[1]]) as usize;
            *record.histogram.get_mut(bucket)? = u32::from_le_bytes(pair[2..6].try_into().ok()?);
        }
        Some(record)
    }

    /// The `p`-th percentile (nearest rank) of the recorded durations.
    fn percentile(&self, p: f64) -> Option<Micros> {
        let total: u64 = self.histogram.iter().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((p * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, &n) in self.histogram.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(bucket_value(bucket));
            }
        }
        None
    }
}

/// The bucket a duration of `micros` counts in.
fn bucket_of(micros: Micros) -> usize {
    let d = micros.max(0) as u64;
    if d < 8 {
        return d as usize;
    }
    let octave = 63 - d.leading_zeros() as usize;
    let sub = ((d >> (octave - 3)) & 7) as usize;
    (8 + (octave - 3) * 8 + sub).min(BUCKETS - 1)
}

/// The middle of `bucket`'s range.
fn bucket_value(bucket: usize) -> Micros {
    if bucket < 8 {
        return bucket as Micros;
    }
    let (octave, sub) = ((bucket - 8) / 8 + 3, (bucket - 8) % 8);
    let width = 1i64 << (octave - 3);
    (8 + sub as i64) * width + width / 2
}

/// The start of the minute `at` falls in.
pub fn minute_of(at: Micros) -> Micros {
    at.div_euclid(MINUTE) * MINUTE
}

/// An entry's name: the minute, zero-padded so names sort by time, then the queue.
pub(crate) fn entry_name(minute: Micros, queue: &str) -> String {
    format!("{minute:020}/{queue}")
}

fn parse_name(name: &str) -> Option<(Micros, &str)> {
    let (minute, queue) = name.split_once('/')?;
    Some((minute.parse().ok()?, queue))
}

/// The stored minutes of `entries` at or after `since`'s minute (every one when `None`), of
/// `queue` (every one when `None`), not expired as of `now`, oldest first.
pub fn points(
    entries: Vec<Entry>,
    since: Option<Micros>,
    queue: Option<&str>,
    now: Micros,
) -> Vec<MetricPoint> {
    let since = since.map(minute_of);
    let mut out: Vec<MetricPoint> = entries
        .into_iter()
        .filter(|e| e.expires.is_none_or(|at| at > now))
        .filter_map(|e| {
            let (minute, name) = parse_name(&e.name)?;
            if since.is_some_and(|s| minute < s) || queue.is_some_and(|q| q != name) {
                return None;
            }
            let record = Record::decode(&e.value)?;
            let [completed, failed, discarded, cancelled] = record.counts;
            Some(MetricPoint {
                queue: name.to_string(),
                minute,
                completed,
                failed,
                discarded,
                cancelled,
                p50: record.percentile(0.50),
                p95: record.percentile(0.95),
                p99: record.percentile(0.99),
            })
        })
        .collect();
    out.sort_by(|a, b| (a.minute, &a.queue).cmp(&(b.minute, &b.queue)));
    out
}

/// An outcome the batch recorded, counted once the batch commits.
struct Pending {
    queue: u32,
    minute: Micros,
    ended: Ended,
    duration: Option<Micros>,
}

/// A minute held in memory.
struct Held {
    record: Record,
    /// `record` includes what the store held for this minute (read at this process's first
    /// write of it), so writing it replaces the stored entry without losing counts.
    loaded: bool,
    /// Changed since it was last written.
    dirty: bool,
}

/// The writer's in-memory counts: those of the batch in progress (until it commits) and those
/// of the minutes not yet written or still running.
#[derive(Default)]
pub(crate) struct Rollup {
    /// Queue name → index into `names`, so an outcome is recorded without allocating.
    queues: HashMap<String, u32>,
    names: Vec<String>,
    /// This batch's outcomes; the buffer is reused from batch to batch.
    batch: Vec<Pending>,
    /// `(minute, queue index)` → its counts, oldest first.
    minutes: BTreeMap<(Micros, u32), Held>,
    /// What this batch's flush wrote: `(key, record written, minute over)`.
    written: Vec<((Micros, u32), Record, bool)>,
}

impl Rollup {
    /// Count that a job of `queue` ended as `ended` at `at`, its attempt having taken
    /// `duration` (`None` when no attempt ended: a caller cancelled it, or its worker was lost).
    pub(crate) fn record(
        &mut self,
        queue: &str,
        ended: Ended,
        at: Micros,
        duration: Option<Micros>,
    ) {
        let queue = if let Some(&index) = self.queues.get(queue) {
            index
        } else {
            let index = self.names.len() as u32;
            self.names.push(queue.to_string());
            self.queues.insert(queue.to_string(), index);
            index
        };
        self.batch.push(Pending { queue, minute: minute_of(at), ended, duration });
    }

    /// The batch committed: what its flush wrote is stored, and its outcomes count.
    pub(crate) fn commit(&mut self) {
        for (key, record, over) in self.written.drain(..) {
            if over {
                self.minutes.remove(&key);
            } else if let Some(held) = self.minutes.get_mut(&key) {
                (held.record, held.loaded, held.dirty) = (record, true, false);
            }
        }
        for pending in self.batch.drain(..) {
            let held = self
                .minutes
                .entry((pending.minute, pending.queue))
                .or_insert_with(|| Held { record: Record::new(), loaded: false, dirty: false });
            held.record.count(pending.ended, pending.duration);
            held.dirty = true;
        }
    }

    /// The batch did not commit: nothing it recorded or wrote counts.
    pub(crate) fn abort(&mut self) {
        self.batch.clear();
        self.written.clear();
    }

    /// The earliest minute held in memory.
    pub(crate) fn earliest(&self) -> Option<Micros> {
        self.minutes.keys().next().map(|(minute, _)| *minute)
    }

    /// Write every minute over by `now`, and with `all` the running one too, as entries
    /// expiring [`KEEP`] after their minute. Committed counts only: this batch's outcomes are
    /// written by a later flush.
    pub(crate) fn flush(&mut self, txn: &mut dyn WriteTxn, now: Micros, all: bool) -> Result<()> {
        let current = minute_of(now);
        for (&(minute, queue), held) in &self.minutes {
            let over = minute < current;
            if !(over || all && held.dirty) {
                continue;
            }
            if !held.dirty {
                self.written.push(((minute, queue), Record::new(), true));
                continue;
            }
            let name = entry_name(minute, &self.names[queue as usize]);
            let mut record = held.record.clone();
            if !held.loaded {
                if let Some(stored) = txn.entry(EntryKind::Metrics, &name)? {
                    if let Some(stored) = Record::decode(&stored.value) {
                        record.add(&stored);
                    }
                }
            }
            let expires = minute + MINUTE + KEEP;
            txn.put_entry(EntryKind::Metrics, &name, &record.encode(), Some(expires))?;
            self.written.push(((minute, queue), record, over));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_read_back_their_values_within_a_sixteenth() {
        for micros in [0, 1, 7, 8, 9, 15, 16, 100, 1_000, 12_345, 1_000_000, 3_600_000_000] {
            let value = bucket_value(bucket_of(micros));
            let error = (value - micros).abs() as f64;
            assert!(error <= micros as f64 / 16.0 + 0.5, "{micros} read back as {value}");
        }
        assert_eq!(bucket_of(i64::MAX), BUCKETS - 1);
    }

    /// Stored metrics entries, by name.
    fn stored(store: &crate::storage::RedbStore) -> Vec<(String, Record)> {
        use crate::storage::Store;
        let mut out = Vec::new();
        store
            .read(&mut |txn| {
                out = txn.entries(EntryKind::Metrics)?;
                Ok(())
            })
            .unwrap();
        out.into_iter().map(|e| (e.name, Record::decode(&e.value).unwrap())).collect()
    }

    fn flush(store: &crate::storage::RedbStore, rollup: &mut Rollup, now: Micros, all: bool) {
        use crate::storage::Store;
        store.write(&mut |txn| rollup.flush(txn, now, all)).unwrap();
        rollup.commit();
    }

    /// Acks of the running minute write nothing until it is over (or a reader asks); then one
    /// entry holds them all. A batch that did not commit counts nothing.
    #[test]
    fn a_minute_is_written_once_when_over_and_an_aborted_batch_counts_nothing() {
        let store = crate::storage::RedbStore::open(None, false).unwrap();
        let mut rollup = Rollup::default();
        let minute = 1_000 * MINUTE;
        for i in 0..1_000 {
            rollup.record("q", Ended::Completed, minute + i, Some(5));
            rollup.commit();
            flush(&store, &mut rollup, minute + i, false);
        }
        rollup.record("q", Ended::Failed, minute + 2_000, Some(5));
        rollup.abort();
        assert!(stored(&store).is_empty(), "nothing written while the minute runs");
        flush(&store, &mut rollup, minute + MINUTE, false);
        let entries = stored(&store);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, entry_name(minute, "q"));
        assert_eq!(entries[0].1.counts, [1_000, 0, 0, 0]);
        assert_eq!(rollup.earliest(), None, "a written minute that is over leaves memory");
    }

    #[test]
    fn records_round_trip_and_refuse_foreign_bytes() {
        let mut record = Record::new();
        record.counts = [1, 2, 3, 4];
        record.histogram[bucket_of(1_000)] = 5;
        let back = Record::decode(&record.encode()).unwrap();
        assert_eq!(back.counts, [1, 2, 3, 4]);
        assert_eq!(back.percentile(0.5), Some(bucket_value(bucket_of(1_000))));
        assert!(Record::decode(&[2]).is_none());
        assert!(Record::decode(&record.encode()[..40]).is_none());
    }
}
