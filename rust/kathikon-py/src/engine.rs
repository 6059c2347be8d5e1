//! `Engine`: the core engine for Python. Every method that waits or touches storage runs with
//! the GIL released.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kathikon_core::clock::ManualClock;
use kathikon_core::ipc::{Node, NodeConfig};
use kathikon_core::pg::{PgConfig, PgStore};
use kathikon_core::watchdog::{Hooks, Stopped, Timeout, Watchdog};
use kathikon_core::{
    limits::{GlobalLimit, RateLimit},
    Ack, AckResult, AppRole, AppStore, BatchEvent, Clock, Durability, EngineConfig, EngineEvent,
    Error, JobState, ListFilter, NewJob, QueueChange, QueueSettings, Retention, SystemClock,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::convert::AckTuple;
use crate::errors::{map_error, ConfigurationError, IntoPy, InvalidJobError, StorageError};
use crate::filter::PyListFilter;
use crate::job::{untracked, PyJob, PyJobSpec};
use crate::progress::Reporter;
use crate::retention::RetentionArg;

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        ConfigurationError::new_err(format!(
            "{name}={value} is not a usable duration; pass a finite number of seconds >= 0"
        ))
    })
}

/// `(id, quarantined_at µs, reason, bytes)`.
type QuarantinedRow<'py> = (u64, i64, String, Bound<'py, PyBytes>);

/// An error opening a `PostgreSQL` database: a url (or a TLS setting in it) that cannot be used
/// is a setting of the app's, not a job's.
#[allow(clippy::needless_pass_by_value)] // used as `map_err(url_error)`
fn url_error(error: Error) -> PyErr {
    match error {
        Error::InvalidJob(text) => ConfigurationError::new_err(text),
        other => map_error(other),
    }
}

fn records(py: Python<'_>, jobs: Vec<kathikon_core::Job>) -> PyResult<Vec<Bound<'_, PyJob>>> {
    jobs.into_iter().map(|job| untracked(py, PyJob::new(job))).collect()
}

/// The jobs of a list of `JobSpec`s; anything else in it is `InvalidJobError` naming it.
fn new_jobs(specs: &Bound<'_, PyList>) -> PyResult<Vec<NewJob>> {
    let mut jobs: Vec<NewJob> = Vec::with_capacity(specs.len());
    for (i, item) in specs.iter().enumerate() {
        let Ok(spec) = item.cast::<PyJobSpec>() else {
            let shown: String = item.repr()?.to_string().chars().take(60).collect();
            return Err(InvalidJobError::new_err(format!(
                "insert_all item {i} is {shown}, not an unsaved job; build items with \
                 worker.new(args) or app.new(worker, args)"
            )));
        };
        jobs.push(spec.get().job.clone());
    }
    Ok(jobs)
}

/// A batch's status as Python receives it (see `Engine.batch`).
type BatchRow =
    (String, i64, Vec<(&'static str, u64)>, Option<i64>, Vec<(&'static str, String, Option<u64>)>);

/// The exit status of a worker process ended to stop a job (past its timeout, or cancelled).
const STOPPED_EXIT: i32 = 70;

/// A watched job must stop (its timeout's failure is stored, or it was cancelled): end the
/// process at once. Not `exit`: no atexit handler or interpreter shutdown may wait on the
/// thread that will not stop.
fn stop_process(id: u64, why: Stopped) {
    use std::io::Write;
    let what = match why {
        Stopped::TimedOut => "ran past its timeout and was recorded as failed",
        Stopped::Cancelled => "was cancelled while it ran (its worker has cancel=\"kill\")",
    };
    // Not `eprintln!`, which panics when stderr is gone: the process must end either way.
    let _ = writeln!(
        std::io::stderr(),
        "kathikon: job {id} {what}; worker process {} exits (status {STOPPED_EXIT}) to stop it, \
         and its other jobs are rescued",
        std::process::id()
    );
    // SAFETY: `_exit` ends the process without running anything of it; nothing follows.
    unsafe { libc::_exit(STOPPED_EXIT) }
}

/// The job engine over one store: a store file this process owns (and serves to others on a
/// socket beside it) or talks to the process that owns, or a `PostgreSQL` database this
/// process is one node of.
#[pyclass(frozen, module = "kathikon._native", name = "Engine")]
pub(crate) struct PyEngine {
    inner: Arc<AppStore>,
    /// Progress reported by the jobs this process claimed through this engine.
    progress: Arc<Reporter>,
    /// Set when the engine runs on a hand-moved clock (`kathikon.testing`).
    manual_clock: Option<Arc<ManualClock>>,
    /// Stops a worker process's sync jobs past their timeout or cancelled, started by the
    /// first one watched.
    watchdog: Mutex<Option<Arc<Watchdog>>>,
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (path, *, fsync=true, scheduler_interval=1.0, prune_interval=60.0, retention_period=None, manual_clock=None, connect=true, lease=30.0, takeover=true, url=None, migrate=false, poll_interval=1.0))]
    #[allow(clippy::too_many_arguments, clippy::fn_params_excessive_bools)] // keyword-only in Python
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        fsync: bool,
        scheduler_interval: f64,
        prune_interval: f64,
        retention_period: Option<RetentionArg>,
        manual_clock: Option<i64>,
        connect: bool,
        lease: f64,
        takeover: bool,
        url: Option<String>,
        migrate: bool,
        poll_interval: f64,
    ) -> PyResult<Self> {
        let manual_clock = manual_clock.map(|start| Arc::new(ManualClock::new(start)));
        let mut config = EngineConfig {
            path,
            durability: if fsync { Durability::Fsync } else { Durability::None },
            scheduler_interval: seconds("scheduler_interval", scheduler_interval)?,
            prune_interval: seconds("prune_interval", prune_interval)?,
            retention: retention_period
                .map_or(Ok(Retention::default()), RetentionArg::retention)?,
            ..EngineConfig::default()
        };
        if let Some(clock) = &manual_clock {
            config.clock = clock.clone();
        }
        let lease = seconds("lease", lease)?;
        if lease < Duration::from_millis(10) {
            return Err(ConfigurationError::new_err(format!(
                "lease={}: a lease shorter than 10 ms would expire between heartbeats; pass \
                 at least 0.01 seconds",
                lease.as_secs_f64()
            )));
        }
        let inner = if let Some(url) = url {
            let config = PgConfig {
                migrate,
                clock: config.clock,
                poll_interval: seconds("poll_interval", poll_interval)?,
                lease,
                heartbeat: Some(lease / 3),
                tick: config.scheduler_interval,
                prune_interval: config.prune_interval,
                retention: config.retention,
                ..PgConfig::new(url)
            };
            let store = py.detach(|| PgStore::open(config)).map_err(url_error)?;
            AppStore::Database(Arc::new(store))
        } else {
            let config = NodeConfig {
                engine: config,
                // A hand-moved clock only makes sense in the process that owns the store.
                connect: connect && manual_clock.is_none(),
                lease,
                takeover,
                ..NodeConfig::default()
            };
            AppStore::File(Box::new(py.detach(|| Node::open(config)).py_err()?))
        };
        let inner = Arc::new(inner);
        inner.on_takeover(Box::new(log_takeover));
        let progress = Reporter::new(Arc::downgrade(&inner));
        Ok(Self { inner, progress, manual_clock, watchdog: Mutex::new(None) })
    }

    /// Create or upgrade the `kathikon` schema of the `PostgreSQL` database at `url`; the
    /// version it had before (0: none).
    #[staticmethod]
    fn migrate(py: Python<'_>, url: &str) -> PyResult<i64> {
        py.detach(|| kathikon_core::pg::schema::migrate_url(url)).map_err(url_error)
    }

    /// The `PostgreSQL` schema version this build creates and reads.
    #[staticmethod]
    fn schema_version() -> i64 {
        kathikon_core::pg::schema::SCHEMA_VERSION
    }

    /// Move a manual clock forward by `seconds` (may be negative).
    fn advance_clock(&self, seconds: f64) -> PyResult<()> {
        let clock = self.manual_clock.as_ref().ok_or_else(|| {
            ConfigurationError::new_err("this engine runs on the system clock; it cannot be moved")
        })?;
        if !seconds.is_finite() {
            return Err(ConfigurationError::new_err(format!(
                "advance_clock({seconds}): pass a finite number of seconds"
            )));
        }
        clock.advance((seconds * 1e6).round() as i64);
        Ok(())
    }

    /// The insert of `specs` for the caller's own `PostgreSQL` connection (`insert(...,
    /// conn=)`): `(statement, parameters, jobs)`, the statement in psycopg's `%(name)s` style,
    /// each row it returns an inserted job's id (ascending in the order given), and the jobs
    /// as they will be stored, to be numbered with [`Self::numbered`]. Nothing is stored
    /// here. Only for a store on `PostgreSQL`.
    fn host_insert<'py>(
        &self,
        py: Python<'py>,
        specs: &Bound<'py, PyList>,
    ) -> PyResult<(String, Bound<'py, PyDict>, Vec<Bound<'py, PyJob>>)> {
        if !matches!(*self.inner, AppStore::Database(_)) {
            return Err(ConfigurationError::new_err(
                "conn= inserts through your PostgreSQL connection, but this app's store is a \
                 file; open the app with url= (the same database as the connection)",
            ));
        }
        let jobs = new_jobs(specs)?;
        let now = self.inner.jobs_as_is().now();
        let (sql, c, jobs) = kathikon_core::pg::host_insert(jobs, now).py_err()?;
        let params = PyDict::new(py);
        params.set_item("p1", c.states)?;
        params.set_item("p2", c.queues)?;
        params.set_item("p3", c.workers)?;
        params.set_item("p4", c.args)?;
        params.set_item("p5", c.metas)?;
        params.set_item("p6", c.tags)?;
        params.set_item("p7", c.max_attempts)?;
        params.set_item("p8", c.priorities)?;
        params.set_item("p9", c.now)?;
        params.set_item("p10", c.scheduled)?;
        params.set_item("p11", c.available)?;
        params.set_item("p12", c.origin)?;
        Ok((sql, params, records(py, jobs)?))
    }

    /// `jobs` from [`Self::host_insert`] with the ids its statement returned, in order.
    #[staticmethod]
    fn numbered<'py>(
        py: Python<'py>,
        jobs: Vec<PyRef<'py, PyJob>>,
        ids: Vec<u64>,
    ) -> PyResult<Vec<Bound<'py, PyJob>>> {
        if jobs.len() != ids.len() {
            return Err(InvalidJobError::new_err(format!(
                "the insert returned {} ids for {} jobs; pass the rows its statement returned",
                ids.len(),
                jobs.len()
            )));
        }
        let jobs = jobs.into_iter().zip(ids).map(|(job, id)| {
            let mut job = job.inner.clone();
            job.id = id;
            job
        });
        records(py, jobs.collect())
    }

    /// Job counts as `[(queue, state, count), …]`, exact as of the last acknowledged write.
    fn counts(&self, py: Python<'_>) -> PyResult<Vec<(String, &'static str, u64)>> {
        let counts = py.detach(|| self.inner.retrying(|jobs| jobs.counts())).py_err()?;
        Ok(counts.into_iter().map(|(q, s, n)| (q, s.as_str(), n)).collect())
    }

    /// Records moved aside because they no longer decoded, as
    /// `[(id, quarantined_at µs, reason, bytes), …]`.
    fn quarantined<'py>(&self, py: Python<'py>) -> PyResult<Vec<QuarantinedRow<'py>>> {
        let records = py.detach(|| self.inner.retrying(|jobs| jobs.quarantined())).py_err()?;
        Ok(records
            .into_iter()
            .map(|q| (q.id, q.at, q.reason, PyBytes::new(py, &q.bytes)))
            .collect())
    }

    /// The `scheduled_at` (µs) of the oldest available job in `queue`.
    fn oldest_available(&self, py: Python<'_>, queue: &str) -> PyResult<Option<i64>> {
        py.detach(|| self.inner.retrying(|jobs| jobs.oldest_available(queue))).py_err()
    }

    /// Insert `JobSpec`s in one commit; returns them as stored. Anything else in the list
    /// raises `InvalidJobError` naming it, before anything is stored.
    fn insert<'py>(
        &self,
        py: Python<'py>,
        specs: &Bound<'py, PyList>,
    ) -> PyResult<Vec<Bound<'py, PyJob>>> {
        let jobs = new_jobs(specs)?;
        let inserted = py.detach(|| self.inner.insert_flagged(jobs)).py_err()?;
        if inserted.conflicts.is_empty() {
            return records(py, inserted.jobs);
        }
        let mut conflicts = inserted.conflicts.iter().peekable();
        let mut out = Vec::with_capacity(inserted.jobs.len());
        for (i, job) in inserted.jobs.into_iter().enumerate() {
            let conflict = conflicts.next_if(|&&c| c as usize == i).is_some();
            out.push(untracked(py, PyJob::flagged(job, conflict))?);
        }
        Ok(out)
    }

    /// Insert `JobSpec`s as members of batch `batch_id` in one commit, creating it with
    /// `callbacks` (`[(event, JobSpec), …]`, event one of "completed", "discarded",
    /// "cancelled", "finished") if no batch has the id; returns them as stored.
    #[pyo3(signature = (batch_id, callbacks, specs))]
    fn insert_batch<'py>(
        &self,
        py: Python<'py>,
        batch_id: &str,
        callbacks: Option<Vec<(String, Bound<'py, PyJobSpec>)>>,
        specs: &Bound<'py, PyList>,
    ) -> PyResult<Vec<Bound<'py, PyJob>>> {
        let mut jobs = new_jobs(specs)?;
        let callbacks = match callbacks {
            Some(given) => Some(
                given
                    .into_iter()
                    .map(|(event, spec)| Ok((BatchEvent::parse(&event)?, spec.get().job.clone())))
                    .collect::<kathikon_core::Result<Vec<_>>>()
                    .py_err()?,
            ),
            None => None,
        };
        kathikon_core::batch::join(batch_id, callbacks, &mut jobs).py_err()?;
        let inserted = py.detach(|| self.inner.insert_flagged(jobs)).py_err()?;
        records(py, inserted.jobs)
    }

    /// Batch `batch_id` as `(id, created_at µs, {state: count}, finished_at µs or None,
    /// [(event, worker, callback job id or None), …])`.
    fn batch(&self, py: Python<'_>, batch_id: &str) -> PyResult<BatchRow> {
        let status = py.detach(|| self.inner.retrying(|jobs| jobs.batch(batch_id))).py_err()?;
        let counts = JobState::ALL.iter().map(|s| (s.as_str(), status.counts[*s as usize]));
        let callbacks = status.callbacks.into_iter().map(|c| (c.event.as_str(), c.worker, c.job));
        Ok((
            status.id,
            status.created_at,
            counts.collect(),
            status.finished_at,
            callbacks.collect(),
        ))
    }

    /// Claim up to `max` jobs from `queue`, waiting up to `timeout` seconds. A claim the
    /// owner may have answered before it went away is asked again of the next owner: jobs
    /// it claimed meanwhile were held by this process's session and are rescued, as ever.
    fn claim<'py>(
        &self,
        py: Python<'py>,
        queue: &str,
        max: usize,
        timeout: f64,
    ) -> PyResult<Vec<Bound<'py, PyJob>>> {
        let timeout = seconds("timeout", timeout)?;
        let jobs =
            py.detach(|| self.inner.retrying(|jobs| jobs.claim(queue, max, timeout))).py_err()?;
        jobs.into_iter()
            .map(|job| untracked(py, PyJob::running(job, self.progress.clone())))
            .collect()
    }

    /// Wait up to `timeout` seconds for the store's ready generation to move past `seen`
    /// (`None`: look at once); returns the generation and which of `queues` have jobs ready.
    #[pyo3(signature = (queues, seen, timeout))]
    // PyO3 extracts the Python list into an owned Vec; a slice cannot be extracted.
    #[allow(clippy::needless_pass_by_value)]
    fn wait_ready(
        &self,
        py: Python<'_>,
        queues: Vec<String>,
        seen: Option<u64>,
        timeout: f64,
    ) -> PyResult<(u64, Vec<String>)> {
        let timeout = seconds("timeout", timeout)?;
        py.detach(|| self.inner.retrying(|jobs| jobs.wait_ready(&queues, seen, timeout))).py_err()
    }

    /// Record outcomes. With `wait`, returns each job as it now is (or `None` where the ack
    /// was stale); without, returns an empty list at once.
    #[pyo3(signature = (acks, wait=true))]
    fn ack(&self, py: Python<'_>, acks: Vec<AckTuple>, wait: bool) -> PyResult<Vec<Option<PyJob>>> {
        let acks = acks.into_iter().map(Ack::try_from).collect::<PyResult<Vec<_>>>()?;
        if self.progress.tracks_any() {
            py.detach(|| self.progress.before_ack(&acks));
        }
        if !wait {
            return py.detach(|| self.inner.jobs()?.ack_nowait(acks)).py_err().map(|()| Vec::new());
        }
        let results = py.detach(|| self.inner.jobs()?.ack(acks)).py_err()?;
        Ok(results
            .into_iter()
            .map(|r| match r {
                AckResult::Applied(inner) => Some(PyJob::new(inner)),
                AckResult::Stale(_) => None,
            })
            .collect())
    }

    /// Cancel a job; returns it and the state it was in before.
    fn cancel(&self, py: Python<'_>, id: u64) -> PyResult<(PyJob, &'static str)> {
        let (inner, before) = py.detach(|| self.inner.retrying(|jobs| jobs.cancel(id))).py_err()?;
        Ok((PyJob::new(inner), before.as_str()))
    }

    fn retry(&self, py: Python<'_>, id: u64) -> PyResult<PyJob> {
        py.detach(|| self.inner.retrying(|jobs| jobs.retry(id))).py_err().map(PyJob::new)
    }

    fn get(&self, py: Python<'_>, id: u64) -> PyResult<PyJob> {
        py.detach(|| self.inner.retrying(|jobs| jobs.get(id))).py_err().map(PyJob::new)
    }

    /// Wait up to `timeout` seconds (None: without end) for job `id` to finish, with the GIL
    /// released; returns the job, finished or, when the time ran out, not yet.
    #[pyo3(signature = (id, timeout=None))]
    fn wait_finished(&self, py: Python<'_>, id: u64, timeout: Option<f64>) -> PyResult<PyJob> {
        let timeout = match timeout {
            Some(seconds) => Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX),
            None => Duration::MAX,
        };
        py.detach(|| self.inner.retrying(|jobs| jobs.wait_finished(id, timeout)))
            .py_err()
            .map(PyJob::new)
    }

    #[pyo3(signature = (state=None, queue=None, worker=None, after=None, limit=0))]
    fn list<'py>(
        &self,
        py: Python<'py>,
        state: Option<&str>,
        queue: Option<String>,
        worker: Option<String>,
        after: Option<u64>,
        limit: usize,
    ) -> PyResult<Vec<Bound<'py, PyJob>>> {
        let state = state.map(JobState::parse).transpose().py_err()?;
        let filter = ListFilter { state, queue, worker, after, limit, ..ListFilter::default() };
        records(py, py.detach(|| self.inner.retrying(|jobs| jobs.list(&filter))).py_err()?)
    }

    /// The jobs `filter` selects, in its order, at most its limit.
    fn list_by<'py>(
        &self,
        py: Python<'py>,
        filter: &PyListFilter,
    ) -> PyResult<Vec<Bound<'py, PyJob>>> {
        let filter = &filter.inner;
        records(py, py.detach(|| self.inner.retrying(|jobs| jobs.list(filter))).py_err()?)
    }

    /// How many jobs `filter` selects.
    fn count(&self, py: Python<'_>, filter: &PyListFilter) -> PyResult<u64> {
        let filter = &filter.inner;
        py.detach(|| self.inner.retrying(|jobs| jobs.count(filter))).py_err()
    }

    /// Apply the bulk `action` (`cancel`, `retry`, `delete`) to the jobs `filter` selects;
    /// returns how many changed.
    #[pyo3(signature = (action, filter, force=false))]
    fn bulk(
        &self,
        py: Python<'_>,
        action: &str,
        filter: &PyListFilter,
        force: bool,
    ) -> PyResult<u64> {
        let (action, filter) = (crate::filter::action(action, force)?, &filter.inner);
        py.detach(|| self.inner.jobs()?.bulk(action, filter)).py_err()
    }

    /// Delete jobs finished more than `older_than` seconds ago; returns how many.
    fn prune(&self, py: Python<'_>, older_than: f64) -> PyResult<u64> {
        let age = seconds("older_than", older_than)?;
        py.detach(|| self.inner.jobs()?.prune(age)).py_err()
    }

    /// Wait until everything sent so far is committed and due jobs are promoted; with
    /// `promote_until` (µs), also promote jobs due before then.
    #[pyo3(signature = (promote_until=None))]
    fn sync(&self, py: Python<'_>, promote_until: Option<i64>) -> PyResult<()> {
        py.detach(|| {
            self.inner.retrying(|jobs| match promote_until {
                Some(until) => jobs.sync_promoting(until),
                None => jobs.sync(),
            })
        })
        .py_err()
    }

    fn interrupt(&self, queue: &str) {
        self.inner.jobs_as_is().interrupt(queue);
    }

    fn ready_count(&self, py: Python<'_>, queue: &str) -> PyResult<usize> {
        py.detach(|| self.inner.retrying(|jobs| jobs.ready_count(queue))).py_err()
    }

    /// Who claims from which queue, as `[(queue, pid, idle seconds), …]` in queue order: the
    /// process that claimed last and how long ago its claim's wait ended (0.0 while one
    /// waits). Queues nobody claimed from since the owner opened the store are missing.
    fn claimers(&self, py: Python<'_>) -> PyResult<Vec<(String, u32, f64)>> {
        let claimers = py.detach(|| self.inner.retrying(|jobs| jobs.claimers())).py_err()?;
        Ok(claimers.into_iter().map(|c| (c.queue, c.pid, c.idle.as_secs_f64())).collect())
    }

    /// "owner" when this process owns the store file, "client" when it uses the owner's socket,
    /// "node" on a database.
    #[getter]
    fn role(&self) -> &'static str {
        self.inner.role().as_str()
    }

    /// Take the store over (or connect to its new owner) if the owner went away; the role
    /// then, as [`Self::role`]. For a process that makes no calls but keeps the store.
    fn keep(&self, py: Python<'_>) -> PyResult<&'static str> {
        py.detach(|| self.inner.keep()).py_err().map(AppRole::as_str)
    }

    /// Why this owner does not serve the store to other processes (its socket could not be
    /// created), or `None`.
    #[getter]
    fn serve_error(&self) -> Option<String> {
        self.inner.serve_error()
    }

    /// The storage failure after which this process's engine stopped writing (it owns the
    /// store, and a commit failed: a full disk, say), or `None`. The engine writes nothing
    /// more until the app is closed and opened again.
    #[getter]
    fn failure(&self) -> Option<String> {
        self.inner.failure().map(|e| e.to_string())
    }

    /// The process id of the store's owner (this process's, when it owns the store).
    #[getter]
    fn owner_pid(&self) -> u32 {
        self.inner.owner_pid()
    }

    /// `(rescued, discarded)`: jobs found executing when the store was opened.
    #[getter]
    fn recovery(&self) -> (u64, u64) {
        let r = self.inner.recovery();
        (r.rescued, r.discarded)
    }

    /// The engine clock, in microseconds since the epoch.
    fn now(&self, py: Python<'_>) -> i64 {
        // A client has no clock of its own: the system clock, which the owner runs on too.
        py.detach(|| self.inner.jobs().map_or_else(|_| SystemClock.now(), |jobs| jobs.now()))
    }

    fn set_events(&self, py: Python<'_>, on: bool) {
        py.detach(|| self.inner.set_events(on));
    }

    /// Wait up to `timeout` seconds for engine events: `[(name, measurements), …]`, each name
    /// one of `ENGINE_EVENTS`.
    fn next_events<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
    ) -> PyResult<Vec<(&'static str, Bound<'py, PyDict>)>> {
        let timeout = seconds("timeout", timeout)?;
        let events = py.detach(|| {
            if let Ok(jobs) = self.inner.jobs() {
                return jobs.next_events(timeout);
            }
            // A closed store has no events either: wait like a client, so polling loops idle.
            std::thread::sleep(timeout);
            Vec::new()
        });
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let m = PyDict::new(py);
            let name = event.name();
            match event {
                EngineEvent::SchedulerTick { promoted, duration_us } => {
                    m.set_item("promoted", promoted)?;
                    m.set_item("duration", duration_us as f64 / 1e6)?;
                }
                EngineEvent::PrunerTick { pruned, duration_us } => {
                    m.set_item("pruned", pruned)?;
                    m.set_item("duration", duration_us as f64 / 1e6)?;
                }
                EngineEvent::Quarantined { id, reason } => {
                    m.set_item("id", id)?;
                    m.set_item("reason", reason)?;
                }
                EngineEvent::CronInsert { name, slot, id, lateness_us } => {
                    m.set_item("name", name)?;
                    m.set_item("slot", slot)?;
                    m.set_item("id", id)?;
                    m.set_item("lateness", lateness_us as f64 / 1e6)?;
                }
                _ => continue,
            }
            out.push((name, m));
        }
        Ok(out)
    }

    /// Commit what was sent, stop the writer and release the file. Idempotent.
    fn close(&self, py: Python<'_>) {
        if let Some(watchdog) = self.watchdog().as_ref() {
            watchdog.stop();
        }
        py.detach(|| self.inner.close());
    }

    /// Watch attempt `attempt` of a sync job running in this worker process: past `timeout`
    /// seconds, store it as failed with `error` (retried after `retry_in` µs, `None` for the
    /// default backoff); with `kill_on_cancel`, once it is found cancelled. Either way the
    /// process then ends (`_exit`, status [`STOPPED_EXIT`]) so the job's thread stops, and
    /// its pool starts another (see `kathikon_core::watchdog`).
    #[pyo3(signature = (id, attempt, *, timeout=None, error=String::new(), retry_in=None, kill_on_cancel=false))]
    fn watch(
        &self,
        id: u64,
        attempt: u32,
        timeout: Option<f64>,
        error: String,
        retry_in: Option<i64>,
        kill_on_cancel: bool,
    ) -> PyResult<()> {
        let timeout = match timeout {
            Some(after) => Some(Timeout { after: seconds("timeout", after)?, error, retry_in }),
            None => None,
        };
        let mut slot = self.watchdog();
        if slot.is_none() {
            let (acks, gets) = (self.inner.clone(), self.inner.clone());
            let started = Watchdog::start(Hooks {
                ack: Box::new(move |ack| acks.retrying(|jobs| jobs.ack(vec![ack.clone()]))),
                get: Box::new(move |id| gets.retrying(|jobs| jobs.get(id))),
                ended: Box::new(stop_process),
            })
            .map_err(|e| StorageError::new_err(format!("start the watchdog thread: {e}")))?;
            *slot = Some(started);
        }
        let watchdog = slot.clone().expect("started above");
        drop(slot);
        watchdog.watch(id, attempt, timeout, kill_on_cancel);
        Ok(())
    }

    /// Job `id`, watched by [`Self::watch`], ended by itself.
    fn unwatch(&self, id: u64) {
        if let Some(watchdog) = self.watchdog().as_ref() {
            watchdog.unwatch(id);
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Change a queue's runtime settings: `change` is "pause", "resume", "scale" (with
    /// `concurrency`, or `None` to go back to each process's configured value), "start"
    /// (with `concurrency`, or `None` for the one it was started with before) or "stop".
    /// `"global_limit"` or `"rate_limit"` (with `limit`: the limit as JSON, `None` for none; see
    /// `kathikon_core::limits`). Returns the settings as they now are, as
    /// [`Self::queue_settings`] lists them.
    #[pyo3(signature = (queue, change, concurrency=None, limit=None))]
    fn set_queue(
        &self,
        py: Python<'_>,
        queue: &str,
        change: &str,
        concurrency: Option<u32>,
        limit: Option<&str>,
    ) -> PyResult<QueueRow> {
        let invalid = |e: kathikon_core::Error| ConfigurationError::new_err(e.to_string());
        let change = match change {
            "pause" => QueueChange::Pause,
            "resume" => QueueChange::Resume,
            "scale" => QueueChange::Scale(concurrency),
            "start" => QueueChange::Start(concurrency),
            "stop" => QueueChange::Stop,
            "global_limit" => QueueChange::GlobalLimit(
                limit.map(GlobalLimit::from_json).transpose().map_err(invalid)?,
            ),
            "rate_limit" => QueueChange::RateLimit(
                limit.map(RateLimit::from_json).transpose().map_err(invalid)?,
            ),
            other => {
                return Err(ConfigurationError::new_err(format!(
                    "queue change {other:?} is not one of pause, resume, scale, start, stop, \
                     global_limit, rate_limit"
                )))
            }
        };
        let settings = py
            .detach(|| self.inner.retrying(|jobs| jobs.set_queue(queue, change.clone())))
            .map_err(|e| match e {
                kathikon_core::Error::InvalidJob(text) => ConfigurationError::new_err(text),
                other => crate::errors::map_error(other),
            })?;
        Ok(queue_row(settings))
    }

    /// How much of `queue`'s limits is in use: `([(partition, jobs executing)], [(partition,
    /// starts in the rate window)])`, partitions as people read them ("" for a whole queue).
    fn limit_usage(&self, py: Python<'_>, queue: &str) -> PyResult<LimitUsageRow> {
        let usage = py.detach(|| self.inner.retrying(|jobs| jobs.limit_usage(queue))).py_err()?;
        Ok((usage.executing, usage.windows))
    }

    /// `(generation, [(queue, paused, concurrency, started, stopped, global_limit JSON,
    /// rate_limit JSON), …])`: every queue with runtime settings, by name; the generation
    /// changes whenever any of them does.
    fn queue_settings(&self, py: Python<'_>) -> PyResult<(u64, Vec<QueueRow>)> {
        let (generation, all) =
            py.detach(|| self.inner.retrying(|jobs| jobs.queue_settings())).py_err()?;
        Ok((generation, all.into_iter().map(queue_row).collect()))
    }

    /// Replace this process's crontab: `[(name, expression, timezone, catch_up,
    /// catch_up_limit, JobSpec), …]`. Fired while this process owns the store.
    fn set_crontab(
        &self,
        py: Python<'_>,
        entries: Vec<crate::cron::EntryTuple<'_>>,
    ) -> PyResult<()> {
        let entries = entries.into_iter().map(crate::cron::entry).collect::<PyResult<Vec<_>>>()?;
        py.detach(|| self.inner.set_crontab(entries)).map_err(|e| match e {
            kathikon_core::Error::InvalidJob(text) => ConfigurationError::new_err(text),
            other => crate::errors::map_error(other),
        })
    }

    /// The last slot each cron entry fired: `[(name, slot µs, expression, timezone), …]`.
    fn cron_slots(&self, py: Python<'_>) -> PyResult<Vec<(String, i64, String, String)>> {
        let slots = py.detach(|| self.inner.retrying(|jobs| jobs.cron_slots())).py_err()?;
        Ok(slots.into_iter().map(|s| (s.name, s.slot, s.expression, s.timezone)).collect())
    }

    /// Job `id`'s latest stored progress: `(attempt, fraction, note, at µs)`, or `None`.
    fn progress(&self, py: Python<'_>, id: u64) -> PyResult<Option<ProgressRow>> {
        let progress = py.detach(|| self.inner.retrying(|jobs| jobs.progress(id))).py_err()?;
        Ok(progress.map(|p| (p.attempt, p.fraction, p.note, p.at)))
    }

    /// How many progress values this engine has written for its jobs (the rate limit's
    /// count, for tests).
    #[getter]
    fn progress_writes(&self) -> u64 {
        self.progress.writes()
    }

    /// The processes working on the store, owner first: `[(pid, role, hostname, connected
    /// µs, last seen µs, lease expiry µs or None, [job ids], [queues]), …]`; role is "owner",
    /// "client" or, on a database shared by peers, "node".
    fn processes(&self, py: Python<'_>) -> PyResult<Vec<ProcessRow>> {
        let all = py.detach(|| self.inner.retrying(|jobs| jobs.processes())).py_err()?;
        Ok(all
            .into_iter()
            .map(|p| {
                let seen = (p.connected_at, p.last_seen, p.lease_expires);
                (p.pid, p.role.as_str(), p.hostname, seen.0, seen.1, seen.2, p.jobs, p.queues)
            })
            .collect())
    }

    /// Per queue and minute: `[(queue, minute µs, completed, failed, discarded, cancelled,
    /// p50 µs, p95 µs, p99 µs), …]`, oldest first.
    #[pyo3(signature = (since=None, queue=None))]
    fn metrics(
        &self,
        py: Python<'_>,
        since: Option<i64>,
        queue: Option<&str>,
    ) -> PyResult<Vec<MetricRow>> {
        let points =
            py.detach(|| self.inner.retrying(|jobs| jobs.metrics(since, queue))).py_err()?;
        Ok(points
            .into_iter()
            .map(|p| {
                let counts = (p.completed, p.failed, p.discarded, p.cancelled);
                (p.queue, p.minute, counts.0, counts.1, counts.2, counts.3, p.p50, p.p95, p.p99)
            })
            .collect())
    }
}

/// A job's stored progress for Python (see `progress`).
type ProgressRow = (u32, f64, Option<String>, i64);

/// A process working on the store, for Python (see `processes`).
type ProcessRow = (u32, &'static str, String, i64, i64, Option<i64>, Vec<u64>, Vec<String>);

/// One queue's minute for Python (see `metrics`).
type MetricRow = (String, i64, u64, u64, u64, u64, Option<i64>, Option<i64>, Option<i64>);

/// A queue's limits in use for Python (see `Engine::limit_usage`).
type LimitUsageRow = (Vec<(String, u32)>, Vec<(String, u32)>);

/// A queue's runtime settings for Python: `(queue, paused, concurrency, started, stopped,
/// global_limit, rate_limit)`, each limit as JSON or `None`.
type QueueRow = (String, bool, Option<u32>, Option<u32>, bool, Option<String>, Option<String>);

fn queue_row(s: QueueSettings) -> QueueRow {
    let global = s.global_limit.as_ref().map(GlobalLimit::to_json);
    let rate = s.rate_limit.as_ref().map(RateLimit::to_json);
    (s.name, s.paused, s.concurrency, s.started, s.stopped, global, rate)
}

/// One INFO line on the `kathikon` logger: this process took over the store from `pid`.
fn log_takeover(store: &std::path::Path, pid: u32) {
    Python::attach(|py| {
        let logged = py.import("logging").and_then(|logging| {
            let logger = logging.call_method1("getLogger", ("kathikon",))?;
            let text = "took over the store %s from pid %d";
            logger.call_method1("info", (text, store.display().to_string(), pid))
        });
        // A logging failure must not fail the call that took the store over.
        if let Err(e) = logged {
            e.print(py);
        }
    });
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngine>()
}

impl PyEngine {
    /// The watchdog of sync jobs, once one was watched.
    fn watchdog(&self) -> MutexGuard<'_, Option<Arc<Watchdog>>> {
        self.watchdog.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
