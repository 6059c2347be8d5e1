//! [`Engine`]: the public face of the core. Opens the store, rescues what a dead process left
//! executing, rebuilds the claim queues, and runs the writer thread.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Sender};

use crate::claim::ClaimQueues;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::job::{Ack, AckResult, Job, JobId, NewJob};
use crate::state::JobState;
use crate::storage::{RedbStore, Store};
use crate::telemetry::{EngineEvent, Telemetry};
use crate::writer::{self, Applier, Command, Intervals, Shared, SharedApplier, Writer};

/// When a commit counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Each commit waits for fsync: an acknowledged change survives a power loss.
    #[default]
    Fsync,
    /// A file store's log is written but not synced: a killed process loses nothing, a
    /// power loss or an OS crash what was written since the last checkpoint (at most ~2 s).
    /// An in-memory store loses everything at close either way.
    None,
}

impl Durability {
    /// Every setting's name, in declaration order (the values of Python's `durability=`).
    pub const NAMES: [&'static str; 2] = ["fsync", "none"];

    /// This setting's name, one of [`Durability::NAMES`].
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => Self::NAMES[0],
            Durability::None => Self::NAMES[1],
        }
    }

    /// The setting named `name`, if it is one of [`Durability::NAMES`].
    pub fn from_name(name: &str) -> Option<Durability> {
        [Durability::Fsync, Durability::None].into_iter().find(|d| d.as_str() == name)
    }
}

/// How to open an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The store file; `None` for an in-memory store that vanishes on close.
    pub path: Option<PathBuf>,
    /// Commit durability.
    pub durability: Durability,
    /// Longest the scheduler sleeps without looking (it normally wakes at the next due time).
    pub scheduler_interval: Duration,
    /// How often the pruner runs.
    pub prune_interval: Duration,
    /// How long finished jobs are kept before the pruner deletes them.
    pub retention: Duration,
    /// The time source.
    pub clock: Arc<dyn Clock>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            path: None,
            durability: Durability::Fsync,
            scheduler_interval: Duration::from_secs(1),
            prune_interval: Duration::from_secs(30),
            retention: Duration::from_secs(24 * 3600),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Which jobs [`Engine::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs in this queue.
    pub queue: Option<String>,
    /// Only jobs of this worker.
    pub worker: Option<String>,
    /// Only jobs with an id above this one (for paging).
    pub after: Option<JobId>,
    /// At most this many; 0 means no limit.
    pub limit: usize,
}

/// What the last open found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Jobs found executing and made available again.
    pub rescued: u64,
    /// Jobs found executing with no attempts left, discarded.
    pub discarded: u64,
}

/// Paths open in this process: redb refuses a second open anyway, but this lets the error say
/// "in this process" instead of blaming another one.
fn open_paths() -> &'static Mutex<HashSet<PathBuf>> {
    static OPEN: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// The path as the OS resolves it (symlinks and `..` followed), so two spellings of one file
/// are recognised as the same store. The file itself may not exist yet.
pub(crate) fn canonical(path: &std::path::Path) -> std::io::Result<PathBuf> {
    if path.exists() {
        return std::fs::canonicalize(path);
    }
    let abs = std::path::absolute(path)?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) if parent.exists() => {
            Ok(std::fs::canonicalize(parent)?.join(name))
        }
        _ => Ok(abs),
    }
}

/// The job engine. Cheap to share between threads (`&self` everywhere).
pub struct Engine {
    tx: Sender<Command>,
    /// Shared with the writer thread: an insert that finds it idle applies itself.
    applier: SharedApplier,
    store: RwLock<Option<Arc<dyn Store>>>,
    queues: Arc<ClaimQueues>,
    telemetry: Arc<Telemetry>,
    clock: Arc<dyn Clock>,
    closed: AtomicBool,
    writer: Mutex<Option<JoinHandle<()>>>,
    registered_path: Option<PathBuf>,
    recovery: Recovery,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("path", &self.registered_path).finish_non_exhaustive()
    }
}

impl Engine {
    /// Open the store, rescue jobs a dead process left executing, and start the writer.
    pub fn open(config: EngineConfig) -> Result<Engine> {
        Self::open_on(config, RedbStore::open)
    }

    /// Like [`Engine::open`], but the store lives on `backend` instead of the file at
    /// `config.path` (which still names the store in errors and counts as open in this
    /// process), with a page cache of `cache_bytes` (`None`: redb's default; 0 sends every
    /// read to the backend). For fault-injection tests: wrap `redb::backends::FileBackend` in
    /// a backend that fails reads, writes or syncs on command. Not part of the stable API.
    #[doc(hidden)]
    pub fn open_with_backend(
        config: EngineConfig,
        backend: impl redb::StorageBackend,
        cache_bytes: Option<usize>,
    ) -> Result<Engine> {
        Self::open_on(config, |path, fsync| {
            RedbStore::open_with_backend(backend, path, fsync, cache_bytes)
        })
    }

    /// [`Engine::open_with_backend`], with `log_faults` injected into the write-ahead log
    /// kept beside `config.path`. For fault-injection tests; not part of the stable API.
    #[doc(hidden)]
    pub fn open_with_log_faults(
        config: EngineConfig,
        backend: impl redb::StorageBackend,
        cache_bytes: Option<usize>,
        log_faults: Arc<crate::storage::LogFaults>,
    ) -> Result<Engine> {
        Self::open_on(config, |path, fsync| {
            RedbStore::open_with_backend_and_log_faults(
                backend,
                path,
                fsync,
                cache_bytes,
                Some(log_faults),
            )
        })
    }

    /// Make every commit so far durable in the store file itself and start its write-ahead
    /// log afresh (this happens on its own every few seconds and at close). For tests; not
    /// part of the stable API.
    #[doc(hidden)]
    pub fn checkpoint(&self) -> Result<()> {
        // Through the applier, so it waits for the writer's idle work (filing new jobs) and
        // fails as every write does once that work failed.
        match writer::lock(&self.applier).as_mut() {
            Some(applier) => applier.checkpoint(),
            None => Err(Error::Closed),
        }
    }

    /// [`Engine::open`] with the store made by `make_store(path, fsync)`.
    fn open_on(
        config: EngineConfig,
        make_store: impl FnOnce(Option<&std::path::Path>, bool) -> Result<RedbStore>,
    ) -> Result<Engine> {
        let registered_path = match &config.path {
            Some(path) => {
                let abs = canonical(path)
                    .map_err(|e| Error::Storage(format!("bad path {}: {e}", path.display())))?;
                let mut open =
                    open_paths().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if !open.insert(abs.clone()) {
                    return Err(Error::StorageLocked {
                        path: path.clone(),
                        holder: Some(std::process::id()),
                        same_process: true,
                    });
                }
                Some(abs)
            }
            None => None,
        };
        let unregister = |e: Error| {
            if let Some(p) = &registered_path {
                open_paths().lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(p);
            }
            e
        };
        let store: Arc<dyn Store> = Arc::new(
            make_store(config.path.as_deref(), config.durability == Durability::Fsync)
                .map_err(unregister)?,
        );
        let now = config.clock.now();
        let mut recovery = Recovery::default();
        let mut next_due = None;
        store
            .write(&mut |txn| {
                recovery = Recovery::default();
                for id in txn.executing()? {
                    let Some(mut job) = txn.get(id)? else { continue };
                    let before = job.placement();
                    job.rescue(now)?;
                    txn.put(Some(before), &job)?;
                    if job.state == JobState::Discarded {
                        recovery.discarded += 1;
                    } else {
                        recovery.rescued += 1;
                    }
                }
                next_due = txn.next_due()?;
                Ok(())
            })
            .map_err(unregister)?;
        let queues = Arc::new(ClaimQueues::default());
        store
            .read(&mut |txn| {
                txn.available(&mut |(queue, priority, at, id)| {
                    queues.get(&queue).push((priority, at, id));
                })
            })
            .map_err(unregister)?;
        let telemetry = Arc::new(Telemetry::default());
        let (tx, rx) = unbounded();
        let intervals =
            Intervals { scheduler: config.scheduler_interval, prune: config.prune_interval };
        let applier: SharedApplier = Shared::new(Applier {
            store: store.clone(),
            queues: queues.clone(),
            telemetry: telemetry.clone(),
            retention: config.retention,
            next_due,
            failed: None,
        });
        let writer = Writer {
            applier: applier.clone(),
            telemetry: telemetry.clone(),
            clock: config.clock.clone(),
            rx,
            intervals,
        };
        let handle = std::thread::Builder::new()
            .name("kathikon-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| unregister(Error::Storage(format!("cannot start writer thread: {e}"))))?;
        Ok(Engine {
            tx,
            applier,
            store: RwLock::new(Some(store)),
            queues,
            telemetry,
            clock: config.clock,
            closed: AtomicBool::new(false),
            writer: Mutex::new(Some(handle)),
            registered_path,
            recovery,
        })
    }

    /// What the open found executing and rescued.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn call<T>(&self, make: impl FnOnce(Sender<Result<T>>) -> Command) -> Result<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let (reply, answer) = bounded(1);
        self.tx.send(make(reply)).map_err(|_| Error::Closed)?;
        answer.recv().map_err(|_| Error::Closed)?
    }

    /// [`Engine::call`], except that when the writer is idle (nothing queued, nobody
    /// applying) the command is applied here, in the caller's thread, saving the two thread
    /// hand-offs. Only for commands whose order against calls still on their way to the writer
    /// does not matter (inserts: each makes new jobs).
    fn call_leading<T>(&self, make: impl FnOnce(Sender<Result<T>>) -> Command) -> Result<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let idle = if self.tx.is_empty() { writer::lead(&self.applier) } else { None };
        let Some(mut guard) = idle else { return self.call(make) };
        let Some(applier) = guard.as_mut() else { return Err(Error::Closed) };
        let (reply, answer) = bounded(1);
        let wake = applier.apply_own(make(reply), self.clock.now());
        drop(guard);
        if wake {
            let _ = self.tx.send(Command::Wake);
        }
        answer.recv().map_err(|_| Error::Closed)?
    }

    fn store(&self) -> Result<Arc<dyn Store>> {
        self.store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(Error::Closed)
    }

    /// Insert jobs in one transaction: all or none.
    ///
    /// Returns once the jobs are committed (durable with [`Durability::Fsync`]). On
    /// [`Error::InvalidJob`] nothing was written; on [`Error::Storage`] the outcome is unknown.
    pub fn insert(&self, jobs: Vec<NewJob>) -> Result<Vec<Job>> {
        self.call_leading(|reply| Command::Insert { jobs, reply })
    }

    /// Claim up to `max` jobs from `queue`, waiting up to `timeout` for one to be ready.
    ///
    /// Returned jobs are durably marked executing with their attempt counted. Returns an
    /// empty list on timeout or after [`Engine::interrupt`], and at once when `max` is 0.
    pub fn claim(&self, queue: &str, max: usize, timeout: Duration) -> Result<Vec<Job>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let q = self.queues.get(queue);
        let deadline = Instant::now() + timeout;
        let interrupts = q.interrupts();
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let seen = q.generation();
            let keys = q.pop(max);
            if !keys.is_empty() {
                let queue = q.clone();
                let jobs = self.call(|reply| Command::Claim { queue, keys, reply })?;
                if !jobs.is_empty() {
                    return Ok(jobs);
                }
                continue; // every popped job had been cancelled meanwhile
            }
            if Instant::now() >= deadline || q.interrupts() != interrupts {
                return Ok(Vec::new());
            }
            q.park(seen, deadline);
        }
    }

    /// Make claims waiting on `queue` return now.
    pub fn interrupt(&self, queue: &str) {
        self.queues.get(queue).interrupt();
    }

    /// Record attempts' outcomes and wait until they are committed.
    pub fn ack(&self, acks: Vec<Ack>) -> Result<Vec<AckResult>> {
        self.call(|reply| Command::Ack { acks, reply: Some(reply) })
    }

    /// Record attempts' outcomes without waiting. A crash before the next commit leaves the
    /// jobs executing, to be rescued (and run again) at the next open; [`Engine::sync`] waits.
    pub fn ack_nowait(&self, acks: Vec<Ack>) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.tx.send(Command::Ack { acks, reply: None }).map_err(|_| Error::Closed)
    }

    /// Cancel a job. Returns the job as it now is and the state it was in. A job already
    /// completed, cancelled or discarded is returned unchanged.
    pub fn cancel(&self, id: JobId) -> Result<(Job, JobState)> {
        self.call(|reply| Command::Cancel { id, reply })
    }

    /// Make a job available now (an available job is returned unchanged; an executing one is
    /// refused).
    pub fn retry(&self, id: JobId) -> Result<Job> {
        self.call(|reply| Command::Retry { id, reply })
    }

    /// Delete finished jobs that finished more than `age` ago; returns how many.
    pub fn prune(&self, age: Duration) -> Result<u64> {
        let before = self.clock.now() - age.as_micros() as i64;
        self.call(|reply| Command::Prune { before, reply })
    }

    /// Take jobs back from a worker that lost them: each `(id, attempt)` still executing that
    /// attempt becomes available again (or discarded with no attempts left), with an error
    /// entry starting with `cause`. Returns how many were rescued.
    pub fn rescue(&self, jobs: Vec<(JobId, u32)>, cause: String) -> Result<u64> {
        if jobs.is_empty() {
            return Ok(0);
        }
        self.call(|reply| Command::Rescue { jobs, cause, reply })
    }

    /// Record, in each job's history, a report refused because its worker had lost the job:
    /// `(id, attempt, text)`. The jobs' states are not touched. Returns how many were noted.
    pub fn note_fenced(&self, notes: Vec<(JobId, u32, String)>) -> Result<u64> {
        if notes.is_empty() {
            return Ok(0);
        }
        self.call(|reply| Command::Fence { notes, reply })
    }

    /// Wait until everything sent before this call is committed, with due jobs promoted.
    pub fn sync(&self) -> Result<()> {
        self.call(|reply| Command::Sync { promote_until: None, reply })
    }

    /// Like [`Engine::sync`], and also promote every scheduled or retryable job due before
    /// `until` as if that time had come (for tests: "run scheduled jobs now").
    pub fn sync_promoting(&self, until: crate::Micros) -> Result<()> {
        self.call(|reply| Command::Sync { promote_until: Some(until), reply })
    }

    /// Job counts per queue and state, exact as of the last acknowledged write. Reads one
    /// small table; unlike the other reads, it does not make the writer publish what it keeps
    /// back, so an observer polling it does not slow the writer down.
    pub fn counts(&self) -> Result<Vec<(String, JobState, u64)>> {
        self.store()?.counts()
    }

    /// When the oldest available job of `queue` became due, if it has any.
    pub fn oldest_available(&self, queue: &str) -> Result<Option<crate::Micros>> {
        let mut out = None;
        self.store()?.read(&mut |txn| {
            out = txn.oldest_available(queue)?;
            Ok(())
        })?;
        Ok(out)
    }

    /// The job with this id, as last committed. A record that no longer decodes is
    /// [`Error::Corrupted`] naming the job, and is moved to the quarantine table.
    pub fn get(&self, id: JobId) -> Result<Job> {
        let mut found = None;
        let result = self.store()?.read(&mut |txn| {
            found = txn.get(id)?;
            Ok(())
        });
        if let Err(Error::Corrupted { detail, .. }) = &result {
            if detail.starts_with(&format!("job {id}: ")) {
                self.quarantine(vec![id]);
            }
        }
        result?;
        found.ok_or(Error::JobNotFound(id))
    }

    /// Jobs matching `filter`, in id order. A record that no longer decodes is left out and
    /// moved to the quarantine table (see [`Engine::quarantined`]).
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Job>> {
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        self.store()?.read(&mut |txn| {
            out.clear();
            damaged.clear();
            txn.scan(
                filter.after,
                &mut |job| {
                    let keep = filter.state.is_none_or(|s| s == job.state)
                        && filter.queue.as_ref().is_none_or(|q| *q == job.queue)
                        && filter.worker.as_ref().is_none_or(|w| *w == job.worker);
                    if keep {
                        out.push(job);
                    }
                    filter.limit == 0 || out.len() < filter.limit
                },
                &mut damaged,
            )
        })?;
        self.quarantine(damaged);
        Ok(out)
    }

    /// Records that no longer decoded and were moved aside, by id: each with when, why, and
    /// its bytes as found. Jobs whose record was quarantined are gone from every other call;
    /// [`Engine::get`] says so with [`Error::Corrupted`].
    pub fn quarantined(&self) -> Result<Vec<crate::storage::Quarantined>> {
        let mut out = Vec::new();
        self.store()?.read(&mut |txn| {
            out = txn.quarantined()?;
            Ok(())
        })?;
        Ok(out)
    }

    /// Ask the writer to move these undecodable records aside (it checks them again).
    fn quarantine(&self, ids: Vec<JobId>) {
        if !ids.is_empty() && !self.closed.load(Ordering::Acquire) {
            let _ = self.tx.send(Command::Quarantine { ids });
        }
    }

    /// How many jobs are ready to claim in `queue` right now.
    pub fn ready_count(&self, queue: &str) -> usize {
        self.queues.get(queue).len()
    }

    /// Start or stop collecting [`EngineEvent`]s.
    pub fn set_events(&self, on: bool) {
        self.telemetry.set_enabled(on);
    }

    /// Wait up to `timeout` for engine events and return those waiting.
    pub fn next_events(&self, timeout: Duration) -> Vec<EngineEvent> {
        self.telemetry.collect(timeout)
    }

    /// Stop the writer after it commits what it was sent, and release the store file.
    /// Claims in progress return [`Error::Closed`]. Calling it again does nothing.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for (_, q) in self.queues.all() {
            q.interrupt();
        }
        let _ = self.tx.send(Command::Shutdown);
        if let Some(handle) =
            self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
        {
            let _ = handle.join();
        }
        self.store.write().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(p) = &self.registered_path {
            open_paths().lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(p);
        }
    }

    /// Whether [`Engine::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}
