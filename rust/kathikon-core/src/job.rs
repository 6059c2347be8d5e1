//! Jobs as the engine stores them, and the changes a job goes through.
//!
//! Each `Job` method applies one [`Event`] through [`state::transition`] and updates the
//! fields that go with it (attempt, timestamps, error history), so a record's fields can never
//! disagree with its state.

use serde::{Deserialize, Serialize};

use crate::backoff;
use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::state::{self, Event, JobState};

/// A job's id: assigned by the engine, ascending in insert order, never reused.
pub type JobId = u64;

/// Highest priority number (lowest urgency). Priority 0 runs first.
pub const MAX_PRIORITY: u8 = 9;

/// Longest error text kept per entry; tracebacks beyond it are cut (with a marker).
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// One failure, cancellation or rescue in a job's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// When it happened.
    pub at: Micros,
    /// The attempt it happened in.
    pub attempt: u32,
    /// The error text (for a Python exception: its formatted traceback).
    pub error: String,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id.
    pub id: JobId,
    /// Current state.
    pub state: JobState,
    /// Queue name.
    pub queue: String,
    /// Worker name (module-qualified in Python).
    pub worker: String,
    /// Arguments, as JSON text.
    pub args: String,
    /// Free-form metadata, as JSON text.
    pub meta: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Attempts started so far (counted when claimed).
    pub attempt: u32,
    /// Attempts allowed before the job is discarded.
    pub max_attempts: u32,
    /// 0 (runs first) … 9.
    pub priority: u8,
    /// Failures, cancellations and rescues, oldest first.
    pub errors: Vec<JobError>,
    /// When it was inserted.
    pub inserted_at: Micros,
    /// When it is (or was) due to run.
    pub scheduled_at: Micros,
    /// When its latest attempt started.
    pub attempted_at: Option<Micros>,
    /// When it completed.
    pub completed_at: Option<Micros>,
    /// When it was cancelled.
    pub cancelled_at: Option<Micros>,
    /// When it was discarded.
    pub discarded_at: Option<Micros>,
    /// What its worker returned, as JSON text, when it completed with a value kept
    /// ([`Outcome::Return`]); `None` otherwise.
    pub result: Option<String>,
    /// The batch it belongs to ([`crate::batch`]), if any. The last field: a record written
    /// before it (or `result`) existed is its encoding without them (see
    /// `storage/redb/schema.rs`).
    pub batch: Option<String>,
}

/// The fields a job's index entries are made of. The queue and id never change, so together
/// with them a placement says exactly which index keys a job had before a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The state.
    pub state: JobState,
    /// The priority.
    pub priority: u8,
    /// The due time.
    pub scheduled_at: Micros,
    /// When it finished, for a terminal job.
    pub finished_at: Option<Micros>,
}

/// A job to insert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJob {
    /// Queue name.
    pub queue: String,
    /// Worker name.
    pub worker: String,
    /// Arguments, as JSON text (validated by the caller's encoder; checked to parse here).
    pub args: String,
    /// Metadata, as JSON text.
    pub meta: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Attempts allowed, at least 1.
    pub max_attempts: u32,
    /// 0 … 9.
    pub priority: u8,
    /// When to run it; `None` means now.
    pub scheduled_at: Option<Micros>,
    /// Insert it only if no job with the same key (in the states and period the spec names)
    /// exists; `None` for a plain insert (boxed, so a plain job stays small to move).
    pub unique: Option<Box<crate::unique::UniqueSpec>>,
    /// The batch it joins, or creates ([`crate::batch`]); `None` for a job of no batch.
    pub batch: Option<Box<crate::batch::JoinBatch>>,
}

impl NewJob {
    /// Check everything that can be checked without storage. The message names the value.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidJob(m));
        if self.queue.is_empty() {
            return bad("queue name is empty; pass a queue name such as \"default\"".into());
        }
        if self.worker.is_empty() {
            return bad("worker name is empty".into());
        }
        if self.priority > MAX_PRIORITY {
            return bad(format!(
                "priority {} is out of range; use 0 (runs first) to {MAX_PRIORITY}",
                self.priority
            ));
        }
        if self.max_attempts < 1 {
            return bad(format!("max_attempts {} must be at least 1", self.max_attempts));
        }
        for (what, text) in [("args", &self.args), ("meta", &self.meta)] {
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
                return bad(format!("{what} is not valid JSON ({e})"));
            }
        }
        if let Some(join) = &self.batch {
            crate::batch::check_id(&join.id)?;
        }
        match &self.unique {
            Some(spec) => spec.validate(),
            None => Ok(()),
        }
    }

    /// The stored job this becomes at `now`, with id `id`.
    pub fn into_job(self, id: JobId, now: Micros) -> Job {
        let scheduled_at = self.scheduled_at.unwrap_or(now);
        let state = if scheduled_at > now { JobState::Scheduled } else { JobState::Available };
        Job {
            id,
            state,
            queue: self.queue,
            worker: self.worker,
            args: self.args,
            meta: self.meta,
            tags: self.tags,
            attempt: 0,
            max_attempts: self.max_attempts,
            priority: self.priority,
            errors: Vec::new(),
            inserted_at: now,
            scheduled_at,
            attempted_at: None,
            completed_at: None,
            cancelled_at: None,
            discarded_at: None,
            result: None,
            batch: self.batch.map(|join| join.id),
        }
    }
}

/// How an attempt ended, as reported by the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Returned normally.
    Complete,
    /// Raised. Retried after `retry_in` (or the default backoff) while attempts remain.
    Fail {
        /// The error text.
        error: String,
        /// Delay before the retry; `None` uses [`backoff::default_backoff`].
        retry_in: Option<Micros>,
    },
    /// Run again after `delay` without using up an attempt.
    Snooze {
        /// How long to wait.
        delay: Micros,
    },
    /// Stop for good, as cancelled.
    Cancel {
        /// Why.
        reason: String,
    },
    /// Stop for good, as discarded.
    Discard {
        /// Why.
        reason: String,
    },
    /// Handed back unfinished by a worker that is shutting down (its grace period ran out):
    /// due again at once, `reason` recorded in its history, and, as with a snooze, without
    /// using up an attempt, so that no number of deploys can discard a job.
    Interrupt {
        /// What interrupted it.
        reason: String,
    },
    /// Returned a value to keep: completes the job as [`Outcome::Complete`] does, and keeps
    /// `Ok(json)` (the value as JSON text) as its result; `Err(why)` when the value could not
    /// be kept (not JSON, too large): the job completes without a result and `why` goes into
    /// its history. Its kind is [`Outcome::Complete`]'s.
    Return {
        /// The value as JSON text, or why it was not kept.
        result: std::result::Result<String, String>,
    },
}

impl Outcome {
    /// Every kind's name, in declaration order: the names a host passes to [`Outcome::from_kind`]
    /// (Python's ack tuples, telemetry's `outcome`). Defined here once and exported by the
    /// binding, so no other layer spells them.
    pub const KINDS: [&'static str; 6] =
        ["complete", "fail", "snooze", "cancel", "discard", "interrupt"];

    /// This outcome's kind, one of [`Outcome::KINDS`].
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Complete | Outcome::Return { .. } => Self::KINDS[0],
            Outcome::Fail { .. } => Self::KINDS[1],
            Outcome::Snooze { .. } => Self::KINDS[2],
            Outcome::Cancel { .. } => Self::KINDS[3],
            Outcome::Discard { .. } => Self::KINDS[4],
            Outcome::Interrupt { .. } => Self::KINDS[5],
        }
    }

    /// What the job went through, in the past tense ("completed", "failed", …), for messages
    /// about an outcome after the fact.
    pub fn past_tense(&self) -> &'static str {
        match self {
            Outcome::Complete | Outcome::Return { .. } => "completed",
            Outcome::Fail { .. } => "failed",
            Outcome::Snooze { .. } => "snoozed",
            Outcome::Cancel { .. } => "cancelled",
            Outcome::Discard { .. } => "discarded",
            Outcome::Interrupt { .. } => "interrupted",
        }
    }

    /// The outcome named `kind` (one of [`Outcome::KINDS`]). `text` is the error (fail) or the
    /// reason (cancel, discard, interrupt), empty when absent; `delay` is the retry delay (fail, `None` for
    /// the default backoff) or the snooze (0 when absent), in microseconds. For complete,
    /// `result` is the value to keep (JSON text) and `text` why a value was not kept
    /// ([`Outcome::Return`]; neither: [`Outcome::Complete`]). Other kinds ignore what they do
    /// not use. An unknown kind is an [`Error::InvalidJob`] that lists the known ones.
    pub fn from_kind(
        kind: &str,
        text: Option<String>,
        delay: Option<Micros>,
        result: Option<String>,
    ) -> Result<Outcome> {
        if kind == "complete" {
            return Ok(match (result, text) {
                (Some(json), _) => Outcome::Return { result: Ok(json) },
                (None, Some(why)) => Outcome::Return { result: Err(why) },
                (None, None) => Outcome::Complete,
            });
        }
        let text = text.unwrap_or_default();
        Ok(match kind {
            "fail" => Outcome::Fail { error: text, retry_in: delay },
            "snooze" => Outcome::Snooze { delay: delay.unwrap_or(0) },
            "cancel" => Outcome::Cancel { reason: text },
            "discard" => Outcome::Discard { reason: text },
            "interrupt" => Outcome::Interrupt { reason: text },
            other => {
                return Err(Error::InvalidJob(format!(
                    "unknown outcome kind {other:?}; expected one of {}",
                    Self::KINDS.join(", ")
                )))
            }
        })
    }
}

/// A worker's report on one attempt. `attempt` fences it: a report for an older attempt
/// (the job was rescued and claimed again) is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The job.
    pub id: JobId,
    /// The attempt this report is about.
    pub attempt: u32,
    /// How it ended.
    pub outcome: Outcome,
}

/// What became of an [`Ack`].
// Short-lived (one per ack, consumed at once), so boxing the job would cost more than it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckResult {
    /// Recorded; the job as it now stands.
    Applied(Job),
    /// Ignored: the job was no longer executing this attempt (cancelled meanwhile, rescued, or
    /// pruned). Carries the state found, if the job still exists.
    Stale(Option<JobState>),
}

fn clip(mut text: String) -> String {
    if text.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n… (truncated)");
    }
    text
}

impl Job {
    fn step(&mut self, event: Event) -> Result<()> {
        self.state = state::transition(self.id, self.state, event)?;
        Ok(())
    }

    fn record_error(&mut self, at: Micros, error: String) {
        self.errors.push(JobError { at, attempt: self.attempt, error: clip(error) });
    }

    /// The scheduler saw its due time pass.
    pub fn promote(&mut self) -> Result<()> {
        self.step(Event::Promote)
    }

    /// A worker claimed it: the attempt is counted now, before the callback runs, so a job
    /// that kills its process still uses up its attempts.
    pub fn claim(&mut self, now: Micros) -> Result<()> {
        self.step(Event::Claim)?;
        self.attempt += 1;
        self.attempted_at = Some(now);
        Ok(())
    }

    /// Apply a worker's outcome.
    pub fn finish(&mut self, outcome: Outcome, now: Micros) -> Result<()> {
        match outcome {
            Outcome::Complete => {
                self.step(Event::Complete)?;
                self.completed_at = Some(now);
            }
            Outcome::Return { result } => {
                self.step(Event::Complete)?;
                self.completed_at = Some(now);
                match result {
                    Ok(json) => self.result = Some(json),
                    Err(why) => self.record_error(now, why),
                }
            }
            Outcome::Fail { error, retry_in } => {
                let exhausted = self.attempt >= self.max_attempts;
                self.step(Event::Fail { exhausted })?;
                self.record_error(now, error);
                if exhausted {
                    self.discarded_at = Some(now);
                } else {
                    let delay =
                        retry_in.unwrap_or_else(|| backoff::default_backoff(self.attempt, self.id));
                    self.scheduled_at = now.saturating_add(delay.max(0));
                }
            }
            Outcome::Snooze { delay } => {
                self.step(Event::Snooze)?;
                // The attempt already counted; give it back by allowing one more, so attempts
                // never decrease (they are an audit trail) yet snoozing never exhausts a job.
                self.max_attempts = self.max_attempts.saturating_add(1);
                self.scheduled_at = now.saturating_add(delay.max(0));
            }
            Outcome::Interrupt { reason } => {
                // A snooze of no delay (the scheduler promotes it at once) that says why.
                self.step(Event::Snooze)?;
                self.max_attempts = self.max_attempts.saturating_add(1);
                self.scheduled_at = now;
                self.record_error(now, reason);
            }
            Outcome::Cancel { reason } => self.cancel(now, reason)?,
            Outcome::Discard { reason } => {
                self.step(Event::Discard)?;
                self.record_error(now, reason);
                self.discarded_at = Some(now);
            }
        }
        Ok(())
    }

    /// Cancel it, recording `reason` in its errors.
    pub fn cancel(&mut self, now: Micros, reason: String) -> Result<()> {
        self.step(Event::Cancel)?;
        self.record_error(now, reason);
        self.cancelled_at = Some(now);
        Ok(())
    }

    /// Its process died while it was executing (found at open).
    pub fn rescue(&mut self, now: Micros) -> Result<()> {
        let cause = format!(
            "orphaned: the process running attempt {} died before reporting an outcome",
            self.attempt
        );
        self.rescue_because(now, &cause)
    }

    /// Take it back from the worker running it (whose process died, disconnected or stopped
    /// renewing its lease): available again, or discarded when no attempts are left. `cause`
    /// opens the error entry; what became of the job follows it.
    pub fn rescue_because(&mut self, now: Micros, cause: &str) -> Result<()> {
        let exhausted = self.attempt >= self.max_attempts;
        self.step(Event::Rescue { exhausted })?;
        let what = if exhausted { "discarded: no attempts left" } else { "made available again" };
        self.record_error(now, format!("{cause}; {what}"));
        if exhausted {
            self.discarded_at = Some(now);
        } else {
            self.scheduled_at = now;
        }
        Ok(())
    }

    /// Note a refused report in its history without changing its state: an outcome for
    /// `attempt` arrived from a worker that had lost the job (fencing).
    pub fn note_fenced(&mut self, now: Micros, attempt: u32, text: String) {
        self.errors.push(JobError { at: now, attempt, error: clip(text) });
    }

    /// Run it again now. A job that used up its attempts gets one more.
    pub fn retry(&mut self, now: Micros) -> Result<()> {
        self.step(Event::Retry)?;
        self.max_attempts = self.max_attempts.max(self.attempt + 1);
        self.scheduled_at = now;
        self.completed_at = None;
        self.cancelled_at = None;
        self.discarded_at = None;
        self.result = None;
        Ok(())
    }

    /// A unique insert's replace moved its due time from now into the future (`at`): from
    /// available back to scheduled.
    pub fn reschedule(&mut self, at: Micros) -> Result<()> {
        self.step(Event::Reschedule)?;
        self.scheduled_at = at;
        Ok(())
    }

    /// Where it sits in the indexes right now.
    pub fn placement(&self) -> Placement {
        Placement {
            state: self.state,
            priority: self.priority,
            scheduled_at: self.scheduled_at,
            finished_at: self.finished_at(),
        }
    }

    /// When it reached its terminal state, if it has.
    pub fn finished_at(&self) -> Option<Micros> {
        match self.state {
            JobState::Completed => self.completed_at,
            JobState::Cancelled => self.cancelled_at,
            JobState::Discarded => self.discarded_at,
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid no-op job of queue `default` (other modules' tests adjust its fields).
    pub(crate) fn new_job() -> NewJob {
        NewJob {
            queue: "default".into(),
            worker: "m.f".into(),
            args: "{}".into(),
            meta: "{}".into(),
            tags: vec![],
            max_attempts: 2,
            priority: 0,
            scheduled_at: None,
            unique: None,
            batch: None,
        }
    }

    #[test]
    fn validation_names_the_value() {
        let mut j = new_job();
        j.priority = 10;
        assert!(j.validate().unwrap_err().to_string().contains("priority 10"));
        let mut j = new_job();
        j.max_attempts = 0;
        assert!(j.validate().unwrap_err().to_string().contains("max_attempts 0"));
        let mut j = new_job();
        j.args = "{".into();
        assert!(j.validate().unwrap_err().to_string().contains("args is not valid JSON"));
        assert!(new_job().validate().is_ok());
    }

    #[test]
    fn insert_in_future_is_scheduled() {
        let mut j = new_job();
        j.scheduled_at = Some(100);
        assert_eq!(j.clone().into_job(1, 50).state, JobState::Scheduled);
        assert_eq!(j.into_job(1, 100).state, JobState::Available);
    }

    #[test]
    fn failures_retry_then_discard() {
        let mut job = new_job().into_job(1, 0);
        job.claim(10).unwrap();
        job.finish(Outcome::Fail { error: "boom".into(), retry_in: Some(5) }, 20).unwrap();
        assert_eq!((job.state, job.scheduled_at), (JobState::Retryable, 25));
        job.promote().unwrap();
        job.claim(30).unwrap();
        job.finish(Outcome::Fail { error: "again".into(), retry_in: None }, 40).unwrap();
        assert_eq!(job.state, JobState::Discarded);
        assert_eq!(job.discarded_at, Some(40));
        assert_eq!(job.errors.iter().map(|e| e.attempt).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn snooze_keeps_attempts_growing_but_not_exhausting() {
        let mut job = new_job().into_job(1, 0);
        job.claim(1).unwrap();
        job.finish(Outcome::Snooze { delay: 100 }, 2).unwrap();
        assert_eq!((job.state, job.attempt, job.max_attempts), (JobState::Scheduled, 1, 3));
        assert_eq!(job.scheduled_at, 102);
    }

    #[test]
    fn interrupts_never_exhaust_a_job_and_say_why() {
        let mut job = new_job().into_job(1, 0);
        job.max_attempts = 1;
        for deploy in 1..=3u32 {
            let now = Micros::from(deploy) * 10;
            if job.state == JobState::Scheduled {
                job.promote().unwrap();
            }
            job.claim(now).unwrap();
            let reason = "interrupted by shutdown".to_string();
            job.finish(Outcome::Interrupt { reason }, now + 1).unwrap();
            assert_eq!((job.state, job.scheduled_at), (JobState::Scheduled, now + 1));
            assert_eq!(job.max_attempts - job.attempt, 1, "deploy {deploy} used up an attempt");
        }
        assert_eq!(job.errors.len(), 3);
        assert!(job.errors.iter().all(|e| e.error == "interrupted by shutdown"));
        assert_eq!(job.errors.iter().map(|e| e.attempt).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn rescue_discards_when_exhausted() {
        let mut job = new_job().into_job(1, 0);
        job.max_attempts = 1;
        job.claim(1).unwrap();
        job.rescue(2).unwrap();
        assert_eq!(job.state, JobState::Discarded);
        assert!(job.errors[0].error.starts_with("orphaned"));
    }

    #[test]
    fn every_kind_parses_back_to_an_outcome_of_that_kind() {
        for kind in Outcome::KINDS {
            let outcome = Outcome::from_kind(kind, Some("why".into()), Some(7), None).unwrap();
            assert_eq!(outcome.kind(), kind);
        }
        assert_eq!(
            Outcome::from_kind("fail", Some("boom".into()), None, None).unwrap(),
            Outcome::Fail { error: "boom".into(), retry_in: None }
        );
        assert_eq!(
            Outcome::from_kind("snooze", None, None, None).unwrap(),
            Outcome::Snooze { delay: 0 }
        );
        let refused = Outcome::from_kind("completed", None, None, None).unwrap_err().to_string();
        assert!(
            refused.contains("\"completed\"") && refused.contains("complete, fail"),
            "{refused}"
        );
    }

    #[test]
    fn a_returned_value_is_kept_and_one_not_kept_says_why() {
        let complete = |result: Option<&str>, why: Option<&str>| {
            let mut job = new_job().into_job(1, 0);
            job.claim(1).unwrap();
            let outcome =
                Outcome::from_kind("complete", why.map(Into::into), None, result.map(Into::into))
                    .unwrap();
            assert_eq!(outcome.kind(), "complete");
            job.finish(outcome, 2).unwrap();
            assert_eq!((job.state, job.completed_at), (JobState::Completed, Some(2)));
            job
        };
        let kept = complete(Some("[1,2]"), None);
        assert_eq!((kept.result.as_deref(), kept.errors.len()), (Some("[1,2]"), 0));
        let dropped = complete(None, Some("result not stored: too large"));
        assert_eq!(dropped.result, None);
        assert_eq!(dropped.errors[0].error, "result not stored: too large");
        let plain = complete(None, None);
        assert_eq!((plain.result, plain.errors.len()), (None, 0));
        // Retried, it is no longer finished: its old result goes.
        let mut again = kept;
        again.retry(3).unwrap();
        assert_eq!(again.result, None);
    }

    #[test]
    fn long_errors_are_clipped_on_a_char_boundary() {
        let mut job = new_job().into_job(1, 0);
        job.claim(1).unwrap();
        let long = "é".repeat(MAX_ERROR_BYTES);
        job.finish(Outcome::Discard { reason: long }, 2).unwrap();
        assert!(job.errors[0].error.ends_with("(truncated)"));
    }
}
