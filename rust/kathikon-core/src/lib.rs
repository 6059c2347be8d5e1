//! Kathikon's engine: durable jobs on redb, the job state machine, per-queue claim queues,
//! the scheduler and the pruner. This crate knows nothing of Python; `kathikon-py` wraps it.
//!
//! The shape, in one breath: every mutation is a [`writer`] command applied by one applier at
//! a time (the writer thread, or an inserting caller that found it idle), batch by batch, each
//! batch made durable by one fsync (group commit); the [`state`] module alone decides
//! which state may follow which; [`claim`] holds the in-memory ready queues that workers pop
//! without a lock; [`Engine`] ties them together in the process that owns the store file.
//!
//! The app talks to a store through [`Jobs`], the contract: one method per verb (insert,
//! claim, ack, cancel, retry, list, …), each with its promise. [`Engine`] implements it in
//! the owning process, [`ipc::Client`] over the owner's socket, and [`ipc::Node`] holds
//! whichever of the two this process is right now; `tests/conformance` runs the same
//! behaviour tests against each implementation.

pub mod app_store;
pub mod backoff;
pub mod batch;
pub mod claim;
pub mod clock;
pub mod cron;
pub mod engine;
pub mod error;
mod finished;
mod fork;
#[doc(hidden)]
pub mod fuzzing;
mod guard;
#[cfg(unix)]
pub mod ipc;
pub mod job;
pub mod jobs;
pub mod limits;
pub mod listing;
mod listing_index;
pub mod metrics;
#[cfg(feature = "postgres")]
pub mod pg;
mod plugins;
pub mod processes;
pub mod progress;
pub mod queues;
mod ready;
mod request;
pub mod retention;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod unique;
pub mod watchdog;
mod writer;

pub use app_store::{AppRole, AppStore};
pub use batch::{BatchEvent, BatchStatus, JoinBatch};
pub use claim::Claimer;
pub use clock::{Clock, Micros, SystemClock};
pub use cron::{CatchUp, CronEntry, CronSlot};
pub use engine::{Durability, Engine, EngineConfig, Recovery};
pub use error::{Error, Result};
pub use job::{Ack, AckResult, Job, JobError, JobId, NewJob, Outcome};
pub use jobs::{Jobs, ListFilter};
pub use listing::{BulkAction, TimeRange, BULK_CHUNK};
pub use metrics::MetricPoint;
pub use processes::{ProcessInfo, ProcessRole};
pub use progress::Progress;
pub use queues::{QueueChange, QueueSettings};
pub use request::{RequestId, REQUEST_MEMORY};
pub use retention::Retention;
pub use state::JobState;
pub use telemetry::EngineEvent;
pub use unique::{Inserted, UniqueSpec};
