//! At open, the write-ahead log beside a store file: checked to follow on from the store's
//! last checkpoint, its records past that checkpoint applied again, then opened for the
//! store's commits.

use std::path::Path;
use std::sync::{Arc, Mutex};

use redb::ReadableDatabase;

use super::logged::LogState;
use super::schema::{decode, META, META_LOG_OPEN, META_STORE_ID, META_WAL_SEQ};
use super::tables::WriteTables;
use super::unfiled::Unfiled;
use super::wal::{self, Damage, LogFaults, Payloads, Wal};
use super::RedbStore;
use crate::error::{commit_failed, Error, Result};
use crate::guard::guarded;
use crate::storage::WriteTxn;

impl RedbStore {
    /// Apply what the write-ahead log beside the file holds past the last checkpoint, then
    /// open the log for this store's commits: synced per batch with `fsync`, not without
    /// (a killed process then loses nothing, a power loss what was not yet checkpointed).
    pub(super) fn attach_log(&mut self, fsync: bool, faults: Option<Arc<LogFaults>>) -> Result<()> {
        let log_path = wal::path_for(&self.path);
        let exists = log_path.exists();
        let bytes = if exists {
            std::fs::read(&log_path).map_err(|e| {
                Error::Storage(format!(
                    "cannot read {}: {e}{}",
                    log_path.display(),
                    crate::error::io_advice(&e)
                ))
            })?
        } else {
            Vec::new()
        };
        let first = wal::first_record(&bytes);
        let (store_id, checkpoint, log_open) =
            guarded(&self.path, || self.log_identity(first.map(|f| f.0)))
                .map_err(|e| self.with_path(e))?;
        // Only a clean close deletes the log, and it clears `log_open` first: a store still
        // marked open without its log lost whatever the log held past the checkpoint.
        if !exists && log_open {
            return Err(self.damaged(format!(
                "its write-ahead log {log} is missing, but the store was not closed cleanly, so \
                 jobs acknowledged since its last checkpoint (record {checkpoint}) were only in \
                 that log; put the log back, or, to open the store as of that checkpoint and \
                 lose them, create an empty file at {log}",
                log = log_path.display()
            )));
        }
        // A log that does not follow on from the store's last checkpoint means the store file
        // lost durable commits (or is an older copy): applying the log would skip changes,
        // ignoring it would lose them. Refuse, and say how to open the store as it is.
        if let Some((id, seq)) = first {
            let other = id != store_id;
            if other || seq > checkpoint + 1 {
                let why = if other {
                    "belongs to another store".to_string()
                } else {
                    format!(
                        "starts at record {seq}, but the store's last checkpoint is record \
                         {checkpoint}: the store file lost commits or is an older copy"
                    )
                };
                return Err(self.damaged(format!(
                    "its write-ahead log {} {why}; move the log away (and, if the store was not \
                     closed cleanly, create an empty file in its place) to open the store as it \
                     is",
                    log_path.display()
                )));
            }
        }
        let mut last = checkpoint;
        if exists {
            let records = wal::records_after(&bytes, store_id, checkpoint)
                .map_err(|damage| self.damaged(damaged_log(&log_path, &damage)))?;
            if let Some(&(seq, _)) = records.last() {
                guarded(&self.path, || self.replay(&records, seq))
                    .map_err(|e| self.with_path(e))?;
                last = seq;
            }
        }
        let log = Wal::open(&log_path, store_id, last + 1, fsync, faults).map_err(|e| {
            Error::Storage(format!(
                "cannot open {}: {e}{}",
                log_path.display(),
                crate::error::io_advice(&e)
            ))
        })?;
        if !log_open {
            // Once the log exists (its name made durable by `Wal::open`), before anything is
            // appended: the log may now hold what the store file does not.
            guarded(&self.path, || self.mark_log_open()).map_err(|e| self.with_path(e))?;
        }
        self.wal = Some(Mutex::new(LogState {
            log,
            open: None,
            pending: Payloads::default(),
            spare: None,
            spare_unfiled: Unfiled::default(),
            since_checkpoint: 0,
            first_at: None,
            poisoned: false,
        }));
        Ok(())
    }

    /// Record durably that the store is open with its log (see `META_LOG_OPEN`).
    fn mark_log_open(&self) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.open_table(META)?.insert(META_LOG_OPEN, 1)?;
        txn.commit().map_err(|e| commit_failed(&self.path, &e))
    }

    /// The store's id (made now if it has none), the last log record its durable state
    /// covers, and whether it was left open (not closed cleanly) with its log. A store
    /// without an id beside a log (of store `logged`) is refused.
    fn log_identity(&self, logged: Option<u64>) -> Result<(u64, u64, bool)> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let id = meta.get(META_STORE_ID)?.map(|v| v.value());
        let checkpoint = meta.get(META_WAL_SEQ)?.map_or(0, |v| v.value());
        let log_open = meta.get(META_LOG_OPEN)?.is_some_and(|v| v.value() == 1);
        drop(meta);
        drop(txn);
        if let Some(id) = id {
            return Ok((id, checkpoint, log_open));
        }
        if logged.is_some() {
            return Err(self.damaged(format!(
                "a write-ahead log ({}) lies beside a store that never had one; move the log \
                 away to open the store as it is",
                wal::path_for(&self.path).display()
            )));
        }
        let id = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.write_u32(std::process::id());
            h.finish()
        };
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.open_table(META)?.insert(META_STORE_ID, id)?;
        txn.commit().map_err(|e| commit_failed(&self.path, &e))?;
        Ok((id, checkpoint, log_open))
    }

    /// Apply logged records to redb in one durable commit that also records `last` as
    /// checkpointed.
    fn replay(&self, records: &[(u64, &[u8])], last: u64) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        {
            let mut tables = WriteTables::open(&txn, &self.path, None)?;
            for &(seq, payload) in records {
                apply_logged(&mut tables, payload).ok_or_else(|| {
                    self.damaged(format!("write-ahead log record {seq} does not parse"))
                })??;
            }
            tables.meta.insert(META_WAL_SEQ, last)?;
            tables.flush_deferred()?;
        }
        txn.commit().map_err(|e| commit_failed(&self.path, &e))?;
        Ok(())
    }
}

/// What [`Damage`] in the log at `log` means, and how to open the store anyway.
fn damaged_log(log: &Path, damage: &Damage) -> String {
    let Damage { at, next, seq } = damage;
    format!(
        "its write-ahead log {log} is damaged at byte {at}: the record there is cut short, \
         fails its checksum or is out of sequence, yet whole record {seq} follows at byte \
         {next}, so this is not a torn tail and acknowledged jobs would be lost; restore the \
         log, or, to open the store without the records from byte {at} on (losing their \
         jobs), cut the log there (truncate -s {at} {log})",
        log = log.display()
    )
}

/// Apply one logged record's operations (idempotent: each job is set to its logged record);
/// `None` if the payload does not parse.
pub(super) fn apply_logged(tables: &mut WriteTables<'_>, payload: &[u8]) -> Option<Result<()>> {
    let ops = wal::ops(payload)?;
    Some((|| {
        for op in ops {
            match op {
                wal::Op::Put(id, bytes) => {
                    let job = decode(id, bytes)?;
                    match tables.get(id)? {
                        Some(now) if now == job => {}
                        Some(now) => tables.put(Some(now.placement()), &job)?,
                        None => tables.put(None, &job)?,
                    }
                }
                wal::Op::Delete(id) => {
                    if let Some(now) = tables.get(id)? {
                        tables.remove(&now)?;
                    }
                }
                wal::Op::NextId(next) => {
                    let now = tables.next_id()?;
                    tables.next_id = Some(now.max(next));
                }
                wal::Op::Request(request, first, count) => {
                    tables.request_store(request, first, count)?;
                }
                wal::Op::PutEntry(kind, name, value, expires) => {
                    tables.entry_put(kind, name, value, expires)?;
                }
                wal::Op::RemoveEntry(kind, name) => {
                    tables.entry_remove(kind, name)?;
                }
            }
        }
        Ok(())
    })())
}
