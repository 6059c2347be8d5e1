//! A redb storage backend that fails on command: [`FaultyBackend`] wraps redb's real
//! `FileBackend` and makes its writes, syncs, reads or resizes fail with EIO once a countdown
//! armed by the test runs out.
//!
//! Each kind of operation has a [`Trigger`]: disarmed it lets everything through; armed with
//! `n` it lets `n` more operations of that kind through, then fails every later one (a disk
//! that went bad stays bad) until disarmed. Locks and `len` always go to the file, so redb's
//! locking between processes and handles works as in production.

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kathikon_core::storage::{LogFaults, LogTrigger};
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

const DISARMED: u64 = u64::MAX;

/// One kind of operation's countdown to failure.
#[derive(Debug)]
pub struct Trigger {
    /// Operations still allowed; `DISARMED` for no limit.
    left: AtomicU64,
    /// Operations of this kind seen (passed or failed).
    seen: AtomicU64,
    /// Operations of this kind failed on purpose.
    failed: AtomicU64,
}

impl Default for Trigger {
    fn default() -> Self {
        Self { left: AtomicU64::new(DISARMED), seen: AtomicU64::new(0), failed: AtomicU64::new(0) }
    }
}

impl Trigger {
    /// Let `n` more operations through, then fail all later ones.
    pub fn arm(&self, n: u64) {
        self.left.store(n, Ordering::SeqCst);
    }

    /// Let everything through again.
    pub fn disarm(&self) {
        self.left.store(DISARMED, Ordering::SeqCst);
    }

    /// Operations of this kind seen so far.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Operations of this kind failed on purpose so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    fn pass(&self, what: &str) -> io::Result<()> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        let allowed = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                DISARMED => Some(DISARMED),
                0 => None,
                n => Some(n - 1),
            })
            .is_ok();
        if allowed {
            Ok(())
        } else {
            self.failed.fetch_add(1, Ordering::SeqCst);
            // EIO, as a failing disk reports it; the text says it was injected.
            let eio = io::Error::from_raw_os_error(5);
            Err(io::Error::new(eio.kind(), format!("injected {what} fault: {eio}")))
        }
    }
}

/// A countdown a sweep can arm: the backend's own, or the write-ahead log's.
pub trait Arm {
    /// Let `n` more operations through, then fail all later ones.
    fn arm(&self, n: u64);
    /// Operations failed on purpose so far.
    fn failed(&self) -> u64;
}

impl Arm for Trigger {
    fn arm(&self, n: u64) {
        Trigger::arm(self, n);
    }
    fn failed(&self) -> u64 {
        Trigger::failed(self)
    }
}

impl Arm for LogTrigger {
    fn arm(&self, n: u64) {
        LogTrigger::arm(self, n);
    }
    fn failed(&self) -> u64 {
        LogTrigger::failed(self)
    }
}

/// The switches a test holds while the engine owns the backend.
#[derive(Debug, Default)]
pub struct Faults {
    /// The write-ahead log's writes and fsyncs (a real file beside the store, failed by the
    /// engine's own test hook).
    pub log: Arc<LogFaults>,
    /// `StorageBackend::write`.
    pub write: Trigger,
    /// `StorageBackend::sync_data` (fsync).
    pub sync: Trigger,
    /// `StorageBackend::read`.
    pub read: Trigger,
    /// `StorageBackend::set_len` (growing or shrinking the file).
    pub set_len: Trigger,
}

impl Faults {
    /// Disarm every trigger.
    pub fn heal(&self) {
        for t in [&self.write, &self.sync, &self.read, &self.set_len] {
            t.disarm();
        }
        self.log.heal();
    }

    /// Faults injected so far, of every kind.
    pub fn injected(&self) -> u64 {
        [&self.write, &self.sync, &self.read, &self.set_len].iter().map(|t| t.failed()).sum::<u64>()
            + self.log.write.failed()
            + self.log.sync.failed()
    }
}

/// redb's file backend with [`Faults`] in front of it.
#[derive(Debug)]
pub struct FaultyBackend {
    inner: FileBackend,
    faults: Arc<Faults>,
}

impl FaultyBackend {
    /// Wrap the store file `file`; `faults` stays with the test to arm and read.
    pub fn new(file: File, faults: Arc<Faults>) -> Self {
        let inner = FileBackend::new(file).expect("redb file backend");
        Self { inner, faults }
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.faults.read.pass("read")?;
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.faults.set_len.pass("set_len")?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.faults.sync.pass("fsync")?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.faults.write.pass("write")?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// An engine with `config` on the store file at `config.path` (created if missing), reached
/// through a [`FaultyBackend`] driven by `faults`, its write-ahead log by `faults.log`;
/// `cache_bytes` as in `RedbStore::open_with_backend`.
pub fn open_engine(
    config: kathikon_core::EngineConfig,
    faults: &Arc<Faults>,
    cache_bytes: Option<usize>,
) -> kathikon_core::Result<kathikon_core::Engine> {
    let path = config.path.clone().expect("a store file");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .expect("open the store file");
    let store = kathikon_core::storage::RedbStore::open_with_backend_and_log_faults(
        FaultyBackend::new(file, faults.clone()),
        Some(&path),
        config.durability == kathikon_core::Durability::Fsync,
        cache_bytes,
        Some(faults.log.clone()),
    )?;
    kathikon_core::Engine::with_store(config, Arc::new(store))
}
