//! [`PgStore`]: the job-store contract on `PostgreSQL`. Every verb is a transaction (or one
//! statement) on a connection of its own, so calls from many threads and processes run side
//! by side; the database's locks, not this process, keep them apart. Times come from the
//! store's clock, as the embedded engine's do, so tests move time by hand on both alike.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::acks::{AckGroup, Applier};
use super::claimers::{self, ClaimerLog};
use super::connection::{Connections, Prepared};
use super::cron::Cron;
use super::listen::Listener;
use super::metrics::Tally;
use super::rounds::Rounds;
use super::upkeep::{Upkeep, UpkeepThread};
use super::wake::{Wake, Woken};
use super::{bulk, change, claim, cron, finished, limits, nodes, queues, reads, schema, unique};
use crate::claim::Claimer;
use crate::clock::{Clock, Micros, SystemClock};
use crate::cron::{CronEntry, CronSlot};
use crate::error::{Error, Result};
use crate::finished::Finished;
use crate::job::{Ack, AckResult, Job, JobId, NewJob};
use crate::jobs::{Jobs, ListFilter};
use crate::listing::BulkAction;
use crate::metrics::MetricPoint;
use crate::processes::ProcessInfo;
use crate::progress::Progress;
use crate::queues::{QueueChange, QueueSettings};
use crate::retention::Retention;
use crate::state::JobState;
use crate::storage::Quarantined;
use crate::telemetry::EngineEvent;
use crate::unique::Inserted;

/// How to open a [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// The database: a `postgresql://user@host:port/dbname` URL or a `key=value` string.
    pub url: String,
    /// Create or upgrade the `kathikon` schema at open ([`schema::migrate`]); without it, a
    /// database whose schema is missing or older is refused ([`Error::SchemaTooOld`]).
    pub migrate: bool,
    /// The time the store runs on (due times, timestamps).
    pub clock: Arc<dyn Clock>,
    /// How often a waiting claim looks for jobs another process inserted.
    pub poll_interval: Duration,
    /// How long this node's lease runs from its last heartbeat: once it has run out, another
    /// node rescues the jobs this one holds.
    pub lease: Duration,
    /// How often this node renews its lease, from a thread of its own; `None` runs no such
    /// thread at all — the node never renews its lease nor does periodic work, as a process
    /// that stopped would (for tests of what other nodes then do).
    pub heartbeat: Option<Duration>,
    /// How often the node tries to lead and, while it leads, does the periodic work:
    /// promotion of due jobs and rescue of nodes whose lease expired.
    pub tick: Duration,
    /// How often the leader prunes finished jobs.
    pub prune_interval: Duration,
    /// How long finished jobs are kept before the leader prunes them, per terminal state.
    pub retention: Retention,
}

impl PgConfig {
    /// The database at `url`, migrated at open, on the wall clock, polling every 100 ms; a
    /// lease of 30 s renewed every 10 s (as a socket client's with the store's owner), and
    /// the periodic work every second (as the embedded scheduler's), pruning every minute
    /// with the default retention (as the embedded pruner's).
    pub fn new(url: impl Into<String>) -> PgConfig {
        let lease = Duration::from_secs(30);
        PgConfig {
            url: url.into(),
            migrate: true,
            clock: Arc::new(SystemClock),
            poll_interval: Duration::from_millis(100),
            lease,
            heartbeat: Some(lease / 3),
            tick: Duration::from_secs(1),
            prune_interval: Duration::from_secs(60),
            retention: Retention::default(),
        }
    }
}

/// A job store on `PostgreSQL`, registered as one node of the database.
pub struct PgStore {
    connections: Connections,
    clock: Arc<dyn Clock>,
    poll_interval: Duration,
    node: i64,
    wake: Arc<Wake>,
    /// This process's waits for jobs to finish, woken by the listener.
    finished: Arc<Finished>,
    closed: AtomicBool,
    /// The thread renewing the lease and doing the periodic work, if the config runs one.
    upkeep: Mutex<Option<UpkeepThread>>,
    /// Whether this node leads (its upkeep holds the leader lock).
    leading: Arc<AtomicBool>,
    /// The queues this node claims from.
    claimers: Arc<ClaimerLog>,
    /// This node's crontab, and the entries it fires (while it leads, and at each sync).
    cron: Arc<Mutex<Cron>>,
    /// The outcomes this node's verbs counted and has not written yet.
    metrics: Arc<Tally>,
    /// Acks, applied in groups by a thread of their own.
    acks: AckGroup,
    /// Claims, combined per queue into one transaction at a time.
    rounds: Rounds,
}

impl PgStore {
    /// Connect to `config.url`, migrate or check the schema, and register this process as a
    /// node.
    pub fn open(config: PgConfig) -> Result<PgStore> {
        let mut connections = Connections::new(&config.url)?;
        let now = config.clock.now();
        let lease = i64::try_from(config.lease.as_micros()).unwrap_or(i64::MAX);
        // One try to connect: a url or a server that is wrong fails the open at once.
        let mut client = connections.connect()?;
        if config.migrate {
            schema::migrate(&mut client)?;
        } else {
            schema::check(&mut client)?;
        }
        let node = nodes::register(&mut client, now, lease)?;
        // Its connections carry its name, so a rescue of this node can end them.
        let name = super::rescue::connection_name(node);
        client.execute("SELECT set_config('application_name', $1, false)", &[&name])?;
        connections.name(&name);
        connections.keep(client);
        let wake = Arc::new(Wake::default());
        // Deaf until the listener connects: waits poll.
        let finished = Arc::new(Finished::default());
        finished.relook(true);
        Listener {
            node,
            connections: connections.clone(),
            wake: wake.clone(),
            finished: finished.clone(),
        }
        .start()
        .map_err(|e| Error::Storage(format!("start the node's listener thread: {e}")))?;
        let leading = Arc::new(AtomicBool::new(false));
        let claimers = Arc::new(ClaimerLog::default());
        let cron = Arc::new(Mutex::new(Cron::default()));
        let metrics = Arc::new(Tally::default());
        let acks = AckGroup::start(Applier {
            connections: connections.clone(),
            node,
            tally: metrics.clone(),
        })
        .map_err(|e| Error::Storage(format!("start the node's ack thread: {e}")))?;
        let upkeep = match config.heartbeat {
            Some(heartbeat) => Some(
                Upkeep {
                    node,
                    connections: connections.clone(),
                    clock: config.clock.clone(),
                    lease_us: lease,
                    heartbeat,
                    tick: config.tick,
                    prune_interval: config.prune_interval,
                    retention: config.retention,
                    claimers: claimers.clone(),
                    leading: leading.clone(),
                    cron: cron.clone(),
                    metrics: metrics.clone(),
                }
                .start()
                .map_err(|e| Error::Storage(format!("start the node's upkeep thread: {e}")))?,
            ),
            None => None,
        };
        Ok(PgStore {
            connections,
            clock: config.clock,
            poll_interval: config.poll_interval,
            node,
            wake,
            finished,
            closed: AtomicBool::new(false),
            upkeep: Mutex::new(upkeep),
            leading,
            claimers,
            cron,
            metrics,
            acks,
            rounds: Rounds::default(),
        })
    }

    /// Which of `queues` have jobs ready to claim, due ones counted (as a claim would promote
    /// them), and a limited queue only while its limits have room; and when a rate limit
    /// that holds back one of them next has room.
    fn ready_queues(&self, queues: &[String]) -> Result<(Vec<String>, Option<Micros>)> {
        let now = self.clock.now();
        self.with_prepared(|c, p| {
            let promote = p.get(c, claim::promotion_sql(true))?;
            c.query_one(&promote, &[&now])?;
            let mut ready = Vec::new();
            let mut retry_at: Option<Micros> = None;
            for (queue, limits) in reads::ready_queues(c, p, queues)? {
                let Some(limits) = limits else {
                    ready.push(queue);
                    continue;
                };
                match limits::claimable(c, p, &queue, &limits, now)? {
                    Ok(()) => ready.push(queue),
                    Err(Some(at)) => retry_at = Some(retry_at.map_or(at, |t| t.min(at))),
                    Err(None) => {}
                }
            }
            Ok((ready, retry_at))
        })
    }

    /// The instant the store's clock reads `at` (now, if it passed); `None` for `None`.
    fn instant_of(&self, at: Option<Micros>) -> Option<Instant> {
        let ahead = at?.saturating_sub(self.clock.now()).max(0);
        Some(Instant::now() + Duration::from_micros(ahead as u64))
    }

    /// Whether this node is the leader now, which runs the periodic work of every node
    /// ([`super::leader`]).
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// This store's node id (its row in `kathikon.nodes`).
    pub fn node(&self) -> i64 {
        self.node
    }

    fn cron(&self) -> std::sync::MutexGuard<'_, Cron> {
        self.cron.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `work` on a connection, unless the store is closed.
    fn with<T>(&self, work: impl FnOnce(&mut postgres::Client) -> Result<T>) -> Result<T> {
        self.with_prepared(|client, _| work(client))
    }

    /// [`PgStore::with`], with the statements prepared on the connection.
    fn with_prepared<T>(
        &self,
        work: impl FnOnce(&mut postgres::Client, &mut Prepared) -> Result<T>,
    ) -> Result<T> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        self.connections.with_prepared(work)
    }

    /// `acks` with the time they are sent at.
    fn timed(&self, acks: Vec<Ack>) -> Vec<(Ack, Micros)> {
        let now = self.clock.now();
        acks.into_iter().map(|ack| (ack, now)).collect()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl Jobs for PgStore {
    /// Its members counted from their rows as of this call, with those deleted once finished
    /// ([`super::batches`]).
    fn batch(&self, id: &str) -> Result<crate::batch::BatchStatus> {
        self.with(|c| super::batches::status(c, id))
    }

    fn insert(&self, jobs: Vec<NewJob>) -> Result<Vec<Job>> {
        self.insert_flagged(jobs).map(|inserted| inserted.jobs)
    }

    /// Batch members open their batches in the insert's transaction ([`super::batches`]).
    fn insert_flagged(&self, jobs: Vec<NewJob>) -> Result<Inserted> {
        let now = self.clock.now();
        let inserted =
            self.with_prepared(|c, p| unique::insert_flagged(c, p, jobs, now, self.node))?;
        // This process's waits need not wait for the notification's round trip.
        let mut queues: Vec<&str> = inserted
            .jobs
            .iter()
            .filter(|j| j.state == JobState::Available)
            .map(|j| j.queue.as_str())
            .collect();
        queues.sort_unstable();
        queues.dedup();
        for queue in queues {
            self.wake.notified(queue);
        }
        Ok(inserted)
    }

    fn claim(&self, queue: &str, max: usize, timeout: Duration) -> Result<Vec<Job>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + timeout;
        let _claiming = self.claimers.begin(&[queue.to_string()]);
        let mut mark = self.wake.mark(queue);
        loop {
            let now = self.clock.now();
            let share = self.rounds.claim(queue, max, |n| {
                self.with_prepared(|c, p| {
                    claim::claim(c, p, queue, n, now, &*self.clock, self.node)
                })
            })?;
            if share.full {
                // More may be left: the next waiting claim looks ([`Wake`]).
                self.wake.pass(queue);
            }
            if !share.jobs.is_empty() || Instant::now() >= deadline {
                return Ok(share.jobs);
            }
            let look_by = self.instant_of(share.retry_at).map_or(deadline, |t| t.min(deadline));
            match self.wake.wait(queue, &mut mark, look_by, self.poll_interval) {
                Woken::Look => {}
                Woken::Interrupted => return Ok(Vec::new()),
                Woken::Closed => return Err(Error::Closed),
            }
        }
    }

    /// Waits on the ready generation ([`Wake`]: inserts here, notifications from the
    /// database, interrupts), then reads which of `queues` have available jobs.
    fn wait_ready(
        &self,
        queues: &[String],
        seen: Option<u64>,
        timeout: Duration,
    ) -> Result<(u64, Vec<String>)> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let deadline = Instant::now() + timeout;
        // Each watched queue counts as claimed from, as by a claim.
        let _claiming = self.claimers.begin(queues);
        let Some(seen) = seen else {
            let generation = self.wake.generation();
            return Ok((generation, self.ready_queues(queues)?.0));
        };
        // What is ready as the wait begins: a look without a notification (polling while
        // the listener is down, or after it reconnected) that finds a queue more ends the
        // wait too. A rate limit's next room is such a look's time too.
        let (before, mut retry_at) = self.ready_queues(queues)?;
        loop {
            let look_by = self.instant_of(retry_at).map_or(deadline, |t| t.min(deadline));
            let generation =
                self.wake.wait_past(seen, look_by, self.poll_interval).ok_or(Error::Closed)?;
            let (ready, next_room) = self.ready_queues(queues)?;
            retry_at = next_room;
            if generation != seen
                || Instant::now() >= deadline
                || ready.iter().any(|queue| !before.contains(queue))
            {
                return Ok((generation, ready));
            }
        }
    }

    fn interrupt(&self, queue: &str) {
        self.wake.interrupt(queue);
    }

    /// Applied with the acks of this node's other calls, in one transaction
    /// ([`super::acks`]); answered once it committed, each ack with its own result. An ack
    /// whose connection broke is sent once more, and recorded once either way.
    fn ack(&self, acks: Vec<Ack>) -> Result<Vec<AckResult>> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        self.acks.ack(self.timed(acks))
    }

    /// Queued for the next group of acks, which commits it after this returns, and before
    /// the next [`Jobs::sync`] returns.
    fn ack_nowait(&self, acks: Vec<Ack>) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        self.acks.send(self.timed(acks))
    }

    fn cancel(&self, id: JobId) -> Result<(Job, JobState)> {
        let now = self.clock.now();
        self.with(|c| change::cancel(c, id, now, &self.metrics))
    }

    fn retry(&self, id: JobId) -> Result<Job> {
        let now = self.clock.now();
        self.with(|c| change::retry(c, id, now))
    }

    fn get(&self, id: JobId) -> Result<Job> {
        self.with(|c| reads::get(c, id))
    }

    /// Registered in `kathikon.awaited` for the whole wait, woken by `kathikon_done` through
    /// the listener (polling every `poll_interval` only while the listener is down).
    fn wait_finished(&self, id: JobId, timeout: Duration) -> Result<Job> {
        let waiter = finished::new_waiter();
        let mut registered = false;
        let found = self.finished.wait(id, timeout, self.poll_interval, &mut |first| {
            if first {
                registered = true;
                self.with(|c| finished::register(c, self.node, waiter, id))
            } else {
                self.with(|c| reads::get(c, id))
            }
        });
        if registered {
            // A row left by a failure goes with the node's row.
            let _ = self.with(|c| finished::unregister(c, self.node, waiter, id));
        }
        found
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Job>> {
        self.with(|c| reads::list(c, filter))
    }

    fn counts(&self) -> Result<Vec<(String, JobState, u64)>> {
        self.with(reads::counts)
    }

    /// Always empty: the schema types every column, so no row is ever moved aside; a row
    /// that does not make a job is an error naming it.
    fn quarantined(&self) -> Result<Vec<Quarantined>> {
        self.with(|_| Ok(Vec::new()))
    }

    fn oldest_available(&self, queue: &str) -> Result<Option<Micros>> {
        self.with(|c| reads::oldest_available(c, queue))
    }

    fn ready_count(&self, queue: &str) -> Result<usize> {
        self.with(|c| reads::ready_count(c, queue))
    }

    /// This node's claimers as they are, and the other nodes' as of their last heartbeat.
    fn claimers(&self) -> Result<Vec<Claimer>> {
        let now = self.clock.now();
        let mut all = self.with(|c| claimers::others(c, self.node, now))?;
        all.extend(self.claimers.local(std::process::id()));
        Ok(claimers::merge(all))
    }

    fn prune(&self, age: Duration) -> Result<u64> {
        let before = self.clock.now().saturating_sub(age.as_micros() as i64);
        self.with(|c| change::prune(c, before, self.clock.now()))
    }

    /// Commits the acks sent without waiting ([`Jobs::ack_nowait`]); every other write is
    /// committed when its call returns. Then promotes every due job and fires every cron
    /// slot that has come, as the leader's next tick would (safe from any node: a slot fires
    /// once whoever fires it).
    fn sync(&self) -> Result<()> {
        self.acks.flush();
        let now = self.clock.now();
        self.with(|c| {
            claim::promote(c, now, false)?;
            self.cron().step(c, self.node, now)
        })
    }

    fn sync_promoting(&self, until: Micros) -> Result<()> {
        let until = until.max(self.clock.now());
        self.with(|c| claim::promote(c, until, false)).map(drop)
    }

    /// Events happen in the process that makes them; this store collects none yet.
    fn set_events(&self, _on: bool) {}

    /// None to collect (see [`PgStore::set_events`]): waits out `timeout`, so a poller does
    /// not spin.
    fn next_events(&self, timeout: Duration) -> Vec<EngineEvent> {
        std::thread::sleep(timeout);
        Vec::new()
    }

    fn now(&self) -> Micros {
        self.clock.now()
    }

    /// Commits the acks sent, hands back the jobs this node still holds (rescued, as a lost
    /// worker's are), deletes its node row, writes its metrics counts and closes the
    /// connections. A database that cannot be reached leaves the jobs to be rescued when the
    /// node's lease expires, and loses the counts.
    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.wake.close();
        self.finished.close();
        // Before the node lets go of its jobs: an outcome sent is recorded, not rescued.
        self.acks.stop();
        // Stopped first: its connection (and, when it leads, the leadership) goes with it.
        if let Some(mut upkeep) =
            self.upkeep.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
        {
            upkeep.stop();
        }
        let now = self.clock.now();
        let _ = self.connections.with(|c| {
            nodes::leave(c, self.node, now, &self.metrics)?;
            self.metrics.flush(c)
        });
        self.connections.close();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Once a pause returns no claim of the queue succeeds on any node ([`super::queues`]); a
    /// resume notifies the queue, waking claims everywhere.
    fn set_queue(&self, queue: &str, change: QueueChange) -> Result<QueueSettings> {
        self.with(|c| queues::set(c, queue, change))
    }

    /// Read from the database (a round trip, not memory as at an embedded store's owner).
    /// Limits are refused on `PostgreSQL` (see `queues::set`): none is ever in use.
    fn limit_usage(&self, queue: &str) -> Result<crate::limits::Usage> {
        let now = self.clock.now();
        self.with_prepared(|c, p| limits::usage(c, p, queue, now))
    }

    fn queue_settings(&self) -> Result<(u64, Vec<QueueSettings>)> {
        self.with(queues::all)
    }

    /// Stores the crontab as this node's and arms it at once (what has to fire now, a missed
    /// slot's catch-up or `@reboot`, is fired before this returns); the leader fires it from
    /// then on, with every other node's ([`super::cron`]).
    fn set_crontab(&self, entries: Vec<CronEntry>) -> Result<()> {
        let now = self.clock.now();
        self.with(|c| {
            let mut cron = self.cron();
            cron.declare(c, self.node, entries, now)?;
            cron.step(c, self.node, now)
        })
    }

    fn cron_slots(&self) -> Result<Vec<CronSlot>> {
        self.with(cron::slots)
    }

    /// The stored minutes with this node's counts not written yet: every outcome this node
    /// ended before the call, and the other nodes' as of their last heartbeat
    /// ([`super::metrics`]).
    fn metrics(&self, since: Option<Micros>, queue: Option<&str>) -> Result<Vec<MetricPoint>> {
        let now = self.clock.now();
        self.with(|c| self.metrics.read(c, since, queue, now))
    }

    fn set_progress(
        &self,
        id: JobId,
        attempt: u32,
        fraction: f64,
        note: Option<String>,
    ) -> Result<bool> {
        crate::progress::check(fraction, note.as_deref())?;
        let progress = Progress { attempt, fraction, note, at: self.clock.now() };
        self.with(|c| super::progress::set(c, id, &progress))
    }

    fn progress(&self, id: JobId) -> Result<Option<Progress>> {
        self.with(|c| super::progress::get(c, id))
    }

    fn count(&self, filter: &ListFilter) -> Result<u64> {
        self.with(|c| reads::count(c, filter))
    }

    fn bulk(&self, action: BulkAction, filter: &ListFilter) -> Result<u64> {
        let now = self.clock.now();
        self.with(|c| bulk::bulk(c, action, filter, now))
    }

    /// Every node row, this node last with its live queues ([`super::processes`]).
    fn processes(&self) -> Result<Vec<ProcessInfo>> {
        let queues = self.claimers.local(std::process::id()).into_iter().map(|c| c.queue).collect();
        self.with(|c| super::processes::list(c, self.node, queues))
    }
}
