//! [`Engine`]: the public face of the core. Opens the store, rescues what a dead process left
//! executing, rebuilds the claim queues, and runs the writer thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Sender};

use crate::claim::{instant_at, ClaimQueues, Claimer};
use crate::clock::{Clock, Micros, SystemClock};
use crate::cron::{CronEntry, CronSlot};
use crate::error::{Error, Result};
use crate::finished::Finished;
use crate::job::{Ack, AckResult, Job, JobId, NewJob};
use crate::jobs::{Jobs, ListFilter};
use crate::limits::Taken;
use crate::listing::{self, BulkAction, Matcher, BULK_CHUNK};
use crate::metrics::MetricPoint;
use crate::plugins::{CronPlugin, Crontab, Plugins, Pruner, Scheduler};
use crate::processes::{Peers, ProcessInfo, ProcessRole};
use crate::queues::{QueueChange, QueueSettings};
use crate::request::RequestId;
use crate::retention::Retention;
use crate::state::JobState;
pub(crate) use crate::storage::canonical;
use crate::storage::{EntryKind, Quarantined, RedbStore, Store};
use crate::telemetry::{EngineEvent, Telemetry};
use crate::unique::Inserted;
use crate::writer::{self, Applier, Command, Shared, SharedApplier, Writer};

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
    /// How long finished jobs are kept before the pruner deletes them, per terminal state.
    pub retention: Retention,
    /// The time source.
    pub clock: Arc<dyn Clock>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            path: None,
            durability: Durability::Fsync,
            scheduler_interval: Duration::from_secs(1),
            prune_interval: Duration::from_secs(60),
            retention: Retention::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// What the last open found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Jobs found executing and made available again.
    pub rescued: u64,
    /// Jobs found executing with no attempts left, discarded.
    pub discarded: u64,
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
    /// The store file as configured, for `Debug`.
    path: Option<PathBuf>,
    recovery: Recovery,
    /// This process's id, noted as the claimer of its own claims.
    pid: u32,
    /// The storage failure that stopped the writer (set once, by the applier).
    failure: Arc<OnceLock<Error>>,
    /// The crontab its cron plugin fires.
    crontab: Arc<Crontab>,
    /// When it opened the store, on its clock.
    opened_at: Micros,
    /// The client sessions its socket server knows ([`Engine::serve_peers`]); weak, as the
    /// server holds the engine.
    peers: Mutex<Option<Weak<dyn Peers>>>,
    /// The waits for jobs to finish, which its writer wakes.
    finished: Arc<Finished>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Engine {
    /// Open the redb store at `config.path` (in memory when `None`), rescue jobs a dead
    /// process left executing, and start the writer.
    pub fn open(config: EngineConfig) -> Result<Engine> {
        let store =
            RedbStore::open(config.path.as_deref(), config.durability == Durability::Fsync)?;
        Self::with_store(config, Arc::new(store))
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

    /// An engine on `store`, already open: rescue the jobs a dead process left executing,
    /// rebuild the claim queues from the store, and start the writer. `config.path` and
    /// `config.durability` are not used here (the store was opened with them); they name the
    /// engine in `Debug`.
    pub fn with_store(config: EngineConfig, store: Arc<dyn Store>) -> Result<Engine> {
        let now = config.clock.now();
        let mut recovery = Recovery::default();
        let mut next_due = None;
        store.write(&mut |txn| {
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
            // Their batches count the rescues (a discard may finish one); the claim queues
            // are built from the store below, callbacks included.
            crate::plugins::batches::settle(txn, now, &mut |_| {})?;
            next_due = txn.next_due()?;
            Ok(())
        })?;
        let queues = Arc::new(ClaimQueues::default());
        let mut settings = Vec::new();
        store.read(&mut |txn| {
            settings = txn.entries(EntryKind::Queue)?;
            txn.available(&mut |(queue, priority, at, id)| {
                queues.get(&queue).push((priority, at, id), None);
            })
        })?;
        // A queue paused before a restart or a takeover stays paused, and a limited one
        // limited: both are set before anyone can claim.
        queues.settings.load(&settings, now.max(0) as u64)?;
        for stored in queues.settings.snapshot().1 {
            queues.get(&stored.name).set_paused(stored.paused);
        }
        crate::limits::load(&*store, &queues, now);
        let telemetry = Arc::new(Telemetry::default());
        let (tx, rx) = unbounded();
        let crontab = Arc::new(Crontab::default());
        let plugins = Plugins::new(vec![
            Box::new(Scheduler::new(next_due, config.scheduler_interval)),
            Box::new(Pruner::new(config.retention, config.prune_interval)),
            Box::new(CronPlugin::new(crontab.clone())),
            Box::new(crate::plugins::UniqueExpiry::new()),
            Box::new(crate::plugins::MetricsPlugin::new()),
            // Last: it takes the batch moves of everything before it in the transaction.
            Box::new(crate::plugins::Batches),
        ]);
        let finished = Arc::new(Finished::default());
        let applier = Applier::new(
            store.clone(),
            queues.clone(),
            telemetry.clone(),
            plugins,
            finished.clone(),
        );
        let failure = applier.failure();
        let applier: SharedApplier = Shared::new(applier);
        let writer = Writer { applier: applier.clone(), clock: config.clock.clone(), rx };
        let handle = std::thread::Builder::new()
            .name("kathikon-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::Storage(format!("cannot start writer thread: {e}")))?;
        Ok(Engine {
            tx,
            applier,
            store: RwLock::new(Some(store)),
            queues,
            telemetry,
            clock: config.clock,
            closed: AtomicBool::new(false),
            writer: Mutex::new(Some(handle)),
            path: config.path,
            recovery,
            pid: std::process::id(),
            failure,
            crontab,
            opened_at: now,
            peers: Mutex::new(None),
            finished,
        })
    }

    /// The storage failure after which this engine stopped writing (a failed commit, say on a
    /// full disk), or `None` while it writes. Once set it stays: redb refuses every write
    /// until the store is reopened, so the engine is of no more use and its host should close
    /// it (a worker process exits for its supervisor to restart it; see
    /// `docs/reliability.md`, "A full disk").
    pub fn failure(&self) -> Option<Error> {
        self.failure.get().cloned()
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

    /// [`Jobs::claim`] on behalf of process `pid` (the server's clients), which
    /// [`Jobs::claimers`] then names as the queue's claimer.
    pub fn claim_for(
        &self,
        pid: u32,
        queue: &str,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<Job>> {
        self.claim_as(pid, false, queue, max, timeout)
    }

    /// [`Engine::claim_for`], noting for [`Jobs::processes`] whether the owner itself claims.
    fn claim_as(
        &self,
        pid: u32,
        by_owner: bool,
        queue: &str,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<Job>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let q = self.queues.get(queue);
        if by_owner {
            q.note_owner_claim();
        }
        let deadline = Instant::now() + timeout;
        q.note_claim(self.queues.since_epoch(deadline), pid);
        let interrupts = q.interrupts();
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let seen = q.generation();
            // Paused: wait as if nothing were ready (a resume wakes the queue).
            let taken = if q.is_paused() {
                Taken { at: self.clock.now(), ..Taken::default() }
            } else {
                q.pop(max, &*self.clock)
            };
            let now = taken.at;
            if !taken.keys.is_empty() {
                let (queue, keys) = (q.clone(), taken.keys);
                let jobs = self.call(|reply| Command::Claim { queue, keys, at: now, reply })?;
                if !jobs.is_empty() {
                    return Ok(jobs);
                }
                continue; // every popped job had been cancelled meanwhile
            }
            if Instant::now() >= deadline || q.interrupts() != interrupts {
                return Ok(Vec::new());
            }
            // A full rate window makes room with time, not with a commit.
            let until = taken.retry_at.map_or(deadline, |at| deadline.min(instant_at(at, now)));
            q.park(seen, until);
        }
    }

    /// [`Jobs::wait_ready`] on behalf of process `pid` (the server's clients).
    pub fn wait_ready_for(
        &self,
        pid: u32,
        queues: &[String],
        seen: Option<u64>,
        timeout: Duration,
    ) -> Result<(u64, Vec<String>)> {
        self.wait_ready_as(pid, false, queues, seen, timeout)
    }

    /// [`Engine::wait_ready_for`], noting for [`Jobs::processes`] whether the owner itself
    /// waits.
    fn wait_ready_as(
        &self,
        pid: u32,
        by_owner: bool,
        queues: &[String],
        seen: Option<u64>,
        timeout: Duration,
    ) -> Result<(u64, Vec<String>)> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let deadline = Instant::now() + timeout;
        let until = self.queues.since_epoch(deadline);
        let watched: Vec<_> = queues
            .iter()
            .map(|name| {
                let q = self.queues.get(name);
                q.note_claim(until, pid);
                if by_owner {
                    q.note_owner_claim();
                }
                (name.clone(), q)
            })
            .collect();
        let found = self.queues.wait_ready(&watched, seen, deadline, &*self.clock);
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(found)
    }

    /// Let [`Jobs::processes`] list the client sessions `peers` (the socket server) knows.
    pub fn serve_peers(&self, peers: Weak<dyn Peers>) {
        *self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(peers);
    }

    /// The client sessions the socket server knows now (none when nothing serves the store).
    fn peers(&self) -> Vec<ProcessInfo> {
        let peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        peers.and_then(|p| p.upgrade()).map_or_else(Vec::new, |p| p.peers(self.clock.now()))
    }

    /// [`Jobs::insert`] sent as `request`: stored once however often it is sent (within
    /// [`crate::REQUEST_MEMORY`]); a repeat returns the jobs the first one stored, as they
    /// are now. For inserts that may be resent after their owner went away (over the socket).
    pub fn insert_once(&self, request: RequestId, jobs: Vec<NewJob>) -> Result<Vec<Job>> {
        self.insert_once_flagged(request, jobs).map(|inserted| inserted.jobs)
    }

    /// [`Engine::insert_once`], saying which jobs existed already ([`Jobs::insert_flagged`]).
    pub fn insert_once_flagged(&self, request: RequestId, jobs: Vec<NewJob>) -> Result<Inserted> {
        self.call_leading(|reply| Command::Insert { jobs, request: Some(request), reply })
    }

    /// Ask the writer to move these undecodable records aside (it checks them again).
    fn quarantine(&self, ids: Vec<JobId>) {
        if !ids.is_empty() && !self.closed.load(Ordering::Acquire) {
            let _ = self.tx.send(Command::Quarantine { ids });
        }
    }
}

impl Jobs for Engine {
    fn insert(&self, jobs: Vec<NewJob>) -> Result<Vec<Job>> {
        self.insert_flagged(jobs).map(|inserted| inserted.jobs)
    }

    fn claim(&self, queue: &str, max: usize, timeout: Duration) -> Result<Vec<Job>> {
        self.claim_as(self.pid, true, queue, max, timeout)
    }

    fn wait_ready(
        &self,
        queues: &[String],
        seen: Option<u64>,
        timeout: Duration,
    ) -> Result<(u64, Vec<String>)> {
        self.wait_ready_as(self.pid, true, queues, seen, timeout)
    }

    fn interrupt(&self, queue: &str) {
        self.queues.get(queue).interrupt();
    }

    fn ack(&self, acks: Vec<Ack>) -> Result<Vec<AckResult>> {
        self.call(|reply| Command::Ack { acks, reply: Some(reply) })
    }

    /// A crash before the next commit leaves the jobs executing, to be rescued (and run
    /// again) at the next open.
    fn ack_nowait(&self, acks: Vec<Ack>) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.tx.send(Command::Ack { acks, reply: None }).map_err(|_| Error::Closed)
    }

    fn cancel(&self, id: JobId) -> Result<(Job, JobState)> {
        self.call(|reply| Command::Cancel { id, reply })
    }

    fn retry(&self, id: JobId) -> Result<Job> {
        self.call(|reply| Command::Retry { id, reply })
    }

    fn get(&self, id: JobId) -> Result<Job> {
        let mut found = None;
        let result = self.store()?.read(&mut |txn| {
            found = txn.get(id)?;
            Ok(())
        });
        if let Err(Error::Corrupted { job: Some(damaged), .. }) = &result {
            if *damaged == id {
                self.quarantine(vec![id]);
            }
        }
        result?;
        found.ok_or(Error::JobNotFound(id))
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Job>> {
        let matcher = Matcher::new(filter)?;
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        self.store()?.read(&mut |txn| {
            out.clear();
            damaged.clear();
            listing::walk(txn, &matcher, &mut damaged, &mut |job| {
                out.push(job);
                filter.limit == 0 || out.len() < filter.limit
            })
        })?;
        self.quarantine(damaged);
        Ok(out)
    }

    /// Reads one small table; unlike the other reads, it does not make the writer publish
    /// what it keeps back, so an observer polling it does not slow the writer down.
    fn counts(&self) -> Result<Vec<(String, JobState, u64)>> {
        self.store()?.counts()
    }

    fn quarantined(&self) -> Result<Vec<Quarantined>> {
        let mut out = Vec::new();
        self.store()?.read(&mut |txn| {
            out = txn.quarantined()?;
            Ok(())
        })?;
        Ok(out)
    }

    fn oldest_available(&self, queue: &str) -> Result<Option<Micros>> {
        let mut out = None;
        self.store()?.read(&mut |txn| {
            out = txn.oldest_available(queue)?;
            Ok(())
        })?;
        Ok(out)
    }

    /// Read from the in-memory claim queue: never fails.
    fn ready_count(&self, queue: &str) -> Result<usize> {
        Ok(self.queues.get(queue).len())
    }

    /// Read from the in-memory claim queues: never fails.
    fn claimers(&self) -> Result<Vec<Claimer>> {
        Ok(self.queues.claimers())
    }

    fn prune(&self, age: Duration) -> Result<u64> {
        let before = self.clock.now() - age.as_micros() as i64;
        self.call(|reply| Command::Prune { before, reply })
    }

    fn sync(&self) -> Result<()> {
        self.call(|reply| Command::Sync { promote_until: None, reply })
    }

    fn sync_promoting(&self, until: Micros) -> Result<()> {
        self.call(|reply| Command::Sync { promote_until: Some(until), reply })
    }

    fn set_events(&self, on: bool) {
        self.telemetry.set_enabled(on);
    }

    fn next_events(&self, timeout: Duration) -> Vec<EngineEvent> {
        self.telemetry.collect(timeout)
    }

    fn now(&self) -> Micros {
        self.clock.now()
    }

    /// Stop the writer after it commits what it was sent, and release the store file.
    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for (_, q) in self.queues.all() {
            q.interrupt();
        }
        self.finished.close();
        let _ = self.tx.send(Command::Shutdown);
        if let Some(handle) =
            self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
        {
            let _ = handle.join();
        }
        self.store.write().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn set_queue(&self, queue: &str, change: QueueChange) -> Result<QueueSettings> {
        let claims = self.queues.get(queue);
        let name = queue.to_string();
        self.call(|reply| Command::SetQueue { queue: claims, name, change, reply })
    }

    /// Read from the queue's limiter: never fails.
    fn limit_usage(&self, queue: &str) -> Result<crate::limits::Usage> {
        let now = self.clock.now();
        let q = self.queues.get(queue);
        let mut limiter = q.limiter();
        Ok(limiter.as_mut().map(|l| l.usage(now)).unwrap_or_default())
    }

    /// Read from memory (the writer updates it after each committed change): never fails.
    fn queue_settings(&self) -> Result<(u64, Vec<QueueSettings>)> {
        Ok(self.queues.settings.snapshot())
    }

    /// Armed by the writer's next batch, which this waits for.
    fn set_crontab(&self, entries: Vec<CronEntry>) -> Result<()> {
        self.crontab.install(crate::cron::compile(entries)?);
        self.sync()
    }

    fn cron_slots(&self) -> Result<Vec<CronSlot>> {
        let mut out = Vec::new();
        self.store()?.read(&mut |txn| {
            out = txn.entries(EntryKind::Cron)?;
            Ok(())
        })?;
        Ok(out.into_iter().filter_map(|e| CronSlot::decode(&e.name, &e.value)).collect())
    }

    fn count(&self, filter: &ListFilter) -> Result<u64> {
        let matcher = Matcher::new(filter)?;
        if matcher.counts_suffice() {
            return Ok(matcher.sum_counts(&self.counts()?));
        }
        let mut n = 0;
        let mut damaged = Vec::new();
        self.store()?.read(&mut |txn| {
            n = 0;
            damaged.clear();
            listing::walk(txn, &matcher, &mut damaged, &mut |_| {
                n += 1;
                true
            })
        })?;
        self.quarantine(damaged);
        Ok(n)
    }

    fn bulk(&self, action: BulkAction, filter: &ListFilter) -> Result<u64> {
        let matcher = Arc::new(Matcher::new(filter)?);
        let mut page = ListFilter { limit: BULK_CHUNK, descending: false, ..filter.clone() };
        let mut total = 0;
        loop {
            let ids: Vec<JobId> = self.list(&page)?.iter().map(|j| j.id).collect();
            let Some(&last) = ids.last() else { break };
            let full = ids.len() == BULK_CHUNK;
            page.after = Some(last);
            let matcher = matcher.clone();
            total += self.call(|reply| Command::Bulk { action, ids, matcher, reply })?;
            if !full {
                break;
            }
        }
        Ok(total)
    }

    fn insert_flagged(&self, jobs: Vec<NewJob>) -> Result<Inserted> {
        self.call_leading(|reply| Command::Insert { jobs, request: None, reply })
    }

    /// Waits for what was sent before, then has the writer write the counts it holds.
    fn metrics(&self, since: Option<Micros>, queue: Option<&str>) -> Result<Vec<MetricPoint>> {
        self.sync()?;
        self.call(|reply| Command::FlushMetrics { reply })?;
        let mut out = Vec::new();
        self.store()?.read(&mut |txn| {
            out = txn.entries(EntryKind::Metrics)?;
            Ok(())
        })?;
        Ok(crate::metrics::points(out, since, queue, self.clock.now()))
    }

    fn set_progress(
        &self,
        id: JobId,
        attempt: u32,
        fraction: f64,
        note: Option<String>,
    ) -> Result<bool> {
        crate::progress::check(fraction, note.as_deref())?;
        let progress = crate::progress::Progress { attempt, fraction, note, at: self.clock.now() };
        Ok(self.call(|reply| Command::SetProgress { id, progress, reply })? == 1)
    }

    /// The owner's entry and the sessions' (see [`crate::processes`] for the order of reads).
    fn processes(&self) -> Result<Vec<ProcessInfo>> {
        let before = self.peers();
        let filter = ListFilter { state: Some(JobState::Executing), ..ListFilter::default() };
        let executing = self.list(&filter)?.into_iter().map(|job| job.id).collect();
        let after = self.peers();
        let now = self.clock.now();
        let owner = ProcessInfo {
            pid: self.pid,
            role: ProcessRole::Owner,
            hostname: crate::processes::hostname().to_string(),
            connected_at: self.opened_at,
            last_seen: now,
            lease_expires: None,
            jobs: Vec::new(),
            queues: self.queues.owner_queues(),
        };
        Ok(crate::processes::assemble(owner, executing, &before, after))
    }

    fn progress(&self, id: JobId) -> Result<Option<crate::progress::Progress>> {
        let mut out = None;
        self.store()?.read(&mut |txn| {
            out = txn.entry(EntryKind::Progress, &crate::progress::entry_name(id))?;
            Ok(())
        })?;
        Ok(out.and_then(|e| crate::progress::decode(&e.value)))
    }

    fn batch(&self, id: &str) -> Result<crate::batch::BatchStatus> {
        let mut out = None;
        self.store()?.read(&mut |txn| {
            out = txn.entry(EntryKind::Batch, id)?;
            Ok(())
        })?;
        let entry = out.ok_or_else(|| Error::BatchNotFound(id.to_string()))?;
        Ok(crate::batch::StoredBatch::decode(id, &entry.value)?.status)
    }

    /// Woken by the writer once the change that finished the job is committed and readable.
    fn wait_finished(&self, id: JobId, timeout: Duration) -> Result<Job> {
        self.finished.wait(id, timeout, Duration::MAX, &mut |_| self.get(id))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}
