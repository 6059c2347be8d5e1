//! New jobs that are logged but not yet filed in redb's tables.
//!
//! With a write-ahead log, an insert is durable once its record is in the log. Filing the
//! record in redb (an insert into `jobs` and one into `available`) was most of what a new job
//! cost the engine: ~10k of its ~18k instructions (callgrind, `examples/insert_all.rs`; 3.4k
//! since the filing goes through cursors, below). So a logged batch only encodes, counts and
//! logs a new job, and leaves it here; it is filed later, by the writer thread when it has
//! nothing else to do (on the other core, while the caller goes on), or at once when anything
//! in the transaction needs it: a read of that id, a scan, a commit. Nothing outside the open
//! transaction can tell: readers see redb's last commit, and every commit files everything
//! first.
//!
//! The records of new available and scheduled jobs wait here, and the `available` entries of
//! the available ones: the transaction reads that index only to delete keys of jobs it read
//! first, so an unfiled job is never missed by an index lookup. A scheduled job's `due` entry
//! is written at once: the writer reads `due` after every batch (a due job is then read by id,
//! which files it first). Records are filed in id order even when a batch mixes both kinds:
//! filing the available jobs' records after the scheduled ones' made redb split leaves in the
//! middle, and the file took 178 bytes a job instead of 101 (`examples/filesize.rs`).

use redb::Table;

use crate::error::Result;
use crate::job::{Job, JobId};

use super::ordered::insert_ascending;
use super::schema::encode_into;

/// The most record bytes whose buffer a transaction hands on to the next (a checkpoint comes
/// every 1 MiB of log).
const KEEP_BYTES: usize = 4 * 1024 * 1024;

/// Unfiled jobs, in id order (ids are allocated in order, and only new jobs come here).
#[derive(Default)]
pub(super) struct Unfiled {
    rows: Vec<Row>,
    /// The rows' records, back to back: one buffer for the transaction's lifetime rather than
    /// an allocation per job (which the writer thread would then free).
    records: Vec<u8>,
    /// Queue names, which rows refer to by position.
    queues: Vec<String>,
    /// `rows[..filed]` are in the tables already.
    filed: usize,
}

struct Row {
    id: JobId,
    /// Whether it goes to the `available` index (else its index entry is written already).
    available: bool,
    queue: u32,
    priority: u8,
    scheduled_at: i64,
    /// Where its record is in `records`.
    start: usize,
    end: usize,
}

impl Unfiled {
    /// Encode `job` (new, with an id above every id here) and keep it for filing, with an
    /// `available` entry when `available`; returns its record.
    pub(super) fn push(&mut self, job: &Job, available: bool) -> &[u8] {
        debug_assert!(self.rows.last().is_none_or(|r| r.id < job.id), "ids out of order");
        // A run of jobs of one queue shares its name (a name may be kept twice: harmless).
        if self.queues.last() != Some(&job.queue) {
            self.queues.push(job.queue.clone());
        }
        let queue = self.queues.len() - 1;
        let start = self.records.len();
        encode_into(job, &mut self.records);
        let end = self.records.len();
        self.rows.push(Row {
            id: job.id,
            available,
            queue: queue as u32,
            priority: job.priority,
            scheduled_at: job.scheduled_at,
            start,
            end,
        });
        &self.records[start..end]
    }

    pub(super) fn is_empty(&self) -> bool {
        self.filed == self.rows.len()
    }

    /// Whether job `id` may be here (ids at or above the first unfiled one).
    pub(super) fn may_hold(&self, id: JobId) -> bool {
        self.rows.get(self.filed).is_some_and(|row| id >= row.id)
    }

    /// File up to `limit` jobs in `jobs` and `available`, oldest first; returns whether any
    /// are left.
    pub(super) fn file(
        &mut self,
        jobs: &mut Table<'_, u64, &'static [u8]>,
        available: &mut Table<'_, (&'static str, u8, i64, u64), ()>,
        limit: usize,
    ) -> Result<bool> {
        let end = self.rows.len().min(self.filed.saturating_add(limit));
        let chunk = &self.rows[self.filed..end];
        // One table, then the other, each through a cursor: redb packs a run of keys inserted
        // into one gap straight into leaves, where `insert` walks the tree for every key
        // (callgrind, `examples/insert_all.rs`: 3.4k instructions a job to file instead of
        // 10.3k). Ids ascend; the `available` keys do within a run of one queue and priority,
        // and are sorted when the chunk mixes runs.
        let records = chunk.iter().map(|row| (row.id, &self.records[row.start..row.end]));
        insert_ascending(jobs, records)?;
        let mut queued: Vec<_> = chunk
            .iter()
            .filter(|row| row.available)
            .map(|row| {
                let queue = self.queues[row.queue as usize].as_str();
                (queue, row.priority, row.scheduled_at, row.id)
            })
            .collect();
        if !queued.is_sorted() {
            queued.sort_unstable();
        }
        insert_ascending(available, queued.into_iter().map(|key| (key, ())))?;
        self.filed = end;
        if self.is_empty() {
            self.clear();
            return Ok(false);
        }
        Ok(true)
    }

    /// These buffers, emptied, for the next transaction (which would otherwise grow its own
    /// afresh), unless one transaction's new jobs made them larger than a few checkpoints
    /// normally need. Call only when every job is filed.
    pub(super) fn recycle(&mut self) -> Unfiled {
        debug_assert!(self.is_empty(), "unfiled jobs dropped");
        self.clear();
        if self.records.capacity() > KEEP_BYTES {
            return Unfiled::default();
        }
        std::mem::take(self)
    }

    /// Forget every row (all filed), keeping the buffers.
    fn clear(&mut self) {
        self.rows.clear();
        self.records.clear();
        self.queues.clear();
        self.filed = 0;
    }
}
