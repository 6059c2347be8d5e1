//! The redb implementation of [`Store`]: one file per app, or redb's in-memory backend.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt};
use redb::backends::InMemoryBackend;
use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, Table, TableHandle};

use super::holder::{holder_pid, open_in, Registered};
use super::index_changes::IndexChanges;
use super::rewrites::Rewrites;
use super::schema::{
    decode, encode, AVAILABLE, COUNTS, DUE, EXECUTING, FINISHED, FORMAT_VERSION, JOBS, META,
    META_FORMAT, META_NEXT_ID, META_STORE_ID, META_WAL_SEQ, QUARANTINE,
};
use super::unfiled::Unfiled;
use super::wal::{self, LogBuf, LogFaults, Payloads, Wal};
use super::{AvailableEntry, Quarantined, ReadTxn, Store, WriteTxn};
use crate::clock::Micros;
use crate::error::{commit_failed, Error, Result};
use crate::guard::guarded;
use crate::job::{Job, JobId, Placement};
use crate::state::JobState;

/// First bytes of every redb file; anything else is not a store at all.
const REDB_MAGIC: &[u8; 9] = &[b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Checkpoint once the log holds this many bytes…
const CHECKPOINT_BYTES: u64 = 1024 * 1024;
/// …or this many records…
const CHECKPOINT_RECORDS: u64 = 4096;
/// …or its oldest record is this old.
const CHECKPOINT_AGE: Duration = Duration::from_secs(2);

/// Jobs in a redb database.
pub struct RedbStore {
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

/// The write-ahead log and what the store knows about it.
struct LogState {
    log: Wal,
    /// The write transaction the logged batches are applied in. It is committed (without a
    /// sync) only when a reader needs to see its changes, and durably at a checkpoint: a redb
    /// commit costs ~40 µs of CPU even unsynced, ten times applying a small batch, and the log
    /// already makes each batch durable.
    open: Option<OpenTxn>,
    /// Every batch logged since the last redb commit, in order. When a batch fails part way,
    /// `open` (holding its partial changes mixed with these) is aborted, and these are applied
    /// again to a fresh transaction, as at open after a crash.
    pending: Payloads,
    /// The last batch's log buffer, reused by the next batch.
    spare: Option<LogBuf>,
    /// The last transaction's buffers of new jobs (emptied), reused by the next one. Grown
    /// afresh in each transaction, every doubling touched fresh memory: page faults were a
    /// fifth of an `insert_all`'s samples on our VM, these buffers among their sources.
    spare_unfiled: Unfiled,
    /// Records appended since the last checkpoint, and when the first of them was.
    since_checkpoint: u64,
    first_at: Option<Instant>,
    /// Set by a failed append, commit or checkpoint: the outcome is unknown, so nothing more
    /// is written (not even the checkpoint at close) until the store is reopened.
    poisoned: bool,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Open (or create) the store at `path`, or an in-memory store when `path` is `None`.
    /// `fsync` chooses whether each commit waits for the disk.
    ///
    /// A new file is created readable and writable by its owner only.
    pub fn open(path: Option<&Path>, fsync: bool) -> Result<RedbStore> {
        let Some(path) = path else {
            return Self::open_with_backend(InMemoryBackend::new(), None, fsync, None);
        };
        Self::open_file(path, fsync, None)
    }

    /// [`RedbStore::open`] of a file, with `log_faults` injected into its write-ahead log.
    fn open_file(
        path: &Path,
        fsync: bool,
        log_faults: Option<Arc<LogFaults>>,
    ) -> Result<RedbStore> {
        let registered = Registered::claim(path)?;
        let path = path.to_path_buf();
        let file = wal::open_owner_only(&path)
            .map_err(|e| Error::Storage(format!("cannot open {}: {e}", path.display())))?;
        let mut head = Vec::with_capacity(REDB_MAGIC.len());
        file.take(REDB_MAGIC.len() as u64)
            .read_to_end(&mut head)
            .map_err(|e| Error::Storage(format!("cannot read {}: {e}", path.display())))?;
        // A file shorter than the magic is refused too, unless it is empty (a new store).
        if !head.is_empty() && head.as_slice() != REDB_MAGIC {
            return Err(Error::NotAStore {
                path,
                detail: "it does not start with a redb header".into(),
            });
        }
        // Verify every page checksum of the committed trees (records, indexes, counts, meta)
        // before trusting the file: redb otherwise verifies them only after a crash. A crash
        // may leave the newest commit torn (never acknowledged), and redb then falls back to the
        // commit before. A clean close ends with a two-phase commit, whose damage redb refuses
        // ("Primary is corrupted despite 2-phase commit") rather than rolling it back.
        let db = guarded(&path, || {
            Database::builder()
                .set_check_integrity_on_open(true)
                .create(&path)
                .map_err(|e| open_error(&path, e))
        })?;
        let mut store = Self::checked(db, path, fsync, Some(registered))?;
        store.attach_log(fsync, log_faults)?;
        Ok(store)
    }

    /// Open (or create) a store on a caller-supplied redb backend. `path` only names the store
    /// in errors and counts as open in this process (`None`: `<memory>`); the caller made and
    /// checked whatever is behind the backend, so the redb-header check and the owner-only
    /// file mode of [`RedbStore::open`] are not applied. `cache_bytes` sizes redb's page cache (`None`: redb's default); 0
    /// sends every page read to the backend.
    ///
    /// Used for the in-memory store, and by tests that wrap redb's `FileBackend` to fail
    /// reads, writes or syncs on command.
    ///
    /// With a `path`, the store keeps its write-ahead log in a real file beside it (see
    /// [`RedbStore::open_with_backend_and_log_faults`]).
    #[doc(hidden)]
    pub fn open_with_backend(
        backend: impl redb::StorageBackend,
        path: Option<&Path>,
        fsync: bool,
        cache_bytes: Option<usize>,
    ) -> Result<RedbStore> {
        Self::open_with_backend_and_log_faults(backend, path, fsync, cache_bytes, None)
    }

    /// [`RedbStore::open_with_backend`], with `log_faults` injected into the write-ahead log
    /// (kept beside `path` when there is one). Not a stable API.
    #[doc(hidden)]
    pub fn open_with_backend_and_log_faults(
        backend: impl redb::StorageBackend,
        path: Option<&Path>,
        fsync: bool,
        cache_bytes: Option<usize>,
        log_faults: Option<Arc<LogFaults>>,
    ) -> Result<RedbStore> {
        let in_file = path.is_some();
        let registered = path.map(Registered::claim).transpose()?;
        let path = path.map_or_else(|| PathBuf::from("<memory>"), Path::to_path_buf);
        let db = guarded(&path, || {
            let mut builder = Database::builder();
            if let Some(bytes) = cache_bytes {
                builder.set_cache_size(bytes);
            }
            builder.create_with_backend(backend).map_err(|e| open_error(&path, e))
        })?;
        let mut store = Self::checked(db, path, fsync, registered)?;
        if in_file {
            store.attach_log(fsync, log_faults)?;
        }
        Ok(store)
    }

    /// Apply what the write-ahead log beside the file holds past the last checkpoint, then
    /// open the log for this store's commits: synced per batch with `fsync`, not without
    /// (a killed process then loses nothing, a power loss what was not yet checkpointed).
    fn attach_log(&mut self, fsync: bool, faults: Option<Arc<LogFaults>>) -> Result<()> {
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
        let (store_id, checkpoint) = guarded(&self.path, || self.log_identity(first.map(|f| f.0)))
            .map_err(|e| self.with_path(e))?;
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
                    "its write-ahead log {} {why}; move the log away to open the store as it is",
                    log_path.display()
                )));
            }
        }
        let mut last = checkpoint;
        if exists {
            let records = wal::records_after(&bytes, store_id, checkpoint);
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

    /// The store's id (made now if it has none) and the last log record its durable state
    /// covers. A store without an id beside a log (of store `logged`) is refused.
    fn log_identity(&self, logged: Option<u64>) -> Result<(u64, u64)> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let id = meta.get(META_STORE_ID)?.map(|v| v.value());
        let checkpoint = meta.get(META_WAL_SEQ)?.map_or(0, |v| v.value());
        drop(meta);
        drop(txn);
        if let Some(id) = id {
            return Ok((id, checkpoint));
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
        Ok((id, checkpoint))
    }

    /// Apply logged records to redb in one durable commit that also records `last` as
    /// checkpointed.
    fn replay(&self, records: &[(u64, &[u8])], last: u64) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        {
            let mut tables = Self::tables(&txn, &self.path, None)?;
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

    /// Open every table of `txn` for a batch, logging its effects into `log` when given.
    fn tables<'t>(
        txn: &'t redb::WriteTransaction,
        path: &Arc<Path>,
        log: Option<LogBuf>,
    ) -> Result<WriteTables<'t>> {
        Ok(WriteTables {
            jobs: txn.open_table(JOBS)?,
            available: txn.open_table(AVAILABLE)?,
            due: txn.open_table(DUE)?,
            executing: txn.open_table(EXECUTING)?,
            finished: txn.open_table(FINISHED)?,
            meta: txn.open_table(META)?,
            counts: txn.open_table(COUNTS)?,
            quarantine: txn.open_table(QUARANTINE)?,
            deltas: HashMap::new(),
            changes: IndexChanges::default(),
            rewrites: Rewrites::default(),
            first_due: FirstDue::Unknown,
            next_id: None,
            quarantined: Vec::new(),
            moved_aside: false,
            path: path.clone(),
            log,
            unfiled: Unfiled::default(),
        })
    }

    /// The store on `db` (opened from `path`), its schema initialised or checked; no log yet.
    fn checked(
        db: Database,
        path: PathBuf,
        fsync: bool,
        registered: Option<Registered>,
    ) -> Result<RedbStore> {
        let store = RedbStore {
            db,
            durability: durability(fsync),
            path: path.into(),
            wal: None,
            unpublished: AtomicBool::new(false),
            background: AtomicBool::new(false),
            _registered: registered,
        };
        guarded(&store.path, || store.check_schema()).map_err(|e| store.with_path(e))?;
        Ok(store)
    }

    /// Initialise a fresh file, or check that an existing one is a store we can read.
    fn check_schema(&self) -> Result<()> {
        let txn = self.db.begin_read()?;
        let names: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
        drop(txn);
        if names.iter().any(|n| n == META.name()) {
            let txn = self.db.begin_read()?;
            let meta = txn.open_table(META)?;
            let version = meta.get(META_FORMAT)?.map(|v| v.value());
            drop(meta);
            drop(txn);
            match version {
                Some(v) if v > FORMAT_VERSION => Err(Error::FormatTooNew {
                    path: self.path.to_path_buf(),
                    found: v,
                    supported: FORMAT_VERSION,
                }),
                Some(v) if v < FORMAT_VERSION => self.upgrade(),
                Some(_) => Ok(()),
                None => Err(self.damaged("the format version is missing".into())),
            }
        } else if names.is_empty() {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(redb::Durability::Immediate)?;
            {
                let mut meta = txn.open_table(META)?;
                meta.insert(META_FORMAT, FORMAT_VERSION)?;
                meta.insert(META_NEXT_ID, 1)?;
                txn.open_table(JOBS)?;
                txn.open_table(AVAILABLE)?;
                txn.open_table(DUE)?;
                txn.open_table(EXECUTING)?;
                txn.open_table(FINISHED)?;
                txn.open_table(COUNTS)?;
                txn.open_table(QUARANTINE)?;
            }
            txn.commit().map_err(|e| commit_failed(&self.path, &e))?;
            Ok(())
        } else {
            Err(Error::NotAStore {
                path: self.path.to_path_buf(),
                detail: format!("it is a redb database with other tables: {}", names.join(", ")),
            })
        }
    }

    /// Format 1 → 2: add the quarantine table. Records stay version 1 until they next change
    /// (both versions are read), so the upgrade is one small commit.
    fn upgrade(&self) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        {
            txn.open_table(QUARANTINE)?;
            txn.open_table(META)?.insert(META_FORMAT, FORMAT_VERSION)?;
        }
        txn.commit().map_err(|e| commit_failed(&self.path, &e))
    }

    fn damaged(&self, detail: String) -> Error {
        Error::Corrupted { path: self.path.to_path_buf(), detail }
    }

    /// Name this store's file in a decode error raised deep inside a transaction.
    fn with_path(&self, e: Error) -> Error {
        match e {
            Error::Corrupted { detail, .. } => self.damaged(detail),
            other => other,
        }
    }
}

fn durability(fsync: bool) -> redb::Durability {
    if fsync {
        redb::Durability::Immediate
    } else {
        redb::Durability::None
    }
}

fn open_error(path: &Path, e: DatabaseError) -> Error {
    match e {
        DatabaseError::DatabaseAlreadyOpen => {
            // The registry of open paths (`holder.rs`) misses the same file reached another way
            // (a symlink, `..`); then the holder is this very process.
            let same_process = open_in(Path::new("/proc/self"), path);
            Error::StorageLocked {
                path: path.to_path_buf(),
                holder: if same_process { Some(std::process::id()) } else { holder_pid(path) },
                same_process,
            }
        }
        DatabaseError::Storage(redb::StorageError::Corrupted(msg)) => Error::Corrupted {
            path: path.to_path_buf(),
            detail: format!(
                "the checks at open found pages whose checksums do not match, so the file \
                 changed on disk after it was written (redb: {msg})"
            ),
        },
        DatabaseError::UpgradeRequired(v) => Error::NotAStore {
            path: path.to_path_buf(),
            detail: format!("it uses redb file format {v}, older than Kathikon reads"),
        },
        // A cut-off header reads as UnexpectedEof, a bad header as InvalidData: both mean
        // the file is damaged, not that the disk failed.
        DatabaseError::Storage(redb::StorageError::Io(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            Error::Corrupted { path: path.to_path_buf(), detail: io.to_string() }
        }
        DatabaseError::Storage(redb::StorageError::Io(io)) => Error::Storage(format!(
            "cannot open {}: {io}{}",
            path.display(),
            crate::error::io_advice(&io)
        )),
        other => Error::Corrupted { path: path.to_path_buf(), detail: other.to_string() },
    }
}

type AvailKey<'a> = (&'a str, u8, i64, u64);

/// The tables of one write transaction, opened once for the whole batch.
struct WriteTables<'t> {
    jobs: Table<'t, u64, &'static [u8]>,
    available: Table<'t, AvailKey<'static>, ()>,
    due: Table<'t, (i64, u64), ()>,
    executing: Table<'t, u64, ()>,
    finished: Table<'t, (i64, u64), ()>,
    meta: Table<'t, &'static str, u64>,
    counts: Table<'t, (&'static str, u8), u64>,
    quarantine: Table<'t, u64, (i64, &'static str, &'static [u8])>,
    /// Changes to `counts` made by this transaction per queue (indexed by state), written
    /// once at its end (the log's long transaction: just before it is committed).
    deltas: HashMap<String, [i64; 7]>,
    /// Index entries added and removed, written together (`index_changes.rs`).
    changes: IndexChanges,
    /// Records rewritten, written together (`rewrites.rs`).
    rewrites: Rewrites,
    /// The earliest due time, while known: kept until the due index changes, so that the
    /// writer's look for due jobs, made every batch, costs nothing when none has changed.
    first_due: FirstDue,
    /// The next free id as this transaction leaves it, when it has allocated any: written to
    /// `meta` with the counts.
    next_id: Option<u64>,
    /// Records this transaction moved to the quarantine table, with the reason.
    quarantined: Vec<(JobId, String)>,
    /// Whether this transaction moved any record aside (`quarantined` is emptied by the
    /// writer before the commit; this is not).
    moved_aside: bool,
    path: Arc<Path>,
    /// The batch's effects, for the write-ahead log (when the store has one).
    log: Option<LogBuf>,
    /// New jobs logged but not yet in `jobs` and `available` (only with a log).
    unfiled: Unfiled,
}

/// The earliest due time of a transaction's due index, once looked up.
#[derive(Clone, Copy)]
enum FirstDue {
    Unknown,
    /// `None`: no job is due at all.
    Known(Option<Micros>),
}

self_cell::self_cell!(
    /// A write transaction kept open between batches, with its tables: opening the eight of
    /// them costs ~13 µs, twice what a one-job batch does in them.
    struct OpenTxn {
        owner: redb::WriteTransaction,
        #[not_covariant]
        dependent: WriteTables,
    }
);

impl WriteTables<'_> {
    fn count(&mut self, queue: &str, state: JobState, by: i64) {
        // Allocate the queue name only the first time this transaction sees it.
        if let Some(row) = self.deltas.get_mut(queue) {
            row[state as usize] += by;
        } else {
            let mut row = [0; 7];
            row[state as usize] = by;
            self.deltas.insert(queue.to_string(), row);
        }
    }

    /// Write the records and index entries kept back (not the counts and next id).
    fn flush_tables(&mut self) -> Result<()> {
        self.file(usize::MAX)?;
        self.rewrites.flush(&mut self.jobs)?;
        self.changes.flush_available(&mut self.available)?;
        self.changes.executing.flush(&mut self.executing)?;
        self.changes.due.flush(&mut self.due)?;
        self.changes.finished.flush(&mut self.finished)
    }

    /// The next free id: as this transaction left it, or as stored.
    fn next_id(&self) -> Result<u64> {
        match self.next_id {
            Some(next) => Ok(next),
            None => Ok(self.meta.get(META_NEXT_ID)?.map_or(1, |v| v.value())),
        }
    }

    /// File up to `limit` unfiled jobs; returns whether any are left.
    fn file(&mut self, limit: usize) -> Result<bool> {
        self.unfiled.file(&mut self.jobs, &mut self.available, limit)
    }

    /// Write what waits for the end of the transaction: the unfiled jobs, the records and
    /// index entries kept back, the counts and the next free id.
    fn flush_deferred(&mut self) -> Result<()> {
        self.flush_tables()?;
        if let Some(next) = self.next_id.take() {
            self.meta.insert(META_NEXT_ID, next)?;
        }
        let deltas: Vec<(String, [i64; 7])> = self.deltas.drain().collect();
        for (queue, row) in &deltas {
            for (state, &delta) in row.iter().enumerate() {
                if delta != 0 {
                    self.apply_count(queue, state as u8, delta)?;
                }
            }
        }
        Ok(())
    }

    fn apply_count(&mut self, queue: &str, state: u8, delta: i64) -> Result<()> {
        {
            let key = (queue, state);
            let current = self.counts.get(key)?.map_or(0, |v| v.value());
            let next = (current as i64 + delta).max(0) as u64;
            if next == 0 {
                self.counts.remove(key)?;
            } else {
                self.counts.insert(key, next)?;
            }
        }
        Ok(())
    }

    /// Move the undecodable record `bytes` of job `id` aside: keep it in the quarantine table
    /// with `reason`, drop it and every index entry naming its id, and recount `counts` from
    /// the records (its queue and state are unknown, so its count cannot simply be taken
    /// back). Rare and slow on big stores (every record is read once); other records found
    /// undecodable meanwhile are quarantined too.
    fn quarantine_record(&mut self, id: JobId, bytes: &[u8], reason: &str) -> Result<()> {
        self.flush_tables()?;
        let mut pending = vec![(id, bytes.to_vec(), reason.to_string())];
        while !pending.is_empty() {
            for (id, bytes, reason) in pending.drain(..) {
                let at = now_micros();
                self.quarantine.insert(id, (at, reason.as_str(), bytes.as_slice()))?;
                self.jobs.remove(id)?;
                self.executing.remove(id)?;
                for key in keys_naming(&self.due, id)? {
                    self.due.remove(key)?;
                    self.first_due = FirstDue::Unknown;
                }
                for key in keys_naming(&self.finished, id)? {
                    self.finished.remove(key)?;
                }
                let mut available = Vec::new();
                for entry in self.available.iter()? {
                    let key = entry?.0;
                    let (queue, priority, at, job) = key.value();
                    if job == id {
                        available.push((queue.to_string(), priority, at, job));
                    }
                }
                for (queue, priority, at, job) in available {
                    self.available.remove((queue.as_str(), priority, at, job))?;
                }
                self.quarantined.push((id, reason));
                self.moved_aside = true;
            }
            // Recount: the records as this transaction leaves them are the truth, so pending
            // deltas are already part of the tally.
            self.deltas.clear();
            let mut tally: HashMap<(String, u8), u64> = HashMap::new();
            for entry in self.jobs.iter()? {
                let (k, v) = entry?;
                match decode(k.value(), v.value()) {
                    Ok(job) => *tally.entry((job.queue, job.state as u8)).or_default() += 1,
                    Err(e) => pending.push((k.value(), v.value().to_vec(), reason_of(&e))),
                }
            }
            self.counts.retain(|_, _| false)?;
            for ((queue, state), n) in tally {
                self.counts.insert((queue.as_str(), state), n)?;
            }
        }
        Ok(())
    }

    /// Drop the index entry of a job that was at `at` (written with the rest, later).
    fn unindex(&mut self, queue: &str, id: JobId, at: Placement) {
        match at.state {
            JobState::Available => {
                self.changes.remove_available(queue, (at.priority, at.scheduled_at, id));
            }
            JobState::Scheduled | JobState::Retryable => {
                self.changes.due.remove((at.scheduled_at, id));
                self.first_due = FirstDue::Unknown;
            }
            JobState::Executing => self.changes.executing.remove(id),
            JobState::Completed | JobState::Cancelled | JobState::Discarded => {
                self.changes.finished.remove((at.finished_at.unwrap_or(0), id));
            }
        }
    }

    /// Add the index entry of `job`'s state (written with the rest, later).
    fn index(&mut self, job: &Job) {
        match job.state {
            JobState::Available => {
                let key = (job.priority, job.scheduled_at, job.id);
                self.changes.add_available(&job.queue, key);
            }
            JobState::Scheduled | JobState::Retryable => {
                self.changes.due.add((job.scheduled_at, job.id));
                self.first_due = FirstDue::Unknown;
            }
            JobState::Executing => self.changes.executing.add(job.id),
            JobState::Completed | JobState::Cancelled | JobState::Discarded => {
                self.changes.finished.add((job.finished_at().unwrap_or(0), job.id));
            }
        }
    }
}

impl WriteTxn for WriteTables<'_> {
    fn get(&mut self, id: JobId) -> Result<Option<Job>> {
        if let Some(record) = self.rewrites.get(id) {
            return decode(id, record).map(Some); // encoded by this process: it decodes
        }
        if self.unfiled.may_hold(id) {
            self.file(usize::MAX)?;
        }
        let (error, bytes) = match self.jobs.get(id)? {
            None => return Ok(None),
            Some(v) => match decode(id, v.value()) {
                Ok(job) => return Ok(Some(job)),
                Err(e) => (e, v.value().to_vec()),
            },
        };
        self.quarantine_record(id, &bytes, &reason_of(&error))?;
        Ok(None)
    }

    fn missing(&mut self, id: JobId) -> Result<Error> {
        Ok(match self.quarantine.get(id)? {
            Some(v) => quarantined_error(&self.path, id, &v.value()),
            None => Error::JobNotFound(id),
        })
    }

    fn take_quarantined(&mut self) -> Vec<(JobId, String)> {
        std::mem::take(&mut self.quarantined)
    }

    fn allocate_ids(&mut self, n: u64) -> Result<JobId> {
        let first = self.next_id()?;
        self.next_id = Some(first + n);
        if let Some(log) = &mut self.log {
            log.next_id(first + n);
        }
        Ok(first)
    }

    fn put(&mut self, old: Option<Placement>, new: &Job) -> Result<()> {
        if let Some(old) = old {
            self.unindex(&new.queue, new.id, old);
            self.count(&new.queue, old.state, -1);
        }
        self.count(&new.queue, new.state, 1);
        let record = encode(new);
        if let Some(log) = &mut self.log {
            log.put(new.id, &record);
        }
        self.rewrites.put(new.id, record);
        self.index(new);
        Ok(())
    }

    fn put_new(&mut self, new: &Job) -> Result<()> {
        let available = match new.state {
            JobState::Available => true,
            JobState::Scheduled => false,
            _ => return self.put(None, new),
        };
        if self.log.is_none() {
            return self.put(None, new);
        }
        self.count(&new.queue, new.state, 1);
        let record = self.unfiled.push(new, available);
        if let Some(log) = &mut self.log {
            log.put(new.id, record);
        }
        if !available {
            self.index(new); // its `due` entry, read after every batch
        }
        Ok(())
    }

    fn remove(&mut self, job: &Job) -> Result<()> {
        self.unindex(&job.queue, job.id, job.placement());
        self.count(&job.queue, job.state, -1);
        self.rewrites.forget(job.id);
        self.jobs.remove(job.id)?;
        if let Some(log) = &mut self.log {
            log.delete(job.id);
        }
        Ok(())
    }

    fn due(&mut self, until: Micros, limit: usize) -> Result<Vec<JobId>> {
        if let FirstDue::Known(first) = self.first_due {
            if first.is_none_or(|at| at > until) {
                return Ok(Vec::new());
            }
        }
        self.changes.due.flush(&mut self.due)?;
        let mut out = Vec::new();
        for entry in self.due.range(..=(until, u64::MAX))?.take(limit) {
            out.push(entry?.0.value().1);
        }
        Ok(out)
    }

    fn next_due(&mut self) -> Result<Option<Micros>> {
        if let FirstDue::Known(first) = self.first_due {
            return Ok(first);
        }
        self.changes.due.flush(&mut self.due)?;
        let first = self.due.first()?.map(|(k, _)| k.value().0);
        self.first_due = FirstDue::Known(first);
        Ok(first)
    }

    fn finished(&mut self, until: Micros, limit: usize) -> Result<Vec<JobId>> {
        self.changes.finished.flush(&mut self.finished)?;
        let mut out = Vec::new();
        for entry in self.finished.range(..=(until, u64::MAX))?.take(limit) {
            out.push(entry?.0.value().1);
        }
        Ok(out)
    }

    fn executing(&mut self) -> Result<Vec<JobId>> {
        self.changes.executing.flush(&mut self.executing)?;
        let mut out = Vec::new();
        for entry in self.executing.iter()? {
            out.push(entry?.0.value());
        }
        Ok(out)
    }
}

struct ReadTables<'p> {
    jobs: redb::ReadOnlyTable<u64, &'static [u8]>,
    available: redb::ReadOnlyTable<AvailKey<'static>, ()>,
    counts: redb::ReadOnlyTable<(&'static str, u8), u64>,
    quarantine: redb::ReadOnlyTable<u64, (i64, &'static str, &'static [u8])>,
    path: &'p Path,
}

impl ReadTxn for ReadTables<'_> {
    fn get(&mut self, id: JobId) -> Result<Option<Job>> {
        if let Some(v) = self.jobs.get(id)? {
            return decode(id, v.value()).map(Some);
        }
        match self.quarantine.get(id)? {
            Some(v) => Err(quarantined_error(self.path, id, &v.value())),
            None => Ok(None),
        }
    }

    fn scan(
        &mut self,
        after: Option<JobId>,
        f: &mut dyn FnMut(Job) -> bool,
        damaged: &mut Vec<JobId>,
    ) -> Result<()> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        for entry in self.jobs.range(start..)? {
            let (k, v) = entry?;
            match decode(k.value(), v.value()) {
                Ok(job) => {
                    if !f(job) {
                        break;
                    }
                }
                Err(_) => damaged.push(k.value()),
            }
        }
        Ok(())
    }

    fn quarantined(&mut self) -> Result<Vec<Quarantined>> {
        let mut out = Vec::new();
        for entry in self.quarantine.iter()? {
            let (k, v) = entry?;
            let (at, reason, bytes) = v.value();
            out.push(Quarantined {
                id: k.value(),
                at,
                reason: reason.to_string(),
                bytes: bytes.to_vec(),
            });
        }
        Ok(out)
    }

    fn available(&mut self, f: &mut dyn FnMut(AvailableEntry)) -> Result<()> {
        for entry in self.available.iter()? {
            let (key, _) = entry?;
            let (queue, priority, at, id) = key.value();
            f((queue.to_string(), priority, at, id));
        }
        Ok(())
    }

    fn counts(&mut self) -> Result<Vec<(String, JobState, u64)>> {
        count_rows(&self.counts, &HashMap::new())
    }

    fn oldest_available(&mut self, queue: &str) -> Result<Option<Micros>> {
        // The index orders by priority first, so look at the head of each priority's run.
        let mut oldest: Option<Micros> = None;
        for priority in 0..=crate::job::MAX_PRIORITY {
            let start = (queue, priority, i64::MIN, 0_u64);
            let end = (queue, priority, i64::MAX, u64::MAX);
            if let Some(entry) = self.available.range(start..=end)?.next() {
                let at = entry?.0.value().2;
                oldest = Some(oldest.map_or(at, |o| o.min(at)));
            }
        }
        Ok(oldest)
    }
}

/// The rows of a `counts` table with a transaction's pending `deltas` added, in the table's
/// order (queue, then state), leaving out pairs that come to zero.
fn count_rows(
    table: &impl ReadableTable<(&'static str, u8), u64>,
    deltas: &HashMap<String, [i64; 7]>,
) -> Result<Vec<(String, JobState, u64)>> {
    let mut rows = std::collections::BTreeMap::<(String, u8), i64>::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let (queue, state) = key.value();
        rows.insert((queue.to_string(), state), value.value() as i64);
    }
    for (queue, row) in deltas {
        for (state, &delta) in row.iter().enumerate().filter(|(_, d)| **d != 0) {
            *rows.entry((queue.clone(), state as u8)).or_default() += delta;
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    for ((queue, state), n) in rows {
        let state = JobState::ALL
            .get(usize::from(state))
            .copied()
            .ok_or_else(|| self_damaged(format!("counts: unknown state number {state}")))?;
        if n > 0 {
            out.push((queue, state, n as u64));
        }
    }
    Ok(out)
}

/// The words of a decode error, for the quarantine table.
fn reason_of(e: &Error) -> String {
    match e {
        Error::Corrupted { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

fn quarantined_error(path: &Path, id: JobId, (at, reason, _): &(i64, &str, &[u8])) -> Error {
    Error::Corrupted {
        path: path.to_path_buf(),
        detail: format!(
            "job {id}'s record was damaged and was moved to the quarantine table at {at} µs \
             since the epoch: {reason}"
        ),
    }
}

fn now_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Micros)
}

/// The keys of a `(time, id)` index that name job `id`.
fn keys_naming(table: &Table<'_, (i64, u64), ()>, id: JobId) -> Result<Vec<(i64, u64)>> {
    let mut out = Vec::new();
    for entry in table.iter()? {
        let key = entry?.0.value();
        if key.1 == id {
            out.push(key);
        }
    }
    Ok(out)
}

fn self_damaged(detail: String) -> Error {
    Error::Corrupted { path: "<store>".into(), detail }
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
            let mut tables = Self::tables(&txn, &self.path, None)?;
            f(&mut tables)?;
            tables.flush_deferred()?;
        }
        txn.commit().map_err(|e| commit_failed(&self.path, &e))?;
        Ok(())
    }

    /// One batch through the write-ahead log: applied to the open transaction, its effects
    /// appended to the log and synced; a checkpoint follows when one is due.
    fn write_logged(
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
        if let Err(e) = state.log.append(&mut log) {
            // The record may be on disk whole, torn or absent: the outcome is unknown, so
            // nothing more is written. Readers keep seeing every batch acknowledged before it:
            // the open transaction (which holds this one too) is dropped, the pending batches
            // applied again and committed.
            let _ = open.into_owner().abort();
            let _ = self.publish(state);
            state.poisoned = true;
            return Err(Error::Storage(format!(
                "commit to {} failed, outcome unknown: I/O error on the write-ahead log {}: {e}{}",
                self.path.display(),
                state.log.path().display(),
                crate::error::io_advice(&e)
            )));
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
            let mut open = OpenTxn::try_new(txn, |txn| Self::tables(txn, &self.path, None))?;
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
    fn publish(&self, state: &mut LogState) -> Result<()> {
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

    fn poisoned(&self) -> Error {
        Error::Storage(format!(
            "the engine stopped writing after a storage failure (an earlier commit to {} \
             failed); close the app and open it again",
            self.path.display()
        ))
    }

    /// Make every commit so far durable in redb itself and start the log afresh.
    fn checkpoint_locked(&self, state: &mut LogState) -> Result<()> {
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

/// Apply one logged record's operations (idempotent: each job is set to its logged record);
/// `None` if the payload does not parse.
fn apply_logged(tables: &mut WriteTables<'_>, payload: &[u8]) -> Option<Result<()>> {
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
            }
        }
        Ok(())
    })())
}

/// File up to `limit` new jobs; returns whether any are left.
fn file_unfiled(state: &mut LogState, limit: usize) -> Result<bool> {
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

fn lock(wal: &Mutex<LogState>) -> MutexGuard<'_, LogState> {
    wal.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for RedbStore {
    /// A clean close: checkpoint and delete the log, so the store is one file again. After a
    /// failure the log stays for the next open to read.
    fn drop(&mut self) {
        let Some(wal) = self.wal.take() else { return };
        let mut state = wal.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        let path = state.log.path().to_path_buf();
        let done = guarded(&self.path, || self.checkpoint_locked(&mut state));
        if done.is_ok() {
            drop(state);
            let _ = std::fs::remove_file(&path);
        }
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
