//! The messages of the owner's socket. One request, one response, in order, per connection;
//! the hot calls carry batches (claim N, ack N) so one round trip serves many jobs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::clock::Micros;
use crate::error::Error;
use crate::job::{Ack, AckResult, Job, JobId, NewJob};
use crate::request::RequestId;
use crate::state::JobState;

/// What a client asks. The first request on a connection must be [`Request::Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Opens a connection. `session` groups the connections of one client process: its
    /// claims are held by the session and rescued when the last connection closes or when
    /// no request arrives for `lease_ms`.
    Hello {
        /// The client's [`super::PROTOCOL_VERSION`].
        version: u32,
        /// The client's process id (for messages and rescue reasons).
        pid: u32,
        /// The client's session.
        session: u64,
        /// How long the owner keeps the session's claims without hearing from it.
        lease_ms: u64,
    },
    /// [`crate::Jobs::insert`], stored once per `request` however often it is sent: a
    /// repeat is answered with the jobs the first one stored ([`crate::Engine::insert_once`]).
    Insert {
        /// The jobs, inserted all or none.
        jobs: Vec<NewJob>,
        /// Names this insert across resends (to another owner, after this one went away).
        request: RequestId,
    },
    /// [`crate::Jobs::claim`], waiting at most `timeout_ms`.
    Claim {
        /// The queue.
        queue: String,
        /// At most this many.
        max: u32,
        /// Longest wait for a job.
        timeout_ms: u64,
    },
    /// [`crate::Jobs::ack`] (or `ack_nowait` when `wait` is false). Acks for jobs this
    /// session no longer holds are refused (fenced) and noted in the jobs' histories.
    Ack {
        /// The outcomes.
        acks: Vec<Ack>,
        /// Answer after the commit (true) or as soon as the writer has them (false).
        wait: bool,
    },
    /// [`crate::Jobs::cancel`].
    Cancel {
        /// The job.
        id: JobId,
    },
    /// [`crate::Jobs::retry`].
    Retry {
        /// The job.
        id: JobId,
    },
    /// [`crate::Jobs::get`].
    Get {
        /// The job.
        id: JobId,
    },
    /// [`crate::Jobs::list`].
    List {
        /// Which jobs.
        filter: crate::jobs::ListFilter,
    },
    /// [`crate::Jobs::counts`].
    Counts,
    /// [`crate::Jobs::quarantined`].
    Quarantined,
    /// [`crate::Jobs::oldest_available`].
    OldestAvailable {
        /// The queue.
        queue: String,
    },
    /// [`crate::Jobs::ready_count`].
    ReadyCount {
        /// The queue.
        queue: String,
    },
    /// [`crate::Jobs::prune`].
    Prune {
        /// Finished longer ago than this (µs).
        age_us: u64,
    },
    /// [`crate::Jobs::sync`] / [`crate::Jobs::sync_promoting`].
    Sync {
        /// Also promote jobs due before this time.
        promote_until: Option<Micros>,
    },
    /// Keeps the session's lease; answered with [`Response::Unit`].
    Heartbeat,
    /// [`crate::Jobs::claimers`].
    Claimers,
    /// [`crate::Jobs::wait_ready`], waiting at most `timeout_ms`.
    WaitReady {
        /// The queues watched.
        queues: Vec<String>,
        /// The generation last seen (`None`: look at once).
        seen: Option<u64>,
        /// Longest wait.
        timeout_ms: u64,
    },
    /// [`crate::Jobs::set_queue`].
    SetQueue {
        /// The queue.
        queue: String,
        /// What changes.
        change: crate::queues::QueueChange,
    },
    /// [`crate::Jobs::queue_settings`].
    QueueSettings,
    /// [`crate::Jobs::limit_usage`].
    LimitUsage {
        /// The queue.
        queue: String,
    },
    /// [`crate::Jobs::cron_slots`].
    CronSlots,
    /// [`crate::Jobs::set_progress`]; answered with [`Response::Count`] 1 if stored, else 0.
    SetProgress {
        /// The job.
        id: JobId,
        /// The attempt, fraction and note reported (its `at` is the owner's clock on arrival;
        /// the one sent is ignored).
        progress: crate::progress::Progress,
    },
    /// [`crate::Jobs::progress`].
    Progress {
        /// The job.
        id: JobId,
    },
    /// [`crate::Jobs::metrics`].
    Metrics {
        /// From this time's minute on.
        since: Option<crate::clock::Micros>,
        /// Only this queue.
        queue: Option<String>,
    },
    /// [`crate::Jobs::count`].
    Count {
        /// Which jobs.
        filter: crate::jobs::ListFilter,
    },
    /// [`crate::Jobs::bulk`].
    Bulk {
        /// What to do.
        action: crate::listing::BulkAction,
        /// To which jobs.
        filter: crate::jobs::ListFilter,
    },
    /// [`crate::Jobs::processes`].
    Processes,
    /// [`crate::Jobs::wait_finished`], waiting at most `timeout_ms` at the owner; answered
    /// with [`Response::Job`], finished or not yet.
    WaitFinished {
        /// The job.
        id: JobId,
        /// Longest wait.
        timeout_ms: u64,
    },
    /// [`crate::Jobs::batch`].
    Batch {
        /// The batch's id.
        id: String,
    },
}

/// What the owner answers.
// One per request, consumed at once: boxing the job would cost more than it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The connection is open.
    Hello {
        /// The owner's protocol version.
        version: u32,
        /// The owner's process id.
        owner_pid: u32,
    },
    /// Inserted or claimed jobs.
    Jobs(Vec<Job>),
    /// What became of each ack, in order.
    Acks(Vec<AckResult>),
    /// A cancelled job and the state it was in.
    Cancelled(Job, JobState),
    /// One job.
    Job(Job),
    /// Job counts per queue and state.
    Counts(Vec<(String, JobState, u64)>),
    /// Records moved aside because they no longer decoded.
    Quarantined(Vec<crate::storage::Quarantined>),
    /// A time, if there is one.
    Time(Option<Micros>),
    /// A count.
    Count(u64),
    /// Done.
    Unit,
    /// The request was refused or failed.
    Error(WireError),
    /// Who claims from which queue.
    Claimers(Vec<crate::claim::Claimer>),
    /// The store's ready generation and the watched queues with jobs ready.
    Ready(u64, Vec<String>),
    /// One queue's runtime settings.
    Queue(crate::queues::QueueSettings),
    /// The settings' generation and every queue with runtime settings.
    QueueSettings(u64, Vec<crate::queues::QueueSettings>),
    /// How much of a queue's limits is in use.
    LimitUsage(crate::limits::Usage),
    /// The last slot of each cron entry.
    CronSlots(Vec<crate::cron::CronSlot>),
    /// Inserted jobs when some of them existed already (unique conflicts), saying which; an
    /// insert without conflicts is answered with [`Response::Jobs`].
    Inserted(crate::unique::Inserted),
    /// Per queue and minute, outcome counts and duration percentiles.
    Metrics(Vec<crate::metrics::MetricPoint>),
    /// A job's latest progress, if it has one.
    Progress(Option<crate::progress::Progress>),
    /// The processes working on the store.
    Processes(Vec<crate::processes::ProcessInfo>),
    /// A batch's status.
    Batch(crate::batch::BatchStatus),
}

impl Response {
    /// An insert's answer: plain [`Response::Jobs`] unless some jobs existed already, so the
    /// common answer keeps its shape.
    pub fn inserted(inserted: crate::unique::Inserted) -> Response {
        if inserted.conflicts.is_empty() {
            Response::Jobs(inserted.jobs)
        } else {
            Response::Inserted(inserted)
        }
    }
}

/// [`Error`] as it crosses the socket, so the client raises the same typed error the owner
/// would have raised in-process. Postcard encodes a variant by its index: new variants go at
/// the end, and existing ones keep their fields, so every message that existed before encodes
/// as it did.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireError {
    InvalidJob(String),
    JobNotFound(JobId),
    IllegalTransition {
        id: JobId,
        from: JobState,
        action: String,
    },
    StorageLocked {
        path: PathBuf,
        holder: Option<u32>,
        same_process: bool,
    },
    NotAStore {
        path: PathBuf,
        detail: String,
    },
    Corrupted {
        path: PathBuf,
        detail: String,
    },
    FormatTooNew {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    Storage(String),
    Closed,
    OwnerGone {
        path: PathBuf,
        owner: u32,
        detail: String,
    },
    Protocol(String),
    CommitFailed {
        path: PathBuf,
        detail: String,
    },
    WriterStopped {
        cause: Box<WireError>,
    },
    /// [`Error::Corrupted`] naming the job whose record is the damage (`Corrupted` is the one
    /// with no job).
    CorruptedJob {
        path: PathBuf,
        detail: String,
        job: JobId,
    },
    BatchNotFound(String),
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        match e {
            Error::InvalidJob(m) => WireError::InvalidJob(m.clone()),
            Error::JobNotFound(id) => WireError::JobNotFound(*id),
            Error::BatchNotFound(id) => WireError::BatchNotFound(id.clone()),
            Error::IllegalTransition { id, from, action } => {
                WireError::IllegalTransition { id: *id, from: *from, action: (*action).into() }
            }
            Error::StorageLocked { path, holder, same_process } => WireError::StorageLocked {
                path: path.clone(),
                holder: *holder,
                same_process: *same_process,
            },
            Error::NotAStore { path, detail } => {
                WireError::NotAStore { path: path.clone(), detail: detail.clone() }
            }
            Error::Corrupted { path, detail, job: None } => {
                WireError::Corrupted { path: path.clone(), detail: detail.clone() }
            }
            Error::Corrupted { path, detail, job: Some(job) } => {
                WireError::CorruptedJob { path: path.clone(), detail: detail.clone(), job: *job }
            }
            Error::FormatTooNew { path, found, supported } => {
                WireError::FormatTooNew { path: path.clone(), found: *found, supported: *supported }
            }
            Error::Storage(m) => WireError::Storage(m.clone()),
            Error::Closed => WireError::Closed,
            Error::OwnerGone { path, owner, detail } => {
                WireError::OwnerGone { path: path.clone(), owner: *owner, detail: detail.clone() }
            }
            // Raised by clients only; an owner relaying one says it in words.
            Error::OwnerNotAnswering { .. } => WireError::Storage(e.to_string()),
            // Raised by the PostgreSQL store only, never by an owner; said in words if relayed.
            Error::SchemaTooNew { .. }
            | Error::SchemaTooOld { .. }
            | Error::ConnectionLost { .. } => WireError::Storage(e.to_string()),
            Error::Protocol(m) => WireError::Protocol(m.clone()),
            Error::CommitFailed { path, detail } => {
                WireError::CommitFailed { path: path.clone(), detail: detail.clone() }
            }
            Error::WriterStopped { cause } | Error::OwnerStopped { cause, .. } => {
                WireError::WriterStopped { cause: Box::new(cause.as_ref().into()) }
            }
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::InvalidJob(m) => Error::InvalidJob(m),
            WireError::JobNotFound(id) => Error::JobNotFound(id),
            WireError::BatchNotFound(id) => Error::BatchNotFound(id),
            WireError::IllegalTransition { id, from, action } => Error::IllegalTransition {
                id,
                from,
                // The field is `&'static str`: one of the state machine's own words.
                action: crate::state::Event::ACTIONS
                    .into_iter()
                    .find(|a| *a == action)
                    .unwrap_or("changed"),
            },
            WireError::StorageLocked { path, holder, same_process } => {
                Error::StorageLocked { path, holder, same_process }
            }
            WireError::NotAStore { path, detail } => Error::NotAStore { path, detail },
            WireError::Corrupted { path, detail } => Error::Corrupted { path, detail, job: None },
            WireError::CorruptedJob { path, detail, job } => {
                Error::Corrupted { path, detail, job: Some(job) }
            }
            WireError::FormatTooNew { path, found, supported } => {
                Error::FormatTooNew { path, found, supported }
            }
            WireError::Storage(m) => Error::Storage(m),
            WireError::Closed => Error::Storage(
                "the owner of the store is closing; retry, and the next call reconnects or \
                 takes the store over"
                    .into(),
            ),
            WireError::OwnerGone { path, owner, detail } => {
                Error::OwnerGone { path, owner, detail }
            }
            WireError::Protocol(m) => Error::Protocol(m),
            WireError::CommitFailed { path, detail } => Error::CommitFailed { path, detail },
            WireError::WriterStopped { cause } => {
                Error::WriterStopped { cause: Box::new((*cause).into()) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> PathBuf {
        PathBuf::from("/data/jobs.redb")
    }

    /// One of every variant, the typed ones nested as the writer nests them.
    fn every_error() -> Vec<Error> {
        let commit = Error::CommitFailed { path: path(), detail: "fsync: EIO".into() };
        vec![
            Error::InvalidJob("priority 10 is out of range".into()),
            Error::JobNotFound(4),
            Error::BatchNotFound("album-3".into()),
            Error::IllegalTransition { id: 4, from: JobState::Completed, action: "retried" },
            Error::StorageLocked { path: path(), holder: Some(77), same_process: false },
            Error::NotAStore { path: path(), detail: "no header".into() },
            Error::Corrupted { path: path(), detail: "redb: bad page".into(), job: None },
            Error::Corrupted { path: path(), detail: "job 9: empty record".into(), job: Some(9) },
            Error::FormatTooNew { path: path(), found: 9, supported: 5 },
            Error::Storage("cannot read it".into()),
            Error::OwnerGone { path: path(), owner: 77, detail: "reset".into() },
            Error::Protocol("bad frame".into()),
            commit.clone(),
            Error::WriterStopped { cause: Box::new(commit) },
            Error::WriterStopped { cause: Box::new(Error::Storage("disk gone".into())) },
        ]
    }

    #[test]
    fn every_error_crosses_the_socket_as_the_same_variant_fields_and_message() {
        for error in every_error() {
            let mut payload = Vec::new();
            let wire = WireError::from(&error);
            crate::ipc::frame::encode(&Response::Error(wire), &mut payload).unwrap();
            let Response::Error(back) = crate::ipc::frame::decode(&payload[4..]).unwrap() else {
                panic!("{error:?} did not come back as an error");
            };
            let back = Error::from(back);
            assert_eq!(format!("{back:?}"), format!("{error:?}"));
            assert_eq!(back.to_string(), error.to_string());
        }
    }

    /// Postcard encodes a variant by its index: the variants that existed before the typed
    /// storage errors keep theirs, so a message that existed then encodes as it did.
    #[test]
    fn existing_wire_errors_keep_their_indices() {
        let first_byte = |e: WireError| postcard::to_allocvec(&e).unwrap()[0];
        assert_eq!(first_byte(WireError::InvalidJob(String::new())), 0);
        assert_eq!(first_byte(WireError::Corrupted { path: path(), detail: String::new() }), 5);
        assert_eq!(first_byte(WireError::Storage(String::new())), 7);
        assert_eq!(first_byte(WireError::Closed), 8);
        assert_eq!(first_byte(WireError::Protocol(String::new())), 10);
        assert_eq!(first_byte(WireError::CommitFailed { path: path(), detail: String::new() }), 11);
        let stopped = WireError::WriterStopped { cause: Box::new(WireError::Closed) };
        assert_eq!(first_byte(stopped), 12);
        let job = WireError::CorruptedJob { path: path(), detail: String::new(), job: 1 };
        assert_eq!(first_byte(job), 13);
    }
}
