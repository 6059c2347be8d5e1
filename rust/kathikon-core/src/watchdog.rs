//! [`Watchdog`]: stopping jobs whose code cannot be interrupted (a sync job's thread), as a
//! worker process does it: a thread cannot be stopped, so the process that runs it is, and the
//! other jobs it held are rescued as after any crash.
//!
//! Two things stop a watched job:
//!
//! - **Its timeout.** A job past its deadline is acknowledged as failed with the watchdog's
//!   error text (retried per its attempts), and only once that failure is stored does the
//!   watchdog call its `ended` hook with [`Stopped::TimedOut`]. A job that finished first
//!   (its own outcome stored, or the job cancelled meanwhile) makes the failure stale: the
//!   hook is not called.
//! - **Its cancellation** (for a job watched with `kill_on_cancel`). Every [`LOOK_EVERY`] the
//!   watchdog reads each such job from the store; once it finds the attempt it watches
//!   cancelled, it calls `ended` with [`Stopped::Cancelled`]. The store already says
//!   cancelled, so nothing is written. A job unwatched before a look found it cancelled (it
//!   returned; its outcome is refused) ends nothing.
//!
//! The watchdog is its own thread and never needs the interpreter's lock, so a job that holds
//! it (a loop in C) is stopped all the same. The thread does one thing at a time: a store that
//! does not answer a look delays a deadline due meanwhile (whose failure would need that store
//! too).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::Micros;
use crate::error::Result;
use crate::job::{Ack, AckResult, Job, JobId, Outcome};
use crate::state::JobState;

/// How the watchdog stores a failure: the store's ack, waiting for its result.
pub type AckFn = Box<dyn Fn(Ack) -> Result<Vec<AckResult>> + Send + Sync>;

/// How the watchdog reads a job it watches for cancellation: the store's get.
pub type GetFn = Box<dyn Fn(JobId) -> Result<Job> + Send + Sync>;

/// What ends the process once a watched job is stopped (given the job's id and why).
pub type Ended = Box<dyn Fn(JobId, Stopped) + Send + Sync>;

/// How often a job watched for cancellation is read from the store: a cancelled job's
/// process ends within about this long of the cancel (plus one read), and each such job
/// running costs its process one read of the store this often.
pub const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Why a watched job was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It ran past its timeout; its failure is stored.
    TimedOut,
    /// It was cancelled while it ran (its worker stops such jobs).
    Cancelled,
}

/// A job's timeout: how long it may run, and the error its failure records with the delay
/// before its retry (`None`: the default backoff).
#[derive(Debug, Clone)]
pub struct Timeout {
    /// How long the attempt may run.
    pub after: Duration,
    /// The failure's error text.
    pub error: String,
    /// The delay before the retry, µs; `None`: the default backoff.
    pub retry_in: Option<Micros>,
}

/// A watched job: its attempt, and what stops it.
struct Watched {
    attempt: u32,
    /// The timeout and its deadline.
    timeout: Option<(Instant, Timeout)>,
    /// When the job is next read to see whether it was cancelled (`None`: it is not).
    next_look: Option<Instant>,
}

impl Watched {
    /// The soonest the watchdog has something to do for this job.
    fn next(&self) -> Option<Instant> {
        let deadline = self.timeout.as_ref().map(|(at, _)| *at);
        match (deadline, self.next_look) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Default)]
struct State {
    watched: HashMap<JobId, Watched>,
    stopped: bool,
}

/// The hooks through which the watchdog reaches the store and ends the process.
pub struct Hooks {
    /// Stores a timed-out attempt's failure.
    pub ack: AckFn,
    /// Reads a job watched for cancellation.
    pub get: GetFn,
    /// Ends the process once a watched job is stopped.
    pub ended: Ended,
}

/// The watched jobs and the thread that stops those past their deadline or cancelled.
pub struct Watchdog {
    state: Mutex<State>,
    changed: Condvar,
}

impl Watchdog {
    /// Start the thread, reaching the store and ending the process through `hooks`.
    pub fn start(hooks: Hooks) -> std::io::Result<Arc<Watchdog>> {
        let watchdog = Arc::new(Watchdog { state: Mutex::default(), changed: Condvar::new() });
        let thread = watchdog.clone();
        std::thread::Builder::new()
            .name("kathikon-watchdog".into())
            .spawn(move || thread.run(&hooks))?;
        Ok(watchdog)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Watch attempt `attempt` of job `id`: fail it if it still runs past `timeout`, and end
    /// the process if it is cancelled while it runs when `kill_on_cancel`. (Neither: nothing
    /// is watched.)
    pub fn watch(&self, id: JobId, attempt: u32, timeout: Option<Timeout>, kill_on_cancel: bool) {
        if timeout.is_none() && !kill_on_cancel {
            return;
        }
        let now = Instant::now();
        let watched = Watched {
            attempt,
            timeout: timeout.map(|t| (now + t.after, t)),
            next_look: kill_on_cancel.then(|| now + LOOK_EVERY),
        };
        self.state().watched.insert(id, watched);
        self.changed.notify_one();
    }

    /// Job `id` ended by itself: stop watching it.
    pub fn unwatch(&self, id: JobId) {
        self.state().watched.remove(&id);
    }

    /// End the thread (it stops no job after this returns).
    pub fn stop(&self) {
        self.state().stopped = true;
        self.changed.notify_one();
    }

    fn run(&self, hooks: &Hooks) {
        let mut state = self.state();
        loop {
            if state.stopped {
                return;
            }
            let now = Instant::now();
            let due = state.watched.iter().find(|(_, w)| w.next().is_some_and(|at| at <= now));
            if let Some((&id, _)) = due {
                state = self.act(state, hooks, id, now);
                continue;
            }
            let next = state.watched.values().filter_map(Watched::next).min();
            state = match next {
                Some(at) => {
                    let wait = at.saturating_duration_since(now);
                    self.changed.wait_timeout(state, wait).unwrap_or_else(PoisonError::into_inner).0
                }
                None => self.changed.wait(state).unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// Do what is due for watched job `id`: fail it past its deadline, or look whether it
    /// was cancelled. The lock is released around the store's calls.
    fn act<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        hooks: &Hooks,
        id: JobId,
        now: Instant,
    ) -> MutexGuard<'a, State> {
        let watched = state.watched.get_mut(&id).expect("found due by the caller");
        let attempt = watched.attempt;
        if watched.timeout.as_ref().is_some_and(|(at, _)| *at <= now) {
            let (_, timeout) = state.watched.remove(&id).and_then(|w| w.timeout).expect("due");
            drop(state);
            let outcome = Outcome::Fail { error: timeout.error, retry_in: timeout.retry_in };
            let stored = (hooks.ack)(Ack { id, attempt, outcome });
            // Stale: the job's own outcome (or a cancel) came first, and nothing runs past
            // its time. An error: the failure may not be stored, but the thread must still
            // end; the job is rescued with the process's other jobs.
            if !matches!(stored.as_deref(), Ok([AckResult::Stale(_)])) {
                (hooks.ended)(id, Stopped::TimedOut);
            }
            return self.state();
        }
        watched.next_look = Some(now + LOOK_EVERY);
        drop(state);
        // An error (the owner away for a moment, the job deleted) ends nothing: the next look
        // tries again while the job is watched.
        let cancelled =
            (hooks.get)(id).is_ok_and(|j| j.state == JobState::Cancelled && j.attempt == attempt);
        let mut state = self.state();
        // Unwatched meanwhile: the job returned, and ends nothing.
        if cancelled && state.watched.get(&id).is_some_and(|w| w.attempt == attempt) {
            state.watched.remove(&id);
            drop(state);
            (hooks.ended)(id, Stopped::Cancelled);
            return self.state();
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineConfig};
    use crate::jobs::Jobs;

    type Fired = Arc<Mutex<Vec<(JobId, Stopped)>>>;

    fn engine_with_a_claimed_job() -> (Arc<Engine>, crate::job::Job) {
        let engine = Arc::new(Engine::open(EngineConfig::default()).unwrap());
        engine.insert(vec![crate::job::tests::new_job()]).unwrap();
        let job = engine.claim("default", 1, Duration::ZERO).unwrap().remove(0);
        (engine, job)
    }

    fn watchdog(engine: &Arc<Engine>) -> (Arc<Watchdog>, Fired) {
        let fired: Fired = Arc::default();
        let (acks, gets, record) = (engine.clone(), engine.clone(), fired.clone());
        let dog = Watchdog::start(Hooks {
            ack: Box::new(move |ack| acks.ack(vec![ack])),
            get: Box::new(move |id| gets.get(id)),
            ended: Box::new(move |id, why| record.lock().unwrap().push((id, why))),
        })
        .unwrap();
        (dog, fired)
    }

    fn timeout(millis: u64, error: &str) -> Timeout {
        Timeout { after: Duration::from_millis(millis), error: error.into(), retry_in: None }
    }

    fn wait_fired(fired: &Fired, within: Duration) -> Duration {
        let started = Instant::now();
        while fired.lock().unwrap().is_empty() {
            assert!(started.elapsed() < within, "never fired");
            std::thread::sleep(Duration::from_millis(5));
        }
        started.elapsed()
    }

    #[test]
    fn a_job_past_its_deadline_is_failed_with_the_error_and_then_expired() {
        let (engine, job) = engine_with_a_claimed_job();
        let (dog, fired) = watchdog(&engine);
        dog.watch(job.id, job.attempt, Some(timeout(50, "timeout: too slow")), false);
        wait_fired(&fired, Duration::from_secs(30));
        assert_eq!(*fired.lock().unwrap(), [(job.id, Stopped::TimedOut)]);
        let stored = engine.get(job.id).unwrap();
        assert_eq!(stored.state, JobState::Retryable, "failed, to be retried");
        assert_eq!(stored.errors.last().unwrap().error, "timeout: too slow");
        dog.stop();
    }

    #[test]
    fn a_job_that_ended_in_time_is_not_failed_and_nothing_expires() {
        let (engine, job) = engine_with_a_claimed_job();
        let (dog, fired) = watchdog(&engine);
        // Ended, but its unwatch comes too late: the failure is stale and nothing expires.
        dog.watch(job.id, job.attempt, Some(timeout(30, "timeout: too slow")), false);
        let done = Ack { id: job.id, attempt: job.attempt, outcome: Outcome::Complete };
        engine.ack(vec![done]).unwrap();
        // A second job watched and unwatched in time.
        dog.watch(job.id + 1, 1, Some(timeout(30, "timeout")), false);
        dog.unwatch(job.id + 1);
        std::thread::sleep(Duration::from_millis(300));
        assert!(fired.lock().unwrap().is_empty(), "{:?}", fired.lock().unwrap());
        assert_eq!(engine.get(job.id).unwrap().state, JobState::Completed);
        dog.stop();
    }

    #[test]
    fn a_job_cancelled_while_it_runs_ends_the_process_at_the_next_look() {
        let (engine, job) = engine_with_a_claimed_job();
        let (dog, fired) = watchdog(&engine);
        dog.watch(job.id, job.attempt, None, true);
        std::thread::sleep(LOOK_EVERY * 2);
        assert!(fired.lock().unwrap().is_empty(), "executing: nothing ends");
        engine.cancel(job.id).unwrap();
        let waited = wait_fired(&fired, Duration::from_secs(30));
        assert!(waited <= LOOK_EVERY + Duration::from_secs(2), "{waited:?}");
        assert_eq!(*fired.lock().unwrap(), [(job.id, Stopped::Cancelled)]);
        assert_eq!(engine.get(job.id).unwrap().state, JobState::Cancelled, "nothing written");
        dog.stop();
    }

    #[test]
    fn a_cancel_ends_nothing_for_a_job_not_watched_for_it_or_unwatched_first() {
        let (engine, job) = engine_with_a_claimed_job();
        let (dog, fired) = watchdog(&engine);
        // Watched for its timeout only: a cancel makes its failure stale, and nothing ends.
        dog.watch(
            job.id,
            job.attempt,
            Some(timeout(LOOK_EVERY.as_millis() as u64 * 2, "t")),
            false,
        );
        engine.cancel(job.id).unwrap();
        // Watched for cancellation, then unwatched (it returned) before the first look.
        engine.insert(vec![crate::job::tests::new_job()]).unwrap();
        let second = engine.claim("default", 1, Duration::ZERO).unwrap().remove(0);
        dog.watch(second.id, second.attempt, None, true);
        engine.cancel(second.id).unwrap();
        dog.unwatch(second.id);
        std::thread::sleep(LOOK_EVERY * 3);
        assert!(fired.lock().unwrap().is_empty(), "{:?}", fired.lock().unwrap());
        dog.stop();
    }
}
