//! Opening a redb store: a file (its header checked, its pages verified) or a caller's
//! backend; the format version checked, a new file made whole beside its path and linked into
//! place (an existing empty file is refused, not initialised), an older format upgraded;
//! redb's refusals at open turned into the engine's errors.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use redb::backends::{FileBackend, InMemoryBackend};
use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableHandle};

use super::holder::{holder_pid, open_in, Registered};
use super::schema::{
    decode, in_failed, AVAILABLE, COUNTS, DUE, EXECUTING, FAILED, FINISHED, FORMAT_VERSION, JOBS,
    META, META_FORMAT, META_NEXT_ID, QUARANTINE,
};
use super::wal::{self, LogFaults};
use super::RedbStore;
use crate::error::{commit_failed, Error, Result};
use crate::fork::CloseInForkedChild;
use crate::guard::guarded;

/// First bytes of every redb file; anything else is not a store at all.
const REDB_MAGIC: &[u8; 9] = &[b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

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
        if !path.exists() {
            create_new(&path, fsync)?;
        }
        let file = std::fs::File::open(&path)
            .map_err(|e| Error::Storage(format!("cannot open {}: {e}", path.display())))?;
        let mut head = Vec::with_capacity(REDB_MAGIC.len());
        file.take(REDB_MAGIC.len() as u64)
            .read_to_end(&mut head)
            .map_err(|e| Error::Storage(format!("cannot read {}: {e}", path.display())))?;
        // New stores appear whole (`create_new`), so an empty file is not one being created:
        // it is a store cut to nothing (or a file that was never one), and initialising it
        // would hide the loss of every job it held.
        if head.is_empty() {
            return Err(Error::Corrupted {
                path,
                detail: "the file is empty (0 bytes) where a store was expected; restore the \
                         store from a backup, or delete the empty file to create a new store"
                    .into(),
                job: None,
            });
        }
        if head.as_slice() != REDB_MAGIC {
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
        let (db, not_in_children) = open_redb(&path)?;
        let mut store = Self::checked(db, path, fsync, Some(registered))?;
        store.not_in_children = Some(not_in_children);
        store.attach_log(fsync, log_faults)?;
        Ok(store)
    }

    /// Open (or create) a store on a caller-supplied redb backend. `path` only names the store
    /// in errors and counts as open in this process (`None`: `<memory>`); the caller made and
    /// checked whatever is behind the backend, so the redb-header check and the owner-only
    /// file mode of [`RedbStore::open`] are not applied. `cache_bytes` sizes redb's page
    /// cache (`None`: redb's default); 0 sends every page read to the backend.
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
            not_in_children: None,
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
                Some(v) if v < FORMAT_VERSION => self.upgrade(v),
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
                txn.open_table(FAILED)?;
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

    /// Format `found` → [`FORMAT_VERSION`], in one commit: add the quarantine table (format
    /// 1; records stay as they are until they next change, every version being read) and,
    /// before format 3, the `failed` index, built from the records (one read of each; a
    /// record that does not decode gets no entry, and is quarantined when a read meets it).
    /// Formats 3 and 4 need only their version raised (formats 4 and 5 change the record and
    /// the entries, not the tables).
    /// Before the write-ahead log is replayed, whose records then change the index as they
    /// change the jobs.
    fn upgrade(&self, found: u64) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.open_table(QUARANTINE)?;
        if found < 3 {
            let jobs = txn.open_table(JOBS)?;
            let mut failed = txn.open_table(FAILED)?;
            for entry in jobs.iter()? {
                let (id, bytes) = entry?;
                if let Ok(job) = decode(id.value(), bytes.value()) {
                    if in_failed(job.state) {
                        failed.insert((job.queue.as_str(), job.state as u8, job.id), ())?;
                    }
                }
            }
        }
        txn.open_table(META)?.insert(META_FORMAT, FORMAT_VERSION)?;
        txn.commit().map_err(|e| commit_failed(&self.path, &e))
    }
}

/// Create a new, initialised store at `path`, which did not exist: built under a temporary
/// name beside it, then linked into place, so `path` never names a half-made (empty) file,
/// even to another process opening it meanwhile. If another process created the store
/// first, its file stays and this one is discarded.
fn create_new(path: &Path, fsync: bool) -> Result<()> {
    let io_error = |e: std::io::Error, what: &Path| {
        Error::Storage(format!(
            "cannot create {}: {e}{}",
            what.display(),
            crate::error::io_advice(&e)
        ))
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".new-{}", std::process::id()));
    let temp = path.with_file_name(name);
    let _ = std::fs::remove_file(&temp);
    wal::open_owner_only(&temp).map_err(|e| io_error(e, &temp))?;
    let made = guarded(&temp, || {
        let db = Database::builder().create(&temp).map_err(|e| open_error(&temp, e))?;
        drop(RedbStore::checked(db, temp.clone(), fsync, None)?);
        Ok(())
    })
    .and_then(|()| match std::fs::hard_link(&temp, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        // File systems without hard links: a rename, which would replace a store another
        // process made in the same instant (rare, and only there).
        Err(_) if !path.exists() => std::fs::rename(&temp, path).map_err(|e| io_error(e, path)),
        other => other.map_err(|e| io_error(e, path)),
    });
    let _ = std::fs::remove_file(&temp);
    made?;
    // Make the new name durable, as for the log: a store written to later cannot vanish with
    // its directory entry.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error(e, dir))?;
    }
    Ok(())
}

/// How many times a redb open that panicked is tried before the panic counts as damage.
const OPEN_TRIES: u32 = 3;

/// redb's open of the file at `path`, its pages verified. Only a panic that every one of
/// [`OPEN_TRIES`] opens repeats is reported as damage ([`Error::Corrupted`]): a store is being
/// taken over right after its owner died, and an open that panics once and then opens clean
/// (nothing quarantined, nothing lost) met a passing state, not a damaged file. Errors redb
/// returns (a held lock, a checksum that does not match) are answers, not retried.
///
/// The file is opened here rather than by `Builder::create` (which opens it the same way) to
/// know its descriptor: a child made by `fork` must not keep it, nor the lock on it.
fn open_redb(path: &Path) -> Result<(Database, CloseInForkedChild)> {
    retrying_panics(path, || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::Storage(format!("cannot open {}: {e}", path.display())))?;
        let not_in_children = CloseInForkedChild::new(file.as_raw_fd());
        let backend = FileBackend::new(file).map_err(|e| open_error(path, e))?;
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create_with_backend(backend)
            .map_err(|e| open_error(path, e))?;
        Ok((db, not_in_children))
    })
}

/// `open` of the store at `path`, under [`guarded`], tried again while it panics, up to
/// [`OPEN_TRIES`] times in all; what it returns (a value or an error) is the answer.
fn retrying_panics<T>(path: &Path, mut open: impl FnMut() -> Result<T>) -> Result<T> {
    let mut tries = 0;
    loop {
        tries += 1;
        // Set when `open` returned rather than panicked.
        let mut returned = false;
        let opened = guarded(path, || {
            let answer = open();
            returned = true;
            answer
        });
        match opened {
            Err(Error::Corrupted { detail, .. }) if !returned && tries >= OPEN_TRIES => {
                return Err(Error::Corrupted {
                    path: path.to_path_buf(),
                    detail: format!("{detail} (on each of {OPEN_TRIES} opens)"),
                    job: None,
                })
            }
            Err(Error::Corrupted { .. }) if !returned => {
                std::thread::sleep(std::time::Duration::from_millis(20 * u64::from(tries)));
            }
            answer => return answer,
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
            job: None,
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
            Error::Corrupted { path: path.to_path_buf(), detail: io.to_string(), job: None }
        }
        DatabaseError::Storage(redb::StorageError::Io(io)) => Error::Storage(format!(
            "cannot open {}: {io}{}",
            path.display(),
            crate::error::io_advice(&io)
        )),
        other => {
            Error::Corrupted { path: path.to_path_buf(), detail: other.to_string(), job: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_that_panics_once_is_tried_again_and_its_answer_taken() {
        let mut calls = 0;
        let opened = retrying_panics(Path::new("s.redb"), || {
            calls += 1;
            assert!(calls > 1, "a passing state of the file");
            Ok(calls)
        });
        assert_eq!(opened.unwrap(), 2);
    }

    #[test]
    fn a_panic_every_open_repeats_is_damage_and_says_so() {
        let mut calls = 0;
        let opened: Result<()> = retrying_panics(Path::new("s.redb"), || {
            calls += 1;
            panic!("a damaged page");
        });
        assert_eq!(calls, OPEN_TRIES);
        match opened {
            Err(Error::Corrupted { detail, .. }) => {
                assert!(detail.contains("a damaged page"), "{detail}");
                assert!(detail.contains("on each of 3 opens"), "{detail}");
            }
            other => panic!("expected Corrupted, got {other:?}"),
        }
    }

    #[test]
    fn an_error_open_returns_is_the_answer_not_tried_again() {
        let mut calls = 0;
        let opened: Result<()> = retrying_panics(Path::new("s.redb"), || {
            calls += 1;
            Err(Error::Corrupted { path: "s.redb".into(), detail: "checksum".into(), job: None })
        });
        assert_eq!(calls, 1);
        assert!(matches!(opened, Err(Error::Corrupted { .. })));
    }
}
