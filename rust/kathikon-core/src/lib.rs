//! Kathikon's engine: durable jobs on redb, the job state machine, per-queue claim queues,
//! the scheduler and the pruner. This crate knows nothing of Python; `kathikon-py` wraps it.
//!
//! The shape, in one breath: every mutation is a [`writer`] command applied by one applier at
//! a time (the writer thread, or an inserting caller that found it idle), batch by batch, each
//! batch made durable by one fsync (group commit); the [`state`] module alone decides
//! which state may follow which; [`claim`] holds the in-memory ready queues that workers pop
//! without a lock; [`Engine`] is the public face that ties them together.

pub mod backoff;
pub mod claim;
pub mod clock;
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod guard;
pub mod job;
#[cfg(unix)]
pub mod net;
pub mod state;
pub mod storage;
pub mod telemetry;
mod writer;

pub use clock::{Clock, Micros, SystemClock};
pub use engine::{Durability, Engine, EngineConfig, ListFilter, Recovery};
pub use error::{Error, Result};
pub use job::{Ack, AckResult, Job, JobError, JobId, NewJob, Outcome};
pub use state::JobState;
pub use telemetry::EngineEvent;
