//! Failures injected into the write-ahead log's writes and syncs, for fault-injection tests.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

const DISARMED: u64 = u64::MAX;

/// A countdown to failure for one kind of log operation (test hook).
#[doc(hidden)]
#[derive(Debug)]
pub struct LogTrigger {
    left: AtomicU64,
    seen: AtomicU64,
    failed: AtomicU64,
}

impl Default for LogTrigger {
    fn default() -> Self {
        Self { left: AtomicU64::new(DISARMED), seen: AtomicU64::new(0), failed: AtomicU64::new(0) }
    }
}

impl LogTrigger {
    /// Let `n` more operations through, then fail every later one.
    pub fn arm(&self, n: u64) {
        self.left.store(n, Ordering::SeqCst);
    }

    /// Let everything through again.
    pub fn disarm(&self) {
        self.left.store(DISARMED, Ordering::SeqCst);
    }

    /// Operations failed on purpose so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// Operations seen so far.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    pub(super) fn pass(&self, what: &str) -> io::Result<()> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        let left = self.left.load(Ordering::SeqCst);
        if left == DISARMED {
            return Ok(());
        }
        if left > 0 {
            self.left.store(left - 1, Ordering::SeqCst);
            return Ok(());
        }
        self.failed.fetch_add(1, Ordering::SeqCst);
        // EIO, as a failing disk reports it; the text says it was injected.
        let eio = io::Error::from_raw_os_error(5);
        Err(io::Error::new(eio.kind(), format!("injected {what} fault: {eio}")))
    }
}

/// Failures to inject into the write-ahead log's writes (a failed write leaves half the
/// record in the file) and fsyncs. For fault-injection tests; not a stable API.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct LogFaults {
    /// Writes of records and of the zeroes that grow the file.
    pub write: LogTrigger,
    /// `fdatasync` after each record.
    pub sync: LogTrigger,
    /// A panic in the append after the record is durable: a bug in the log's own code, which
    /// no real fault can be made to produce on purpose.
    pub panic: LogTrigger,
}

impl LogFaults {
    /// Disarm every trigger.
    pub fn heal(&self) {
        self.write.disarm();
        self.sync.disarm();
        self.panic.disarm();
    }
}
