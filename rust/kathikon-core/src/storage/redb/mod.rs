//! The redb implementation of [`Store`]: one file per app, or redb's in-memory backend.
//!
//! - `open.rs`: opening a file or a backend, the format check and upgrade, errors at open;
//! - `holder.rs`: which process holds a store file (this one, or another found in `/proc`);
//! - `tables.rs`: the table layer ([`WriteTxn`] and [`ReadTxn`] on redb's tables: records,
//!   indexes, counts, quarantine);
//! - `replay.rs`: at open, the write-ahead log's records past the last checkpoint applied;
//! - `logged.rs`: batches through the write-ahead log (one transaction open across batches,
//!   published for readers, checkpointed), and the filing of new jobs put off to idle time;
//! - `wal/`: the log file itself; `schema.rs`: tables and record encoding; `unfiled.rs`,
//!   `rewrites.rs`, `index_changes.rs`, `ordered.rs`: writes a transaction keeps back.

mod entries;
mod holder;
mod index_changes;
mod logged;
mod open;
mod ordered;
mod replay;
mod requests;
mod rewrites;
mod schema;
mod tables;
mod unfiled;
mod wal;

pub(crate) use holder::canonical;
pub use schema::FORMAT_VERSION;
pub use wal::{LogFaults, LogTrigger};

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase};

use self::holder::Registered;
use self::logged::{file_unfiled, lock, LogState};
use self::schema::{AVAILABLE, COUNTS, JOBS, QUARANTINE};
use self::tables::{count_rows, ReadTables, WriteTables};
use super::{ReadTxn, Store, WriteTxn};
use crate::error::{commit_failed, Error, Result};
use crate::guard::guarded;
use crate::job::{Job, JobId};
use crate::state::JobState;

/// Decode one stored job record (a value of the `jobs` table) as the store does; a record that
/// does not decode is [`crate::Error::Corrupted`]. For the fuzz targets; not a stable API.
#[doc(hidden)]
pub fn decode_record(id: JobId, bytes: &[u8]) -> Result<Job> {
    schema::decode(id, bytes)
}

/// Encode a job record as the store does. For the fuzz targets; not a stable API.
#[doc(hidden)]
pub fn encode_record(job: &Job) -> Vec<u8> {
    schema::encode(job)
}

/// Jobs in a redb database.
pub struct RedbStore {
    /// The file's descriptor, closed in children made by `fork` (`None` in memory). Declared
    /// first so it is deregistered before the database closes the descriptor.
    not_in_children: Option<crate::fork::CloseInForkedChild>,
    db: Database,
    durability: redb::Durability,
    /// For error messages; `<memory>` for the in-memory backend.
    path: Arc<Path>,
    /// The write-ahead log, for a store in a file (synced per batch only with fsync); `None`
    /// in memory.
    wal: Option<Mutex<LogState>>,
    /// Whether the log's open transaction holds changes readers cannot see yet: a read
    /// commits it first.
    unpublished: AtomicBool,
    /// Whether new jobs wait for the writer's idle time to be filed in the open transaction's
    /// tables (`unfiled.rs`). May read true after they were filed or dropped; never false
    /// while some wait.
    background: AtomicBool,
    /// The file's place in this process's registry of open stores; `None` in memory.
    /// Declared last so it is released after the database is closed.
    _registered: Option<Registered>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RedbStore {
    fn damaged(&self, detail: String) -> Error {
        Error::Corrupted { path: self.path.to_path_buf(), detail, job: None }
    }

    /// Name this store's file in a decode error raised deep inside a transaction.
    fn with_path(&self, e: Error) -> Error {
        match e {
            Error::Corrupted { detail, job, .. } => {
                Error::Corrupted { path: self.path.to_path_buf(), detail, job }
            }
            other => other,
        }
    }
}

impl Store for RedbStore {
    fn read(&self, f: &mut dyn FnMut(&mut dyn ReadTxn) -> Result<()>) -> Result<()> {
        guarded(&self.path, || {
            if let Some(wal) =
                self.wal.as_ref().filter(|_| self.unpublished.load(Ordering::Acquire))
            {
                let mut state = lock(wal);
                if self.unpublished.load(Ordering::Acquire) {
                    self.publish(&mut state)?;
                }
            }
            let txn = self.db.begin_read()?;
            let mut tables = ReadTables {
                jobs: txn.open_table(JOBS)?,
                available: txn.open_table(AVAILABLE)?,
                counts: txn.open_table(COUNTS)?,
                quarantine: txn.open_table(QUARANTINE)?,
                path: &self.path,
                txn: &txn,
            };
            f(&mut tables)
        })
        .map_err(|e| self.with_path(e))
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn WriteTxn) -> Result<()>) -> Result<()> {
        guarded(&self.path, || self.write_unguarded(f)).map_err(|e| self.with_path(e))
    }

    fn counts(&self) -> Result<Vec<(String, JobState, u64)>> {
        // With batches logged but not yet committed to redb, read the counts in the open
        // transaction, pending deltas added, rather than publish it: a publish writes what the
        // writer keeps back and commits, ~2-3 µs a drained job for a thread polling `stats()`
        // every few milliseconds. Holding the log's lock, no batch is half applied: each one in
        // the transaction is in the log, acknowledged or about to be.
        if let Some(wal) = self.wal.as_ref().filter(|_| self.unpublished.load(Ordering::Acquire)) {
            let counted = guarded(&self.path, || {
                let state = lock(wal);
                match state.open.as_ref().filter(|_| !state.poisoned) {
                    Some(open) if self.unpublished.load(Ordering::Acquire) => open
                        .with_dependent(|_, tables| count_rows(&tables.counts, &tables.deltas))
                        .map(Some),
                    _ => Ok(None),
                }
            })
            .map_err(|e| self.with_path(e))?;
            if let Some(rows) = counted {
                return Ok(rows);
            }
        }
        super::read_counts(self)
    }

    fn checkpoint(&self) -> Result<()> {
        let Some(wal) = &self.wal else { return Ok(()) };
        guarded(&self.path, || self.checkpoint_locked(&mut lock(wal)))
            .map_err(|e| self.with_path(e))
    }

    fn has_background_work(&self) -> bool {
        self.background.load(Ordering::Acquire)
    }

    fn do_background_work(&self, limit: usize) -> Result<bool> {
        let Some(wal) = self.wal.as_ref().filter(|_| self.has_background_work()) else {
            return Ok(false);
        };
        guarded(&self.path, || {
            let mut state = lock(wal);
            let more = file_unfiled(&mut state, limit);
            self.background.store(matches!(more, Ok(true)), Ordering::Release);
            more
        })
        .map_err(|e| self.with_path(e))
    }
}

impl RedbStore {
    fn write_unguarded(&self, f: &mut dyn FnMut(&mut dyn WriteTxn) -> Result<()>) -> Result<()> {
        if let Some(wal) = &self.wal {
            return self.write_logged(&mut lock(wal), f);
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(self.durability)?;
        {
            let mut tables = WriteTables::open(&txn, &self.path, None)?;
            f(&mut tables)?;
            tables.flush_deferred()?;
        }
        txn.commit().map_err(|e| commit_failed(&self.path, &e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::tests::new_job;
    use crate::job::NewJob;

    fn insert(store: &RedbStore, queue: &str, n: u64) {
        store
            .write(&mut |txn| {
                let first = txn.allocate_ids(n)?;
                for id in first..first + n {
                    let job = NewJob { queue: queue.into(), ..new_job() };
                    txn.put(None, &job.into_job(id, 1))?;
                }
                Ok(())
            })
            .unwrap();
    }

    /// A commit of the open transaction (a read's, or a checkpoint's) files every new job, so
    /// it leaves no work for the writer's idle time: the writer is not woken for nothing.
    #[test]
    fn a_read_or_a_checkpoint_leaves_no_filing_for_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(Some(&dir.path().join("s.redb")), false).unwrap();
        for what in ["a read", "a checkpoint"] {
            store
                .write(&mut |txn| {
                    let first = txn.allocate_ids(200)?;
                    for id in first..first + 200 {
                        txn.put_new(&new_job().into_job(id, 1))?;
                    }
                    Ok(())
                })
                .unwrap();
            assert!(store.has_background_work(), "new jobs wait to be filed");
            if what == "a read" {
                store.read(&mut |_| Ok(())).unwrap();
            } else {
                store.checkpoint().unwrap();
            }
            assert!(!store.has_background_work(), "work left after {what}");
        }
        let mut n = 0;
        store
            .read(&mut |txn| {
                txn.scan(
                    None,
                    &mut |_| {
                        n += 1;
                        true
                    },
                    &mut vec![],
                )
            })
            .unwrap();
        assert_eq!(n, 400, "every job filed");
    }

    /// The counts of logged batches are read without publishing them (which would commit the
    /// open transaction and write what it keeps back), and match what a read sees after a
    /// publish.
    #[test]
    fn counts_are_read_without_publishing() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(Some(&dir.path().join("s.redb")), false).unwrap();
        let expect = |a: u64, b: u64| {
            let mut rows = vec![];
            for (queue, n) in [("a", a), ("b", b)] {
                if n > 0 {
                    rows.push((queue.to_string(), JobState::Available, n));
                }
            }
            rows
        };
        insert(&store, "a", 3);
        assert!(store.unpublished.load(Ordering::Acquire), "a logged batch waits unpublished");
        assert_eq!(store.counts().unwrap(), expect(3, 0));
        assert!(store.unpublished.load(Ordering::Acquire), "counts() published the batch");

        // Published: the counts table holds them; then more batches add pending deltas.
        store.read(&mut |_| Ok(())).unwrap();
        assert!(!store.unpublished.load(Ordering::Acquire));
        insert(&store, "b", 2);
        insert(&store, "a", 1);
        assert_eq!(store.counts().unwrap(), expect(4, 2));
        assert!(store.unpublished.load(Ordering::Acquire), "counts() published the batches");
        assert_eq!(super::super::read_counts(&store).unwrap(), expect(4, 2));
    }
}
