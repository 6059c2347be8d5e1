//! [`Jobs`]: the job store as the app talks to it, one method per verb. An in-process
//! [`crate::Engine`] implements it, and so does a [`crate::ipc::Client`] talking to the
//! process that owns the store; the conformance suite (`tests/conformance`) runs the same
//! behaviour tests against both.
//!
//! The contract speaks only of jobs, queues and time: nothing in it assumes redb or a single
//! owning process (claiming is a verb, not an in-memory queue), so a store on a database
//! server can implement every method. What only the process that owns a file can do (recover
//! it at open, rescue a lost worker's jobs, checkpoint) stays on [`crate::Engine`].

use std::time::Duration;

use crate::batch::{BatchEvent, BatchStatus};
use crate::claim::Claimer;
use crate::clock::Micros;
use crate::cron::{CronEntry, CronSlot};
use crate::error::Result;
use crate::job::{Ack, AckResult, Job, JobId, NewJob};
use crate::metrics::MetricPoint;
use crate::processes::ProcessInfo;

use crate::listing::{BulkAction, TimeRange};
use crate::queues::{QueueChange, QueueSettings};
use crate::state::JobState;
use crate::storage::Quarantined;
use crate::telemetry::EngineEvent;
use crate::unique::Inserted;

/// Which jobs [`Jobs::list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Only jobs in one of these states (empty: any).
    pub states: Vec<JobState>,
    /// Only jobs that have every one of these tags.
    pub tags: Vec<String>,
    /// Only jobs whose args contain this JSON ([`crate::listing`]).
    pub args: Option<String>,
    /// Only jobs whose meta contains this JSON.
    pub meta: Option<String>,
    /// Only jobs inserted in this range.
    pub inserted: TimeRange,
    /// Only jobs scheduled (due) in this range.
    pub scheduled: TimeRange,
    /// Only finished jobs that finished in this range.
    pub finished: TimeRange,
    /// Only jobs with an id below this one (for paging newest first).
    pub before: Option<JobId>,
    /// Newest (highest id) first instead of oldest first.
    pub descending: bool,
}

/// A job store the app talks to. Every call is safe from any thread; every write returns once
/// it is committed by whoever owns the store (durable with [`crate::Durability::Fsync`]).
pub trait Jobs: Send + Sync {
    /// Insert jobs in one transaction: all or none.
    ///
    /// Returns once the jobs are committed (durable with [`crate::Durability::Fsync`]). On
    /// [`crate::Error::InvalidJob`] or [`crate::Error::WriterStopped`] nothing was written;
    /// on [`crate::Error::CommitFailed`] the outcome is unknown.
    fn insert(&self, jobs: Vec<NewJob>) -> Result<Vec<Job>>;

    /// Claim up to `max` jobs from `queue`, waiting up to `timeout` for one to be ready.
    ///
    /// Returned jobs are durably marked executing with their attempt counted. Returns an
    /// empty list on timeout or after [`Jobs::interrupt`], and at once when `max` is 0.
    fn claim(&self, queue: &str, max: usize, timeout: Duration) -> Result<Vec<Job>>;

    /// Watch many queues with one waiter: wait until something may have become ready in the
    /// store since `seen` (a generation an earlier call returned; `None` to look at once) or
    /// until `timeout`, then return the store's current generation and which of `queues` have
    /// jobs ready to claim now. Passing the returned generation back waits for the next
    /// change, so a queue whose backlog is being drained does not end every wait. An
    /// [`Jobs::interrupt`] of one of `queues` ends the wait early. Each queue counts as
    /// claimed from by this process for [`Jobs::claimers`]. Claims nothing.
    fn wait_ready(
        &self,
        queues: &[String],
        seen: Option<u64>,
        timeout: Duration,
    ) -> Result<(u64, Vec<String>)>;

    /// Make claims of this store waiting on `queue` return now (a client's: within the slice
    /// it asks its owner to wait).
    fn interrupt(&self, queue: &str);

    /// Record attempts' outcomes and wait until they are committed. An ack for an attempt
    /// that is not executing (an old one, a cancelled or pruned job) comes back
    /// [`AckResult::Stale`] with the state found, and changes no state. A store shared by
    /// several processes also refuses acks from a worker that lost the job (its lease expired
    /// and the job was rescued), and writes the refusal into the job's history (fencing).
    fn ack(&self, acks: Vec<Ack>) -> Result<Vec<AckResult>>;

    /// Record attempts' outcomes without waiting. A crash before the next commit leaves the
    /// jobs executing, to be rescued (and run again) later; [`Jobs::sync`] waits.
    fn ack_nowait(&self, acks: Vec<Ack>) -> Result<()>;

    /// Cancel a job. Returns the job as it now is and the state it was in. A job already
    /// completed, cancelled or discarded is returned unchanged.
    fn cancel(&self, id: JobId) -> Result<(Job, JobState)>;

    /// Make a job available now (an available job is returned unchanged; an executing one is
    /// refused).
    fn retry(&self, id: JobId) -> Result<Job>;

    /// The job with this id, as last committed. A record that no longer decodes is
    /// [`crate::Error::Corrupted`] naming the job, and is moved to the quarantine.
    fn get(&self, id: JobId) -> Result<Job>;

    /// Jobs matching `filter`, in id order (descending when it says so). A record that no longer decodes is left out and
    /// moved to the quarantine (see [`Jobs::quarantined`]).
    fn list(&self, filter: &ListFilter) -> Result<Vec<Job>>;

    /// Job counts per queue and state, exact as of the last acknowledged write.
    fn counts(&self) -> Result<Vec<(String, JobState, u64)>>;

    /// Records that no longer decoded and were moved aside, by id: each with when, why, and
    /// its bytes as found. Jobs whose record was quarantined are gone from every other call;
    /// [`Jobs::get`] says so with [`crate::Error::Corrupted`].
    fn quarantined(&self) -> Result<Vec<Quarantined>>;

    /// When the oldest available job of `queue` became due, if it has any.
    fn oldest_available(&self, queue: &str) -> Result<Option<Micros>>;

    /// How many jobs are ready to claim in `queue` right now.
    fn ready_count(&self, queue: &str) -> Result<usize>;

    /// Which queues running processes claim from: per queue claimed from since the store's
    /// owner opened it, the process that claimed last and how long ago its claim's wait ended
    /// (zero while a claim waits). A queue missing here, or idle for long while it holds
    /// available jobs, is one that no running process serves.
    fn claimers(&self) -> Result<Vec<Claimer>>;

    /// Delete finished jobs that finished more than `age` ago; returns how many.
    fn prune(&self, age: Duration) -> Result<u64>;

    /// Wait until everything sent before this call is committed, with due jobs promoted.
    fn sync(&self) -> Result<()>;

    /// Like [`Jobs::sync`], and also promote every scheduled or retryable job due before
    /// `until` as if that time had come (for tests: "run scheduled jobs now").
    fn sync_promoting(&self, until: Micros) -> Result<()>;

    /// Start or stop collecting [`EngineEvent`]s (a client has none: they happen at the
    /// owner).
    fn set_events(&self, on: bool);

    /// Wait up to `timeout` for engine events and return those waiting. A store without
    /// events (a client) waits out the timeout and returns none, so a loop polling it does
    /// not spin.
    fn next_events(&self, timeout: Duration) -> Vec<EngineEvent>;

    /// The time the store runs on, in µs since the Unix epoch (due times and timestamps are
    /// on this clock).
    fn now(&self) -> Micros;

    /// Release the store: commit what was sent and let go of the file or the connection.
    /// Claims in progress return [`crate::Error::Closed`]. Calling it again does nothing.
    fn close(&self);

    /// Whether [`Jobs::close`] was called.
    fn is_closed(&self) -> bool;

    /// Change queue `queue`'s runtime settings (pause, resume, scale, start, stop) and return
    /// them as they now are, once the change is committed. Once a pause returns, no claim of
    /// the queue succeeds in any process (running jobs finish) until it is resumed; a resume
    /// wakes waiting claimers at once. The settings stay stored across restarts and owners.
    fn set_queue(&self, queue: &str, change: QueueChange) -> Result<QueueSettings>;

    /// Every queue with runtime settings, by name, and a generation that changes whenever
    /// any of them does (a poller passes over an answer whose generation it has seen). Cheap:
    /// read from the owner's memory.
    fn queue_settings(&self) -> Result<(u64, Vec<QueueSettings>)>;
    /// How much of queue `queue`'s limits is in use now: the jobs counted against its global
    /// limit and the starts in its rate window, per partition ([`crate::limits::Usage`];
    /// empty for a queue without limits). From the owner's memory.
    fn limit_usage(&self, queue: &str) -> Result<crate::limits::Usage>;
    /// Hand this process's crontab to the store, replacing the one it handed before; refuses
    /// a bad entry or two entries of one name with [`crate::Error::InvalidJob`], changing
    /// nothing. Only the store's owner fires a crontab (the engine arms it in its writer
    /// before this returns); a client keeps none: the process that holds it hands the
    /// crontab to the engine it gets when it takes the store over ([`crate::ipc::Node`]).
    fn set_crontab(&self, entries: Vec<CronEntry>) -> Result<()>;

    /// The last slot each cron entry fired, as the store's owner stored them, by name.
    fn cron_slots(&self) -> Result<Vec<CronSlot>>;

    /// [`Jobs::insert`], also saying which of the returned jobs existed already: a job with a
    /// unique spec ([`crate::UniqueSpec`]) whose key another job held comes back as that job,
    /// listed in [`Inserted::conflicts`], and nothing new is stored for it. Duplicates within
    /// one call resolve the same way, the later ones finding the first.
    fn insert_flagged(&self, jobs: Vec<NewJob>) -> Result<Inserted>;

    /// Per queue and minute, the outcomes counted and the attempt duration percentiles, from
    /// `since`'s minute on (the last 24 hours kept when `None`), of `queue` (all when `None`),
    /// oldest first. Everything acked before the call counts, the running minute's too.
    fn metrics(&self, since: Option<Micros>, queue: Option<&str>) -> Result<Vec<MetricPoint>>;

    /// Store `fraction` (0.0–1.0) and `note` as job `id`'s progress, if `attempt` is the one
    /// executing now; returns whether it was stored (`false`: the attempt ended or was
    /// superseded). A bad value is [`crate::Error::InvalidJob`] naming it.
    fn set_progress(
        &self,
        id: JobId,
        attempt: u32,
        fraction: f64,
        note: Option<String>,
    ) -> Result<bool>;

    /// Job `id`'s latest stored progress, kept after the job ends (see [`crate::progress`]).
    fn progress(&self, id: JobId) -> Result<Option<crate::progress::Progress>>;

    /// How many jobs `filter` selects (its `limit` aside), as of the last acknowledged write.
    /// A filter of states and a queue alone is answered from the stored counts.
    fn count(&self, filter: &ListFilter) -> Result<u64>;

    /// Apply `action` to every job `filter` selects (its `limit` and order aside), in
    /// commands of at most [`crate::listing::BULK_CHUNK`] jobs, each checked against the
    /// filter again as the writer applies it; returns how many jobs changed. A bad filter is
    /// [`crate::Error::InvalidJob`], changing nothing; chunks done before a later error stay.
    fn bulk(&self, action: BulkAction, filter: &ListFilter) -> Result<u64>;

    /// Wait up to `timeout` for job `id` to finish (completed, cancelled or discarded; a
    /// retryable job has not) and return it as it then stands: finished, or, when the time
    /// ran out, not yet. The store wakes the wait when the job finishes (no polling): the
    /// engine's writer after the commit, the owner for a client, a notification from the
    /// database. A job that does not exist, or is deleted while awaited, is
    /// [`crate::Error::JobNotFound`]; closing the store ends the wait with
    /// [`crate::Error::Closed`].
    fn wait_finished(&self, id: JobId, timeout: Duration) -> Result<Job>;

    /// Insert `jobs` (at least one) as members of batch `id`, in one transaction: the insert
    /// creates the batch with `callbacks` if no batch has the id, else adds the jobs to it if
    /// it has not finished (giving callbacks for a batch that exists is refused). Once no
    /// member is unfinished, the batch's callback jobs whose conditions hold are inserted, once
    /// ([`crate::batch`]). A refusal ([`crate::Error::InvalidJob`]: a bad id or callback, a
    /// finished batch, a unique job) stores nothing.
    fn insert_batch(
        &self,
        id: &str,
        callbacks: Option<Vec<(BatchEvent, NewJob)>>,
        mut jobs: Vec<NewJob>,
    ) -> Result<Vec<Job>> {
        crate::batch::join(id, callbacks, &mut jobs)?;
        self.insert(jobs)
    }

    /// Batch `id` as last committed: its members per state, whether it finished, and which
    /// callback jobs it inserted. [`crate::Error::BatchNotFound`] if no batch has the id.
    fn batch(&self, id: &str) -> Result<BatchStatus>;

    /// The processes working on the store, as its owner sees them: the owner first, then
    /// each client connected to it, with when it connected and was last heard from, when its
    /// lease expires, the jobs it holds (executing) and the queues it claims from
    /// ([`crate::processes`]).
    fn processes(&self) -> Result<Vec<ProcessInfo>>;
}
