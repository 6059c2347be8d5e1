//! [`Command`]: what callers ask of the writer, each with the channel its answer goes back on;
//! and [`Reply`]: a command's answer, computed inside the batch's transaction and sent only
//! after the batch commits (or replaced by the batch's error when it does not).

use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::claim::{ClaimKey, ClaimQueue};
use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::job::{Ack, AckResult, Job, JobId, NewJob};
use crate::listing::{BulkAction, Matcher};
use crate::queues::{QueueChange, QueueSettings};
use crate::request::RequestId;
use crate::state::JobState;
use crate::unique::Inserted;

/// What callers ask of the writer. Each carries the channel its answer goes back on.
pub(crate) enum Command {
    /// With a request id (inserts sent over the socket), an insert the store remembers is
    /// answered with the jobs it stored then, and no new ones.
    Insert {
        jobs: Vec<NewJob>,
        request: Option<RequestId>,
        reply: Sender<Result<Inserted>>,
    },
    /// Mark the jobs at `keys`, popped from `queue` at `at` (the claimer's time, which its
    /// queue's limits counted), executing as of `at`.
    Claim {
        queue: Arc<ClaimQueue>,
        keys: Vec<ClaimKey>,
        at: Micros,
        reply: Sender<Result<Vec<Job>>>,
    },
    Ack {
        acks: Vec<Ack>,
        reply: Option<Sender<Result<Vec<AckResult>>>>,
    },
    Cancel {
        id: JobId,
        reply: Sender<Result<(Job, JobState)>>,
    },
    Retry {
        id: JobId,
        reply: Sender<Result<Job>>,
    },
    Prune {
        before: Micros,
        reply: Sender<Result<u64>>,
    },
    /// A bulk action on these jobs, each only if `matcher` still selects it.
    Bulk {
        action: BulkAction,
        ids: Vec<JobId>,
        matcher: Arc<Matcher>,
        reply: Sender<Result<u64>>,
    },
    /// Take jobs back from a worker that lost them (its process disconnected or its lease
    /// expired). Each `(id, attempt)` is rescued only if that attempt is still executing.
    Rescue {
        jobs: Vec<(JobId, u32)>,
        cause: String,
        reply: Sender<Result<u64>>,
    },
    /// Record refused reports: `(id, attempt, text)` appended to the job's history, state
    /// untouched.
    Fence {
        notes: Vec<(JobId, u32, String)>,
        reply: Sender<Result<u64>>,
    },
    /// A barrier: answered once everything sent before it has committed, with due jobs
    /// promoted as of now (or as of `promote_until`, when later: "run scheduled jobs now").
    Sync {
        promote_until: Option<Micros>,
        reply: Sender<Result<()>>,
    },
    /// Store a running attempt's progress; answered with 1 if stored, 0 if the attempt is not
    /// executing.
    SetProgress {
        id: JobId,
        progress: crate::progress::Progress,
        reply: Sender<Result<u64>>,
    },
    /// Write the metrics counts held in memory, the running minute's too (a reader asks).
    FlushMetrics {
        reply: Sender<Result<()>>,
    },
    /// Move these records to the quarantine table if they still do not decode (a reader
    /// found them; it cannot write). Unanswered.
    Quarantine {
        ids: Vec<JobId>,
    },
    /// Look at the due time again (a caller's own batch moved it earlier), and do the work
    /// that batch left for the writer's idle time. Unanswered, and never part of a batch.
    Wake,
    Shutdown,
    /// Change a queue's runtime settings; `queue` is its claim queue, whose paused flag
    /// follows the stored value once the change commits.
    SetQueue {
        queue: Arc<ClaimQueue>,
        name: String,
        change: QueueChange,
        reply: Sender<Result<QueueSettings>>,
    },
}

/// One command's answer, computed inside the transaction and sent only after it commits.
pub(crate) enum Reply {
    Jobs(Result<Vec<Job>>),
    Acks(Result<Vec<AckResult>>),
    Cancelled(Result<(Job, JobState)>),
    Job(Result<Job>),
    Count(Result<u64>),
    Unit,
    Queue(Result<QueueSettings>),
    Inserted(Result<Inserted>),
}

impl Command {
    pub(crate) fn answer(self, reply: Reply) {
        // A caller that gave up waiting has dropped its receiver; nothing to do then.
        match (self, reply) {
            (Command::Claim { reply, .. }, Reply::Jobs(r)) => {
                let _ = reply.send(r);
            }
            (Command::Ack { reply: Some(reply), .. }, Reply::Acks(r)) => {
                let _ = reply.send(r);
            }
            (Command::Cancel { reply, .. }, Reply::Cancelled(r)) => {
                let _ = reply.send(r);
            }
            (Command::Retry { reply, .. }, Reply::Job(r)) => {
                let _ = reply.send(r);
            }
            (
                Command::Prune { reply, .. }
                | Command::Bulk { reply, .. }
                | Command::Rescue { reply, .. }
                | Command::Fence { reply, .. }
                | Command::SetProgress { reply, .. },
                Reply::Count(r),
            ) => {
                let _ = reply.send(r);
            }
            (Command::Sync { reply, .. } | Command::FlushMetrics { reply }, Reply::Unit) => {
                let _ = reply.send(Ok(()));
            }
            (Command::SetQueue { reply, .. }, Reply::Queue(r)) => {
                let _ = reply.send(r);
            }
            (Command::Insert { reply, .. }, Reply::Inserted(r)) => {
                let _ = reply.send(r);
            }
            _ => {}
        }
    }

    pub(crate) fn fail(self, error: &dyn Fn() -> Error) {
        match self {
            Command::Insert { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Command::Claim { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Command::Ack { reply: Some(reply), .. } => {
                let _ = reply.send(Err(error()));
            }
            Command::Cancel { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Command::Retry { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Command::Prune { reply, .. }
            | Command::Bulk { reply, .. }
            | Command::Rescue { reply, .. }
            | Command::Fence { reply, .. }
            | Command::SetProgress { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Command::Sync { reply, .. } | Command::FlushMetrics { reply } => {
                let _ = reply.send(Err(error()));
            }
            Command::SetQueue { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Command::Ack { reply: None, .. }
            | Command::Quarantine { .. }
            | Command::Wake
            | Command::Shutdown => {}
        }
    }
}
