//! The job state machine: the only place that says which state may follow which.
//!
//! ```text
//!  insert ─┬─► scheduled ──promote──► available ──claim──► executing ──complete──► completed
//!          └─────────────────────────►    ▲                  │ │ │ └─fail (attempts left)─► retryable ─promote─┘
//!                                         │                  │ │ └──fail (exhausted) / discard──► discarded
//!                                         └──rescue──────────┘ └──snooze──► scheduled
//!  cancel: scheduled | available | executing | retryable ──► cancelled
//!  retry:  scheduled | retryable | completed | cancelled | discarded ──► available
//!  reschedule (a unique insert's replace moved it later): available ──► scheduled
//! ```
//! Storage persists the state this module returns and never decides one itself.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::job::JobId;

/// Where a job is in its life. Names and spelling are shared with Python, docs and telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum JobState {
    /// Waiting for its `scheduled_at` time.
    Scheduled = 0,
    /// Ready to be claimed by a worker.
    Available = 1,
    /// Claimed; its callback is running (or its process died while it ran).
    Executing = 2,
    /// Failed with attempts left; waits for its backoff to pass.
    Retryable = 3,
    /// Finished successfully. Terminal.
    Completed = 4,
    /// Cancelled by a user or by the job itself. Terminal.
    Cancelled = 5,
    /// Given up on: attempts exhausted, or discarded by the job. Terminal.
    Discarded = 6,
}

impl JobState {
    /// Every state, in declaration order.
    pub const ALL: [JobState; 7] = [
        JobState::Scheduled,
        JobState::Available,
        JobState::Executing,
        JobState::Retryable,
        JobState::Completed,
        JobState::Cancelled,
        JobState::Discarded,
    ];

    /// States a job never leaves on its own (only `retry` or the pruner touch them).
    pub const TERMINAL: [JobState; 3] =
        [JobState::Completed, JobState::Cancelled, JobState::Discarded];

    /// States that wait for a time to pass before becoming available.
    pub const WAITING: [JobState; 2] = [JobState::Scheduled, JobState::Retryable];

    /// Whether the job is finished for good.
    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }

    /// Whether the job waits on a due time.
    pub fn is_waiting(self) -> bool {
        Self::WAITING.contains(&self)
    }

    /// The lowercase name used everywhere outside Rust.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Executing => "executing",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Discarded => "discarded",
        }
    }

    /// Parse a lowercase state name.
    pub fn parse(name: &str) -> Result<JobState> {
        Self::ALL.into_iter().find(|s| s.as_str() == name).ok_or_else(|| {
            Error::InvalidJob(format!(
                "unknown job state {name:?}; expected one of scheduled, available, executing, \
                 retryable, completed, cancelled, discarded"
            ))
        })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happens to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Its due time passed.
    Promote,
    /// A worker took it.
    Claim,
    /// The callback returned normally.
    Complete,
    /// The callback failed; `exhausted` when no attempts remain.
    Fail {
        /// No attempts remain.
        exhausted: bool,
    },
    /// The callback asked to run again later without using up an attempt.
    Snooze,
    /// A user or the callback cancelled it.
    Cancel,
    /// The callback gave up on it.
    Discard,
    /// Found executing at open: its process died. `exhausted` when no attempts remain.
    Rescue {
        /// No attempts remain.
        exhausted: bool,
    },
    /// A user asked for it to run again now.
    Retry,
    /// A unique insert that replaced its `scheduled_at` moved it into the future.
    Reschedule,
}

impl Event {
    /// Every event's [`Event::action`], in the order of the variants.
    pub const ACTIONS: [&'static str; 10] = [
        "promoted",
        "claimed",
        "completed",
        "failed",
        "snoozed",
        "cancelled",
        "discarded",
        "rescued",
        "retried",
        "rescheduled",
    ];

    /// How the event reads in an error message ("job 3 is completed; it cannot be claimed …").
    pub fn action(self) -> &'static str {
        Self::ACTIONS[match self {
            Event::Promote => 0,
            Event::Claim => 1,
            Event::Complete => 2,
            Event::Fail { .. } => 3,
            Event::Snooze => 4,
            Event::Cancel => 5,
            Event::Discard => 6,
            Event::Rescue { .. } => 7,
            Event::Retry => 8,
            Event::Reschedule => 9,
        }]
    }
}

/// The transition table. Returns the state that follows `from` on `event`, or
/// [`Error::IllegalTransition`] when the table has no such edge.
pub fn transition(id: JobId, from: JobState, event: Event) -> Result<JobState> {
    use JobState::{Available, Cancelled, Completed, Discarded, Executing, Retryable, Scheduled};
    let next = match (from, event) {
        (Scheduled | Retryable, Event::Promote) => Some(Available),
        (Available, Event::Claim) => Some(Executing),
        (Executing, Event::Complete) => Some(Completed),
        (Executing, Event::Fail { exhausted: false }) => Some(Retryable),
        (Executing, Event::Fail { exhausted: true } | Event::Discard) => Some(Discarded),
        (Executing, Event::Snooze) => Some(Scheduled),
        (Executing, Event::Rescue { exhausted: false }) => Some(Available),
        (Executing, Event::Rescue { exhausted: true }) => Some(Discarded),
        (Scheduled | Available | Executing | Retryable, Event::Cancel) => Some(Cancelled),
        (Scheduled | Retryable | Completed | Cancelled | Discarded, Event::Retry) => {
            Some(Available)
        }
        (Available, Event::Reschedule) => Some(Scheduled),
        _ => None,
    };
    next.ok_or(Error::IllegalTransition { id, from, action: event.action() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<Event> {
        vec![
            Event::Promote,
            Event::Claim,
            Event::Complete,
            Event::Fail { exhausted: false },
            Event::Fail { exhausted: true },
            Event::Snooze,
            Event::Cancel,
            Event::Discard,
            Event::Rescue { exhausted: false },
            Event::Rescue { exhausted: true },
            Event::Retry,
            Event::Reschedule,
        ]
    }

    /// The full table written out by hand, independently of the `match` above: every
    /// (state, event) pair not listed here must be refused.
    const LEGAL: &[(JobState, &str, JobState)] = &[
        (JobState::Scheduled, "promote", JobState::Available),
        (JobState::Retryable, "promote", JobState::Available),
        (JobState::Available, "claim", JobState::Executing),
        (JobState::Executing, "complete", JobState::Completed),
        (JobState::Executing, "fail", JobState::Retryable),
        (JobState::Executing, "fail-exhausted", JobState::Discarded),
        (JobState::Executing, "discard", JobState::Discarded),
        (JobState::Executing, "snooze", JobState::Scheduled),
        (JobState::Executing, "rescue", JobState::Available),
        (JobState::Executing, "rescue-exhausted", JobState::Discarded),
        (JobState::Scheduled, "cancel", JobState::Cancelled),
        (JobState::Available, "cancel", JobState::Cancelled),
        (JobState::Executing, "cancel", JobState::Cancelled),
        (JobState::Retryable, "cancel", JobState::Cancelled),
        (JobState::Scheduled, "retry", JobState::Available),
        (JobState::Retryable, "retry", JobState::Available),
        (JobState::Completed, "retry", JobState::Available),
        (JobState::Cancelled, "retry", JobState::Available),
        (JobState::Discarded, "retry", JobState::Available),
        (JobState::Available, "reschedule", JobState::Scheduled),
    ];

    fn name(e: Event) -> &'static str {
        match e {
            Event::Promote => "promote",
            Event::Claim => "claim",
            Event::Complete => "complete",
            Event::Fail { exhausted: false } => "fail",
            Event::Fail { exhausted: true } => "fail-exhausted",
            Event::Snooze => "snooze",
            Event::Cancel => "cancel",
            Event::Discard => "discard",
            Event::Rescue { exhausted: false } => "rescue",
            Event::Rescue { exhausted: true } => "rescue-exhausted",
            Event::Retry => "retry",
            Event::Reschedule => "reschedule",
        }
    }

    #[test]
    fn every_pair_matches_the_written_table() {
        let mut legal_seen = 0;
        for from in JobState::ALL {
            for event in events() {
                let expected =
                    LEGAL.iter().find(|(f, e, _)| *f == from && *e == name(event)).map(|t| t.2);
                match (transition(7, from, event), expected) {
                    (Ok(got), Some(want)) => {
                        assert_eq!(got, want, "{from} on {}", name(event));
                        legal_seen += 1;
                    }
                    (Err(Error::IllegalTransition { id, from: f, action }), None) => {
                        assert_eq!((id, f, action), (7, from, event.action()));
                    }
                    (got, want) => panic!("{from} on {}: got {got:?}, want {want:?}", name(event)),
                }
            }
        }
        assert_eq!(legal_seen, LEGAL.len());
    }

    #[test]
    fn terminal_states_only_leave_by_retry() {
        for from in JobState::TERMINAL {
            for event in events() {
                let ok = transition(1, from, event).is_ok();
                assert_eq!(ok, event == Event::Retry, "{from} on {event:?}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()).unwrap(), s);
        }
        let err = JobState::parse("running").unwrap_err().to_string();
        assert!(err.contains("\"running\""), "{err}");
    }
}
