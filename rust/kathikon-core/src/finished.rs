//! Waiting for a job to finish ([`crate::Jobs::wait_finished`]) without polling: a waiter
//! registers the job's id here, then looks at the job; whatever finishes an awaited job (the
//! engine's writer after its commit, a `PostgreSQL` node's listener on a notification) wakes
//! the waits on that id, which look again. A job nobody awaits costs its finisher one
//! relaxed load of [`Finished::any_awaited`] per batch.
//!
//! No wake-up is lost: the waiter registers, then notes how often its id was woken, then
//! looks; a finisher makes its change visible, then wakes. So either the look sees the job
//! finished, or the wake-up comes after the note and ends the next wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::job::{Job, JobId};

/// One awaited job.
struct Awaited {
    /// Waits registered on it.
    waits: usize,
    /// Times it was woken.
    woken: u64,
}

#[derive(Default)]
struct State {
    awaited: HashMap<JobId, Awaited>,
    /// Times every wait was asked to look again (a `PostgreSQL` listener reconnected: what was
    /// notified meanwhile is unknown).
    relooks: u64,
    /// While false (a `PostgreSQL` listener is down), waits look again every poll interval.
    deaf: bool,
    closed: bool,
}

/// The jobs awaited in this process, and where their waits sleep.
#[derive(Default)]
pub(crate) struct Finished {
    state: Mutex<State>,
    changed: Condvar,
    /// Waits registered, readable without the lock.
    waits: AtomicUsize,
}

/// Where a wait stands: the counts it compares against.
struct Mark {
    woken: u64,
    relooks: u64,
}

impl Finished {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether any wait is registered: a finisher that finds none wakes nobody.
    pub(crate) fn any_awaited(&self) -> bool {
        self.waits.load(Ordering::SeqCst) > 0
    }

    /// Jobs `ids` finished (or were deleted), committed and visible: wake their waits.
    pub(crate) fn ended(&self, ids: &[JobId]) {
        if !self.any_awaited() {
            return;
        }
        let mut s = self.state();
        let mut any = false;
        for id in ids {
            if let Some(a) = s.awaited.get_mut(id) {
                a.woken += 1;
                any = true;
            }
        }
        drop(s);
        if any {
            self.changed.notify_all();
        }
    }

    /// Every wait looks again once (notifications may have been lost); `deaf`: until told
    /// otherwise, waits look again every poll interval. (For the `PostgreSQL` listener.)
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn relook(&self, deaf: bool) {
        let mut s = self.state();
        s.relooks += 1;
        s.deaf = deaf;
        drop(s);
        self.changed.notify_all();
    }

    /// End every wait with [`Error::Closed`], for good.
    pub(crate) fn close(&self) {
        self.state().closed = true;
        self.changed.notify_all();
    }

    fn register(&self, id: JobId) -> Result<()> {
        let mut s = self.state();
        if s.closed {
            return Err(Error::Closed);
        }
        s.awaited.entry(id).or_insert(Awaited { waits: 0, woken: 0 }).waits += 1;
        self.waits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn unregister(&self, id: JobId) {
        let mut s = self.state();
        if let Some(a) = s.awaited.get_mut(&id) {
            a.waits -= 1;
            if a.waits == 0 {
                s.awaited.remove(&id);
            }
        }
        self.waits.fetch_sub(1, Ordering::SeqCst);
    }

    fn mark(&self, id: JobId) -> Mark {
        let s = self.state();
        Mark { woken: s.awaited.get(&id).map_or(0, |a| a.woken), relooks: s.relooks }
    }

    /// Sleep until `id` is woken or every wait is asked to look again after `mark`, until
    /// `until`, or (while deaf) until `poll` has passed. Returns false once closed.
    fn sleep(&self, id: JobId, mark: &Mark, until: Instant, poll: Duration) -> bool {
        let started = Instant::now();
        let mut s = self.state();
        loop {
            if s.closed {
                return false;
            }
            let woken = s.awaited.get(&id).map_or(0, |a| a.woken);
            if woken != mark.woken || s.relooks != mark.relooks {
                return true;
            }
            let by = match started.checked_add(poll) {
                Some(poll_by) if s.deaf => until.min(poll_by),
                _ => until,
            };
            let left = by.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Wait up to `timeout` for job `id` to finish: `look(first)` reads the job (`first`:
    /// the look right after registering, which a store may use to register elsewhere too),
    /// again each time it may have changed; returns it finished, or as it stands when the
    /// time is up. [`Error::JobNotFound`] from a look (the job does not exist, or was deleted)
    /// ends the wait, as does the close of the store ([`Error::Closed`]).
    pub(crate) fn wait(
        &self,
        id: JobId,
        timeout: Duration,
        poll: Duration,
        look: &mut dyn FnMut(bool) -> Result<Job>,
    ) -> Result<Job> {
        let deadline = deadline(timeout);
        self.register(id)?;
        let _registered = Registered { finished: self, id };
        let mut first = true;
        loop {
            let mark = self.mark(id);
            let job = look(first)?;
            first = false;
            if job.state.is_terminal() || Instant::now() >= deadline {
                return Ok(job);
            }
            if !self.sleep(id, &mark, deadline, poll) {
                return Err(Error::Closed);
            }
        }
    }
}

/// `timeout` from now, or so far ahead it never comes when that is past what an [`Instant`]
/// holds.
pub(crate) fn deadline(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// Unregisters its wait when dropped, however the wait ends.
struct Registered<'a> {
    finished: &'a Finished,
    id: JobId,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.finished.unregister(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::JobState;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn job(state: JobState) -> Job {
        let mut job = crate::job::tests::new_job().into_job(7, 0);
        job.state = state;
        job
    }

    #[test]
    fn a_wait_is_woken_by_its_job_ending_not_by_polling() {
        let finished = Arc::new(Finished::default());
        let done = Arc::new(AtomicBool::new(false));
        let looks = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let (finished, done, looks) = (finished.clone(), done.clone(), looks.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let never = Duration::from_secs(3600);
                let found = finished.wait(7, Duration::from_secs(120), never, &mut |_| {
                    looks.fetch_add(1, Ordering::SeqCst);
                    Ok(job(if done.load(Ordering::SeqCst) {
                        JobState::Completed
                    } else {
                        JobState::Executing
                    }))
                });
                (found.unwrap().state, started.elapsed())
            })
        };
        while looks.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        finished.ended(&[8]); // another job: no look
        std::thread::sleep(Duration::from_millis(50));
        done.store(true, Ordering::SeqCst);
        finished.ended(&[7]);
        let (state, took) = waiter.join().unwrap();
        assert_eq!(state, JobState::Completed);
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(looks.load(Ordering::SeqCst), 2, "one look at the start, one when woken");
        assert!(!finished.any_awaited());
    }

    #[test]
    fn a_wait_times_out_with_the_job_as_it_stands_and_close_ends_waits() {
        let finished = Finished::default();
        let short = Duration::from_millis(20);
        let found = finished.wait(7, short, short, &mut |_| Ok(job(JobState::Retryable)));
        assert_eq!(found.unwrap().state, JobState::Retryable);
        finished.close();
        let closed = finished.wait(7, short, short, &mut |_| Ok(job(JobState::Executing)));
        assert!(matches!(closed, Err(Error::Closed)), "{closed:?}");
    }
}
