//! [`Watchdog`]: timeouts for jobs whose code cannot be interrupted (a sync job's thread), as
//! a worker process enforces them. A job past its deadline is acknowledged as failed with the
//! watchdog's error text (retried per its attempts), and only once that failure is stored
//! does the watchdog call its `expired` hook, which ends the process: a thread cannot be
//! stopped, so the process that runs it is, and the other jobs it held are rescued as after
//! any crash.
//!
//! The watchdog is its own thread and never needs the interpreter's lock, so a job that holds
//! it (a loop in C) is stopped all the same. A job that finished first (its own outcome
//! stored, or the job cancelled meanwhile) makes the failure stale: the hook is not called.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::Micros;
use crate::error::Result;
use crate::job::{Ack, AckResult, JobId, Outcome};

/// How the watchdog stores a failure: the store's ack, waiting for its result.
pub type AckFn = Box<dyn Fn(Ack) -> Result<Vec<AckResult>> + Send + Sync>;

/// What ends the process once a timed-out job's failure is stored (given the job's id).
pub type Expired = Box<dyn Fn(JobId) + Send + Sync>;

/// A watched job: its attempt, deadline, and the error its failure records with the delay
/// before its retry (`None`: the default backoff).
struct Watched {
    attempt: u32,
    deadline: Instant,
    error: String,
    retry_in: Option<Micros>,
}

#[derive(Default)]
struct State {
    watched: HashMap<JobId, Watched>,
    stopped: bool,
}

/// The watched jobs and the thread that fails those past their deadline.
pub struct Watchdog {
    state: Mutex<State>,
    changed: Condvar,
}

impl Watchdog {
    /// Start the thread, storing failures with `ack` and calling `expired` after a
    /// timed-out job's failure is stored.
    pub fn start(ack: AckFn, expired: Expired) -> std::io::Result<Arc<Watchdog>> {
        let watchdog = Arc::new(Watchdog { state: Mutex::default(), changed: Condvar::new() });
        let thread = watchdog.clone();
        std::thread::Builder::new()
            .name("kathikon-watchdog".into())
            .spawn(move || thread.run(&ack, &expired))?;
        Ok(watchdog)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fail attempt `attempt` of job `id` with `error` (retried after `retry_in`, or the
    /// default backoff) if it still runs after `timeout`.
    pub fn watch(
        &self,
        id: JobId,
        attempt: u32,
        timeout: Duration,
        error: String,
        retry_in: Option<Micros>,
    ) {
        let deadline = Instant::now() + timeout;
        self.state().watched.insert(id, Watched { attempt, deadline, error, retry_in });
        self.changed.notify_one();
    }

    /// Job `id` ended in time: stop watching it.
    pub fn unwatch(&self, id: JobId) {
        self.state().watched.remove(&id);
    }

    /// End the thread (it fails no job after this returns).
    pub fn stop(&self) {
        self.state().stopped = true;
        self.changed.notify_one();
    }

    fn run(&self, ack: &AckFn, expired: &Expired) {
        let mut state = self.state();
        loop {
            if state.stopped {
                return;
            }
            let now = Instant::now();
            let due = state.watched.iter().find(|(_, w)| w.deadline <= now).map(|(id, _)| *id);
            if let Some(id) = due {
                let watched = state.watched.remove(&id).expect("found above");
                drop(state);
                let outcome = Outcome::Fail { error: watched.error, retry_in: watched.retry_in };
                let stored = ack(Ack { id, attempt: watched.attempt, outcome });
                // Stale: the job's own outcome (or a cancel) came first, and nothing runs
                // past its time. An error: the failure may not be stored, but the thread
                // must still end; the job is rescued with the process's other jobs.
                if !matches!(stored.as_deref(), Ok([AckResult::Stale(_)])) {
                    expired(id);
                }
                state = self.state();
                continue;
            }
            let next = state.watched.values().map(|w| w.deadline).min();
            state = match next {
                Some(at) => {
                    let wait = at.saturating_duration_since(now);
                    self.changed.wait_timeout(state, wait).unwrap_or_else(PoisonError::into_inner).0
                }
                None => self.changed.wait(state).unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineConfig};
    use crate::jobs::Jobs;
    use crate::state::JobState;

    fn engine_with_a_claimed_job() -> (Arc<Engine>, crate::job::Job) {
        let engine = Arc::new(Engine::open(EngineConfig::default()).unwrap());
        engine.insert(vec![crate::job::tests::new_job()]).unwrap();
        let job = engine.claim("default", 1, Duration::ZERO).unwrap().remove(0);
        (engine, job)
    }

    fn watchdog(engine: &Arc<Engine>) -> (Arc<Watchdog>, Arc<Mutex<Vec<JobId>>>) {
        let fired: Arc<Mutex<Vec<JobId>>> = Arc::default();
        let (store, record) = (engine.clone(), fired.clone());
        let dog = Watchdog::start(
            Box::new(move |ack| store.ack(vec![ack])),
            Box::new(move |id| record.lock().unwrap().push(id)),
        )
        .unwrap();
        (dog, fired)
    }

    #[test]
    fn a_job_past_its_deadline_is_failed_with_the_error_and_then_expired() {
        let (engine, job) = engine_with_a_claimed_job();
        let (dog, fired) = watchdog(&engine);
        dog.watch(job.id, job.attempt, Duration::from_millis(50), "timeout: too slow".into(), None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while fired.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "never fired");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*fired.lock().unwrap(), [job.id]);
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
        dog.watch(job.id, job.attempt, Duration::from_millis(30), "timeout: too slow".into(), None);
        let done = Ack { id: job.id, attempt: job.attempt, outcome: Outcome::Complete };
        engine.ack(vec![done]).unwrap();
        // A second job watched and unwatched in time.
        dog.watch(job.id + 1, 1, Duration::from_millis(30), "timeout".into(), None);
        dog.unwatch(job.id + 1);
        std::thread::sleep(Duration::from_millis(300));
        assert!(fired.lock().unwrap().is_empty(), "{:?}", fired.lock().unwrap());
        assert_eq!(engine.get(job.id).unwrap().state, JobState::Completed);
        dog.stop();
    }
}
