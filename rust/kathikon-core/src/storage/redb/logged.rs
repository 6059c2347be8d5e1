//! Batches through the write-ahead log: each batch applied to one redb write transaction
//! kept open across batches and appended to the log (see `wal/mod.rs`); the transaction
//! published (committed without a sync) when a reader needs it, and committed durably at a
//! checkpoint; new jobs filed in the writer's idle time; a checkpoint at a clean close.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::replay::apply_logged;
use super::schema::{META_LOG_OPEN, META_WAL_SEQ};
use super::tables::WriteTables;
use super::unfiled::Unfiled;
use super::wal::{LogBuf, Payloads, Wal};
use super::RedbStore;
use crate::error::{commit_failed, Error, Result};
use crate::guard::{guarded, panic_text};
use crate::storage::WriteTxn;

/// Checkpoint once the log holds this many bytes…
const CHECKPOINT_BYTES: u64 = 1024 * 1024;
/// …or this many records…
const CHECKPOINT_RECORDS: u64 = 4096;
/// …or its oldest record is this old.
const CHECKPOINT_AGE: Duration = Duration::from_secs(2);

/// The write-ahead log and what the store knows about it.
pub(super) struct LogState {
    pub(super) log: Wal,
    /// The write transaction the logged batches are applied in. It is committed (without a
    /// sync) only when a reader needs to see its changes, and durably at a checkpoint: a redb
    /// commit costs ~40 µs of CPU even unsynced, ten times applying a small batch, and the log
    /// already makes each batch durable.
    pub(super) open: Option<OpenTxn>,
    /// Every batch logged since the last redb commit, in order. When a batch fails part way,
    /// `open` (holding its partial changes mixed with these) is aborted, and these are applied
    /// again to a fresh transaction, as at open after a crash.
    pub(super) pending: Payloads,
    /// The last batch's log buffer, reused by the next batch.
    pub(super) spare: Option<LogBuf>,
    /// The last transaction's buffers of new jobs (emptied), reused by the next one: grown
    /// afresh in each transaction, every doubling would touch fresh memory, and page faults
    /// are a large share of a bulk insert's cost (measured: `benches/RESULTS.md`).
    pub(super) spare_unfiled: Unfiled,
    /// Records appended since the last checkpoint, and when the first of them was.
    pub(super) since_checkpoint: u64,
    pub(super) first_at: Option<Instant>,
    /// Set by a failed append, commit or checkpoint: the outcome is unknown, so nothing more
    /// is written (not even the checkpoint at close) until the store is reopened.
    pub(super) poisoned: bool,
}

self_cell::self_cell!(
    /// A write transaction kept open between batches, with its tables: opening the eight of
    /// them costs ~13 µs, twice what a one-job batch does in them.
    pub(super) struct OpenTxn {
        owner: redb::WriteTransaction,
        #[not_covariant]
        dependent: WriteTables,
    }
);

impl RedbStore {
    /// One batch through the write-ahead log: applied to the open transaction, its effects
    /// appended to the log and synced; a checkpoint follows when one is due.
    pub(super) fn write_logged(
        &self,
        state: &mut LogState,
        f: &mut dyn FnMut(&mut dyn WriteTxn) -> Result<()>,
    ) -> Result<()> {
        let mut open = self.open_txn(state)?;
        let mut buf = state.spare.take().unwrap_or_else(LogBuf::new);
        buf.clear();
        let applied = open.with_dependent_mut(|_, tables| {
            tables.log = Some(buf);
            tables.moved_aside = false;
            // The records, index entries, counts and next id wait for the transaction's
            // commit: written then, together, they cost a fraction of what writing them batch
            // by batch did, and nothing reads them before then (`rewrites.rs`).
            let result = f(tables);
            let log = tables.log.take().expect("the batch's log");
            result.map(|()| (log, tables.moved_aside, !tables.unfiled.is_empty()))
        });
        let (mut log, moved_aside, unfiled) = match applied {
            Ok(done) => done,
            Err(e) => {
                // The batch's partial changes are mixed with the pending ones: drop them all;
                // the next use of the log applies the pending ones again.
                let _ = open.into_owner().abort();
                return Err(e);
            }
        };
        if log.is_empty() {
            // Nothing logged: a barrier, calls that were all refused (every change goes
            // through `put`, `remove` or `allocate_ids`, which log it), or only damaged records
            // moved aside. The last are published with the rest but never logged: a crash
            // before the next checkpoint brings them back, and the next reader moves them
            // aside again.
            state.open = Some(open);
            state.spare = Some(log);
            if moved_aside {
                self.unpublished.store(true, Ordering::Release);
            }
            return Ok(());
        }
        // A panic in the log's own code is a failed append too: the record may be durable,
        // so the batch's outcome is unknown and the store must stop writing, as for an I/O
        // error (caught further up, it would fail the batch while leaving it for replay).
        let appended =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.log.append(&mut log)))
                .unwrap_or_else(|panic| {
                    Err(std::io::Error::other(format!(
                        "the log append panicked: {}",
                        panic_text(panic.as_ref())
                    )))
                });
        if let Err(e) = appended {
            // The record may be on disk whole, torn or absent: the outcome is unknown, so
            // nothing more is written. Readers keep seeing every batch acknowledged before it:
            // the open transaction (which holds this one too) is dropped, the pending batches
            // applied again and committed.
            let _ = open.into_owner().abort();
            let _ = self.publish(state);
            state.poisoned = true;
            return Err(Error::CommitFailed {
                path: self.path.to_path_buf(),
                detail: format!(
                    "I/O error on the write-ahead log {}: {e}{}",
                    state.log.path().display(),
                    crate::error::io_advice(&e)
                ),
            });
        }
        state.open = Some(open);
        state.pending.push(&log);
        state.spare = Some(log);
        self.unpublished.store(true, Ordering::Release);
        state.since_checkpoint += 1;
        state.first_at.get_or_insert_with(Instant::now);
        if unfiled {
            self.background.store(true, Ordering::Release);
        }
        // In the batch, not in the writer's idle time: moved there, checkpoints came later
        // after reads had committed redb without a sync (whose freed pages redb cannot reuse
        // until a durable commit), and a store on a nearly full disk grew past it.
        if checkpoint_due(state) {
            self.checkpoint_locked(state)?;
        }
        Ok(())
    }

    /// The transaction holding every logged batch not yet committed to redb: the open one, or
    /// (after a failed batch dropped it) a fresh one with the pending batches applied again.
    fn open_txn(&self, state: &mut LogState) -> Result<OpenTxn> {
        if state.poisoned {
            return Err(self.poisoned());
        }
        if let Some(open) = state.open.take() {
            return Ok(open);
        }
        let again = (|| {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(redb::Durability::None)?;
            let mut open = OpenTxn::try_new(txn, |txn| WriteTables::open(txn, &self.path, None))?;
            open.with_dependent_mut(|_, tables| {
                tables.unfiled = std::mem::take(&mut state.spare_unfiled);
                for payload in state.pending.iter() {
                    apply_logged(tables, payload).ok_or_else(|| {
                        self.damaged("a pending log record does not parse".into())
                    })??;
                }
                tables.flush_deferred()
            })?;
            Ok(open)
        })();
        if again.is_err() {
            state.poisoned = true;
        }
        again
    }

    /// Make the open transaction's changes visible to readers (committed without a sync:
    /// the log already made them durable).
    pub(super) fn publish(&self, state: &mut LogState) -> Result<()> {
        let mut open = self.open_txn(state)?;
        let result = open
            .with_dependent_mut(|_, tables| {
                tables.flush_deferred()?;
                state.spare_unfiled = tables.unfiled.recycle();
                Ok(())
            })
            .and_then(|()| open.into_owner().commit().map_err(|e| commit_failed(&self.path, &e)));
        if let Err(e) = result {
            state.poisoned = true;
            return Err(e);
        }
        self.committed(state);
        Ok(())
    }

    /// The open transaction was committed (by [`RedbStore::publish`] or a checkpoint): the
    /// logged batches are in redb, readers see them, and every new job was filed, so the
    /// writer has nothing to wake up for.
    fn committed(&self, state: &mut LogState) {
        state.pending.clear();
        self.unpublished.store(false, Ordering::Release);
        self.background.store(false, Ordering::Release);
    }

    /// What a write or checkpoint is refused with once the log is poisoned; the failure
    /// itself was returned to the call that met it.
    fn poisoned(&self) -> Error {
        let cause = format!("an earlier commit to {} failed", self.path.display());
        Error::WriterStopped { cause: Box::new(Error::Storage(cause)) }
    }

    /// Make every commit so far durable in redb itself and start the log afresh.
    pub(super) fn checkpoint_locked(&self, state: &mut LogState) -> Result<()> {
        self.checkpoint_as(state, false)
    }

    /// [`RedbStore::checkpoint_locked`]; at a clean close (`closing`) the same commit clears
    /// `log_open`, after which nothing is appended and the log may go.
    fn checkpoint_as(&self, state: &mut LogState, closing: bool) -> Result<()> {
        if state.poisoned {
            return Err(self.poisoned());
        }
        // The open transaction, committed durably, makes every logged batch durable in redb.
        let mut open = self.open_txn(state)?;
        let last = state.log.last_seq();
        let result = open
            .with_dependent_mut(|_, tables| {
                tables.flush_deferred()?;
                state.spare_unfiled = tables.unfiled.recycle();
                if closing {
                    tables.meta.insert(META_LOG_OPEN, 0)?;
                }
                Ok(tables.meta.insert(META_WAL_SEQ, last).map(drop)?)
            })
            .and_then(|()| {
                let mut txn = open.into_owner();
                txn.set_durability(redb::Durability::Immediate)?;
                txn.commit().map_err(|e| commit_failed(&self.path, &e))
            });
        if let Err(e) = result {
            state.poisoned = true;
            return Err(e);
        }
        self.committed(state);
        state.log.reset();
        state.since_checkpoint = 0;
        state.first_at = None;
        Ok(())
    }
}

/// File up to `limit` new jobs; returns whether any are left.
pub(super) fn file_unfiled(state: &mut LogState, limit: usize) -> Result<bool> {
    if state.poisoned {
        return Ok(false);
    }
    if let Some(open) = state.open.as_mut() {
        match open.with_dependent_mut(|_, tables| tables.file(limit)) {
            Ok(more) => return Ok(more),
            Err(e) => {
                // As after a failed batch: the open transaction goes, and the next use of
                // the log applies the logged batches (these jobs included) again.
                if let Some(open) = state.open.take() {
                    let _ = open.into_owner().abort();
                }
                return Err(e);
            }
        }
    }
    Ok(false)
}

/// Whether the log has reached its checkpoint limits (in size, records or age).
fn checkpoint_due(state: &LogState) -> bool {
    state.log.used() >= CHECKPOINT_BYTES
        || state.since_checkpoint >= CHECKPOINT_RECORDS
        || state.first_at.is_some_and(|at| at.elapsed() >= CHECKPOINT_AGE)
}

pub(super) fn lock(wal: &Mutex<LogState>) -> MutexGuard<'_, LogState> {
    wal.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for RedbStore {
    /// A clean close: checkpoint and delete the log, so the store is one file again. After a
    /// failure the log stays for the next open to read.
    fn drop(&mut self) {
        let Some(wal) = self.wal.take() else { return };
        let mut state = wal.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        let path = state.log.path().to_path_buf();
        let done = guarded(&self.path, || self.checkpoint_as(&mut state, true));
        if done.is_ok() {
            drop(state);
            let _ = std::fs::remove_file(&path);
        }
    }
}
