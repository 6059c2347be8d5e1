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

use std::ops::Bound;

use redb::{CursorError, Key, Table, Value};

use crate::error::{Error, Result};
use crate::job::{Job, JobId};

use super::schema::encode_into;

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

    /// Forget every row (all filed), keeping the buffers.
    fn clear(&mut self) {
        self.rows.clear();
        self.records.clear();
        self.queues.clear();
        self.filed = 0;
    }
}

/// Insert `entries`, whose keys ascend, into `table`, where none of them is yet. Each run of
/// keys that falls into one gap between the table's keys goes in through one cursor; a key the
/// cursor refuses (it is not below the entry after the gap) starts a new run at its own place.
/// A key the table holds already is overwritten, as `insert` would, so that a broken promise
/// of order or novelty costs speed, not a job.
fn insert_ascending<'e, K, V>(
    table: &mut Table<'_, K, V>,
    entries: impl Iterator<Item = (K::SelfType<'e>, V::SelfType<'e>)>,
) -> Result<()>
where
    K: Key + 'static,
    V: Value + 'static,
{
    let mut entries = entries.peekable();
    while let Some((key, _)) = entries.peek() {
        let mut cursor = table.lower_bound_mut(Bound::Included(key))?;
        let mut placed = 0_usize;
        while let Some((key, value)) = entries.peek() {
            match cursor.insert_before(key, value) {
                Ok(()) => {
                    placed += 1;
                    entries.next();
                }
                Err(CursorError::UnorderedKey) => break,
                Err(CursorError::Storage(e)) => return Err(e.into()),
                Err(e) => return Err(Error::Storage(e.to_string())),
            }
        }
        cursor.close()?;
        if placed == 0 {
            // Refused right after the seek: the key is in the table already.
            let (key, value) = entries.next().expect("peeked");
            table.insert(key, value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use redb::backends::InMemoryBackend;
    use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

    use super::insert_ascending;

    const TABLE: TableDefinition<u64, u64> = TableDefinition::new("t");

    /// The table after `insert_ascending` of `new` (key → key + 1000) into one holding
    /// `existing` (key → 0), against a `BTreeMap` doing the same with plain inserts.
    fn check(existing: &[u64], new: &[u64]) {
        let db = Database::builder().create_with_backend(InMemoryBackend::new()).unwrap();
        let txn = db.begin_write().unwrap();
        let mut model = BTreeMap::new();
        {
            let mut table = txn.open_table(TABLE).unwrap();
            for &k in existing {
                table.insert(k, 0).unwrap();
                model.insert(k, 0);
            }
            insert_ascending(&mut table, new.iter().map(|&k| (k, k + 1000))).unwrap();
        }
        txn.commit().unwrap();
        for &k in new {
            model.insert(k, k + 1000);
        }
        let read = db.begin_read().unwrap();
        let table = read.open_table(TABLE).unwrap();
        let stored: BTreeMap<u64, u64> = table
            .iter()
            .unwrap()
            .map(|e| e.map(|(k, v)| (k.value(), v.value())).unwrap())
            .collect();
        assert_eq!(stored, model, "existing {existing:?}, new {new:?}");
    }

    #[test]
    fn appends_fill_an_empty_table_and_extend_a_full_one() {
        check(&[], &(1..=500).collect::<Vec<_>>());
        check(&(1..=500).collect::<Vec<_>>(), &(501..=1000).collect::<Vec<_>>());
    }

    #[test]
    fn keys_between_existing_ones_go_in_their_gaps() {
        let existing: Vec<u64> = (0..400).map(|k| k * 10).collect();
        check(&existing, &(0..400).map(|k| k * 10 + 5).collect::<Vec<_>>());
        check(&[100], &[1, 2, 3, 150, 151]);
    }

    #[test]
    fn a_key_already_stored_is_overwritten_not_looped_on() {
        check(&[1, 2, 3], &[2]);
        check(&[1, 2, 3], &[0, 1, 2, 3, 4]);
    }

    #[test]
    fn keys_out_of_order_or_repeated_still_all_go_in() {
        check(&[5], &[9, 3, 7, 7, 1]);
    }

    proptest! {
        #[test]
        fn matches_plain_inserts(
            existing in proptest::collection::vec(0_u64..3000, 0..600),
            mut new in proptest::collection::vec(0_u64..3000, 0..600),
            sorted in any::<bool>(),
        ) {
            // Mostly as the filing calls it (ascending), sometimes in any order.
            if sorted {
                new.sort_unstable();
                new.dedup();
            }
            check(&existing, &new);
        }
    }
}
