//! Per-queue ready queues that workers pop without taking a lock.
//!
//! Each queue is an ordered lock-free set (crossbeam's skip list) keyed by
//! `(priority, scheduled_at, id)`, so a pop always takes the most urgent, then oldest, then
//! first-inserted job. The set is only a hint of what is available: the writer re-checks the
//! stored state when it marks a popped job executing, so a job cancelled after it was queued is
//! skipped, never run.
//!
//! Idle claimers park on a condition variable; the writer wakes them after a commit makes
//! jobs available. A generation counter closes the gap between "popped nothing" and "parked".
//! Each wakeup also moves the store-wide [`ReadySignal`] on, which a waiter watching many
//! queues at once parks on ([`ClaimQueues::wait_ready`]).
//!
//! Each queue also remembers who claims from it: the latest end of a claim's wait and the
//! process that made the latest claim, stored once per claim call (not per job), so the
//! store can tell a queue that no running process serves from one whose workers are idle.

use foldhash::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use crossbeam_skiplist::SkipSet;

use crate::clock::{Clock, Micros};
use crate::job::{Job, JobId};
use crate::limits::{Bucket, Limiter, Taken};
use crate::queues::RuntimeQueues;
use crate::ready::ReadySignal;

/// A job's place in its ready queue.
pub type ClaimKey = (u8, Micros, JobId);

/// The key of an available job.
pub fn key_of(job: &Job) -> ClaimKey {
    (job.priority, job.scheduled_at, job.id)
}

/// One queue's ready jobs and its parked claimers.
#[derive(Debug, Default)]
pub struct ClaimQueue {
    ready: SkipSet<ClaimKey>,
    generation: Mutex<u64>,
    wakeup: Condvar,
    interrupts: AtomicU64,
    /// When the latest-ending claim wait on this queue ends, in µs after [`ClaimQueues`]'
    /// epoch, plus one (0: never claimed from).
    claimed_until: AtomicU64,
    /// The process that made the latest claim call.
    claimer: AtomicU32,
    /// The store-wide signal this queue's wakeups also give.
    any: Arc<ReadySignal>,
    /// Paused (`pause_queue`): claims take nothing and [`ClaimQueues::wait_ready`] does not
    /// report the queue. Set by the writer after committing the change, before answering it.
    paused: AtomicBool,
    /// Claimed from or waited on by the store's owner itself (not for a client), for
    /// [`crate::Jobs::processes`].
    owner_claims: AtomicBool,
    /// Set while the queue has limits: its ready jobs are in `limiter`, not `ready`, and
    /// claims take them through it (one lock; an unlimited queue pays one atomic load).
    limited: AtomicBool,
    limiter: Mutex<Option<Limiter>>,
}

impl ClaimQueue {
    /// Add a ready job (no wakeup; call [`ClaimQueue::notify`] once per batch); `bucket`:
    /// where a limited queue keeps it (see [`crate::limits`]).
    pub fn push(&self, key: ClaimKey, bucket: Option<&Bucket>) {
        if self.limited.load(Ordering::Acquire) {
            if let Some(limiter) = self.limiter().as_mut() {
                limiter.push(key, bucket.cloned().unwrap_or_default());
                return;
            }
        }
        self.ready.insert(key);
    }

    /// Remove a job that stopped being available; false if a claimer already popped it.
    pub fn remove(&self, key: &ClaimKey) -> bool {
        if self.limited.load(Ordering::Acquire) {
            if let Some(limiter) = self.limiter().as_mut() {
                return limiter.remove(key);
            }
        }
        self.ready.remove(key).is_some()
    }

    /// Pop up to `max` of the most urgent jobs, taken at `clock`'s time (`Taken::at`, the
    /// claim's time). In a limited queue: those its limits allow, counted against them at
    /// once, with `retry_at` when a rate limit left ready jobs out; the time is read under
    /// the limiter's lock, so claims are dated in the order they were counted (a claimer
    /// that read the clock and then waited for the lock would date its jobs before claims
    /// already counted, and the stored times could crowd a window the limiter kept).
    pub(crate) fn pop(&self, max: usize, clock: &dyn Clock) -> Taken {
        if self.limited.load(Ordering::Acquire) {
            if let Some(limiter) = self.limiter().as_mut() {
                return limiter.take(max, clock.now());
            }
        }
        let at = clock.now();
        let mut keys = Vec::with_capacity(max.min(self.ready.len()));
        while keys.len() < max {
            match self.ready.pop_front() {
                Some(entry) => keys.push(*entry.value()),
                None => break,
            }
        }
        Taken { keys, retry_at: None, at }
    }

    /// How many jobs are ready.
    pub fn len(&self) -> usize {
        if self.limited.load(Ordering::Acquire) {
            if let Some(limiter) = self.limiter().as_ref() {
                return limiter.len();
            }
        }
        self.ready.len()
    }

    /// Whether no job is ready.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a claim at `now` would take a job: one is ready and, in a limited queue, its
    /// limits allow it; if not, when a rate window makes room (`None`: on a wakeup only).
    pub(crate) fn claimable(&self, now: Micros) -> Result<(), Option<Micros>> {
        if self.limited.load(Ordering::Acquire) {
            if let Some(limiter) = self.limiter().as_mut() {
                return limiter.claimable(now);
            }
        }
        if self.ready.is_empty() {
            Err(None)
        } else {
            Ok(())
        }
    }

    /// The limiter's lock (`None` inside: the queue has no limits).
    pub(crate) fn limiter(&self) -> std::sync::MutexGuard<'_, Option<Limiter>> {
        self.limiter.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the queue has limits.
    pub fn is_limited(&self) -> bool {
        self.limited.load(Ordering::Acquire)
    }

    /// Rebuild the queue's claim state under its limiter's lock, so no claim sees it half
    /// built: `build` gets every ready job and the limiter so far (`None`: the queue was
    /// unlimited) and returns the one to enforce from now on, filled; `None`: no limits, the
    /// ready jobs go back to the lock-free set. Wakes the queue's claimers.
    pub(crate) fn rebuild(
        &self,
        build: impl FnOnce(&[ClaimKey], Option<Limiter>) -> Option<Limiter>,
    ) {
        let mut slot = self.limiter();
        let mut keys = Vec::new();
        let mut old = slot.take();
        if let Some(old) = old.as_mut() {
            keys = old.drain_ready();
        } else {
            while let Some(entry) = self.ready.pop_front() {
                keys.push(*entry.value());
            }
        }
        *slot = build(&keys, old);
        self.limited.store(slot.is_some(), Ordering::Release);
        if slot.is_none() {
            for key in keys {
                self.ready.insert(key);
            }
        }
        drop(slot);
        self.notify();
    }

    /// Jobs popped by a claim that the writer did not claim: `ready` ones (the claim failed,
    /// or the queue was paused) go back; in a limited queue every one's places are freed.
    pub(crate) fn give_back(&self, keys: &[ClaimKey], ready: bool) {
        if self.limited.load(Ordering::Acquire) {
            if let Some(limiter) = self.limiter().as_mut() {
                for &key in keys {
                    limiter.give_back(key, ready);
                }
                return;
            }
        }
        if ready {
            for &key in keys {
                self.ready.insert(key);
            }
        }
    }

    /// Wake every parked claimer.
    pub fn notify(&self) {
        let mut generation =
            self.generation.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *generation += 1;
        self.wakeup.notify_all();
        drop(generation);
        self.any.signal();
    }

    /// The current generation; pass it to [`ClaimQueue::park`].
    pub fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sleep until the generation moves past `seen` or `deadline` passes.
    pub fn park(&self, seen: u64, deadline: Instant) {
        let mut generation =
            self.generation.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *generation == seen {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            generation = self
                .wakeup
                .wait_timeout(generation, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Make every claim waiting on this queue return (empty-handed if nothing is ready).
    pub fn interrupt(&self) {
        self.interrupts.fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    /// Count of interrupts so far; a claimer returns when it changes.
    pub fn interrupts(&self) -> u64 {
        self.interrupts.load(Ordering::SeqCst)
    }

    /// Whether the queue is paused (see [`crate::queues`]).
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Pause or resume the queue. Resuming wakes its parked claimers and watchers at once;
    /// the flag is stored before the wakeup, so a claimer that sees the new generation also
    /// sees the queue resumed.
    pub fn set_paused(&self, paused: bool) {
        let was = self.paused.swap(paused, Ordering::AcqRel);
        if was && !paused {
            self.notify();
        }
    }

    /// Note a claim call by process `pid` whose wait ends at `until` (µs after the epoch).
    /// Relaxed: the two values are read only for a report, never to order other memory.
    pub fn note_claim(&self, until: u64, pid: u32) {
        self.claimed_until.fetch_max(until + 1, Ordering::Relaxed);
        self.claimer.store(pid, Ordering::Relaxed);
    }

    /// Note that the owner itself claims from this queue: a load per claim call, a store once.
    pub fn note_owner_claim(&self) {
        if !self.owner_claims.load(Ordering::Relaxed) {
            self.owner_claims.store(true, Ordering::Relaxed);
        }
    }
}

/// Who claims from a queue, as [`ClaimQueues::claimers`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claimer {
    /// The queue.
    pub queue: String,
    /// The process that made the latest claim call on it.
    pub pid: u32,
    /// How long ago the latest claim's wait ended; zero while a claim waits on the queue.
    pub idle: Duration,
}

/// The instant clock time `at` falls on, as of `now` on the same clock.
pub(crate) fn instant_at(at: Micros, now: Micros) -> Instant {
    Instant::now() + Duration::from_micros(at.saturating_sub(now).max(0) as u64)
}

/// Every queue's [`ClaimQueue`], created on first use.
#[derive(Debug)]
pub struct ClaimQueues {
    queues: RwLock<HashMap<String, Arc<ClaimQueue>>>,
    /// Given by every queue's wakeups.
    any: Arc<ReadySignal>,
    /// What [`ClaimQueue::note_claim`]'s times count from.
    epoch: Instant,
    /// Every queue's settings controlled at runtime, as stored.
    pub settings: RuntimeQueues,
    /// Whether any queue has had limits (see [`ClaimQueues::any_limited`]).
    limited: AtomicBool,
    /// Every queue that has had limits, for the writer's releases (not every queue: an app
    /// may have thousands).
    limited_queues: Mutex<Vec<Arc<ClaimQueue>>>,
}

impl Default for ClaimQueues {
    fn default() -> Self {
        Self {
            queues: RwLock::default(),
            any: Arc::default(),
            epoch: Instant::now(),
            settings: RuntimeQueues::default(),
            limited: AtomicBool::new(false),
            limited_queues: Mutex::default(),
        }
    }
}

impl ClaimQueues {
    /// `at` in µs after the epoch, for [`ClaimQueue::note_claim`].
    pub fn since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Every queue claimed from so far, with its latest claimer, in queue-name order.
    pub fn claimers(&self) -> Vec<Claimer> {
        let now = self.since_epoch(Instant::now());
        let mut out: Vec<Claimer> = self
            .all()
            .into_iter()
            .filter_map(|(queue, q)| {
                let until = q.claimed_until.load(Ordering::Relaxed).checked_sub(1)?;
                let idle = Duration::from_micros(now.saturating_sub(until));
                Some(Claimer { queue, pid: q.claimer.load(Ordering::Relaxed), idle })
            })
            .collect();
        out.sort_by(|a, b| a.queue.cmp(&b.queue));
        out
    }

    /// The queues the owner itself has claimed from or waited on, in name order.
    pub fn owner_queues(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .all()
            .into_iter()
            .filter(|(_, q)| q.owner_claims.load(Ordering::Relaxed))
            .map(|(name, _)| name)
            .collect();
        out.sort();
        out
    }

    /// The queue named `name`, created empty if new.
    pub fn get(&self, name: &str) -> Arc<ClaimQueue> {
        if let Some(q) =
            self.queues.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name)
        {
            return q.clone();
        }
        self.queues
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(ClaimQueue { any: self.any.clone(), ..ClaimQueue::default() })
            })
            .clone()
    }

    /// Wait until the store's ready generation differs from `seen` (`None`: do not wait) or
    /// `deadline` passes, then return the generation and which of `queues` have jobs a claim
    /// would take (ready, not paused, allowed by the queue's limits). An interrupt of any
    /// queue, and closing the engine (which interrupts every queue), moves the generation on,
    /// so either ends the wait, perhaps with none ready. A limited queue whose rate window
    /// is full ends the wait when the window makes room (no commit signals that).
    pub fn wait_ready(
        &self,
        queues: &[(String, Arc<ClaimQueue>)],
        seen: Option<u64>,
        mut deadline: Instant,
        clock: &dyn Clock,
    ) -> (u64, Vec<String>) {
        let generation = match seen {
            Some(seen) => {
                let now = clock.now();
                for (_, q) in queues.iter().filter(|(_, q)| q.is_limited() && !q.is_paused()) {
                    if let Err(Some(at)) = q.claimable(now) {
                        deadline = deadline.min(instant_at(at, now));
                    }
                }
                self.any.wait_past(seen, deadline)
            }
            None => self.any.generation(),
        };
        let now = clock.now();
        let ready = queues
            .iter()
            .filter(|(_, q)| !q.is_paused() && q.claimable(now).is_ok())
            .map(|(n, _)| n.clone())
            .collect();
        (generation, ready)
    }

    /// Whether any queue has limits (the writer then tells the limiters what it changed).
    pub(crate) fn any_limited(&self) -> bool {
        self.limited.load(Ordering::Acquire)
    }

    /// Note that `queue` has limits now (the flag is never unset: a cheap check, not a
    /// count; the queue stays listed, and is skipped while it has none).
    pub(crate) fn note_limited(&self, queue: &Arc<ClaimQueue>) {
        let mut listed =
            self.limited_queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !listed.iter().any(|q| Arc::ptr_eq(q, queue)) {
            listed.push(queue.clone());
        }
        self.limited.store(true, Ordering::Release);
    }

    /// Jobs `ids` left the executing state: free their places in the limited queues that
    /// held them, and wake those queues' claimers.
    pub(crate) fn released(&self, ids: &[JobId]) {
        let listed =
            self.limited_queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for q in listed {
            if !q.is_limited() {
                continue;
            }
            let mut freed = false;
            if let Some(limiter) = q.limiter().as_mut() {
                for &id in ids {
                    freed |= limiter.release(id);
                }
            }
            if freed {
                q.notify();
            }
        }
    }

    /// Every queue created so far.
    pub fn all(&self) -> Vec<(String, Arc<ClaimQueue>)> {
        self.queues
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_by_priority_then_time_then_id() {
        let q = ClaimQueue::default();
        for key in [(5, 10, 1), (0, 30, 2), (0, 20, 4), (0, 20, 3), (9, 0, 5)] {
            q.push(key, None);
        }
        assert_eq!(
            q.pop(10, &crate::clock::ManualClock::new(0)).keys,
            vec![(0, 20, 3), (0, 20, 4), (0, 30, 2), (5, 10, 1), (9, 0, 5)]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn park_returns_on_notify_and_on_deadline() {
        let q = Arc::new(ClaimQueue::default());
        let seen = q.generation();
        let q2 = q.clone();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            q2.notify();
        });
        let start = Instant::now();
        q.park(seen, start + Duration::from_secs(10));
        assert!(start.elapsed() < Duration::from_secs(5));
        waker.join().unwrap();
        let start = Instant::now();
        q.park(q.generation(), start + Duration::from_millis(30));
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
