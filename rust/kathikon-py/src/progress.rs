//! Progress reported by running jobs (`Job.progress(fraction, note)`), written to the store at
//! most once per [`INTERVAL`] per job.
//!
//! A report only records the latest value in memory and wakes a writing thread when the job's
//! window is open, so a job calling it in a tight loop (sync, or on an event loop that must
//! not wait for a commit) costs a lock per call and the store one write per job and interval.
//! A value still waiting when its attempt is acked is written before the ack leaves, so the
//! progress stored after a job ends is the last one it reported. Writes go out one batch at a
//! time (`send`), and the flush before an ack takes the same lock, so a value the thread took
//! earlier can never land after the one flushed before the ack.
//!
//! Failed writes are dropped (progress is a hint: a job must not fail for it); a write the
//! store refuses because the attempt is no longer executing forgets the job.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use kathikon_core::AppStore;
use kathikon_core::{Ack, JobId};

/// The shortest time between two writes of one job's progress.
pub(crate) const INTERVAL: Duration = Duration::from_millis(500);

/// How long the writing thread sleeps with nothing to write before it checks that its store
/// is still open.
const IDLE: Duration = Duration::from_secs(1);

/// A fraction and an optional note, as reported.
type Value = (f64, Option<String>);

/// One running job's reports.
struct Slot {
    attempt: u32,
    /// The latest value not yet written.
    pending: Option<Value>,
    /// When its last value was written.
    sent_at: Option<Instant>,
}

/// Progress reports of the jobs this process runs on one store.
pub(crate) struct Reporter {
    node: Weak<AppStore>,
    slots: Mutex<HashMap<JobId, Slot>>,
    wake: Condvar,
    /// How many slots there are, so an ack with none to flush takes no lock.
    tracked: AtomicUsize,
    /// Held while values are written (see the module doc).
    send: Mutex<()>,
    /// Whether the writing thread runs.
    running: AtomicBool,
    /// Values written so far (for tests of the rate limit).
    writes: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Reporter {
    pub(crate) fn new(node: Weak<AppStore>) -> Arc<Reporter> {
        Arc::new(Reporter {
            node,
            slots: Mutex::new(HashMap::new()),
            wake: Condvar::new(),
            tracked: AtomicUsize::new(0),
            send: Mutex::new(()),
            running: AtomicBool::new(false),
            writes: AtomicU64::new(0),
        })
    }

    /// How many values were written to the store.
    pub(crate) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Record `value` as attempt `attempt` of job `id`'s latest progress (checked already).
    pub(crate) fn report(self: &Arc<Self>, id: JobId, attempt: u32, value: Value) {
        let due = {
            let mut slots = lock(&self.slots);
            let slot = slots.entry(id).or_insert_with(|| {
                self.tracked.fetch_add(1, Ordering::AcqRel);
                Slot { attempt, pending: None, sent_at: None }
            });
            if slot.attempt != attempt {
                *slot = Slot { attempt, pending: None, sent_at: None };
            }
            slot.pending = Some(value);
            slot.sent_at.is_none_or(|at| at.elapsed() >= INTERVAL)
        };
        if self.running.load(Ordering::Acquire) {
            if due {
                self.wake.notify_one();
            }
            return;
        }
        // A closed store starts no thread: its jobs' reports stay in memory.
        if self.node.upgrade().is_none_or(|node| node.is_closed()) {
            return;
        }
        if !self.running.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            let started = std::thread::Builder::new()
                .name("kathikon-progress".into())
                .spawn(move || me.run());
            if started.is_err() {
                self.running.store(false, Ordering::Release);
            }
        }
    }

    /// Whether any running job of this process reported progress that [`Self::before_ack`]
    /// may have to write: one atomic load, so an ack of jobs that never report pays no more
    /// (in particular, no release of the GIL).
    pub(crate) fn tracks_any(&self) -> bool {
        self.tracked.load(Ordering::Acquire) != 0
    }

    /// Write the values still waiting for the attempts `acks` end, and forget those jobs:
    /// called before the acks are sent.
    pub(crate) fn before_ack(&self, acks: &[Ack]) {
        if !self.tracks_any() {
            return;
        }
        let _send = lock(&self.send);
        let mut last = Vec::new();
        {
            let mut slots = lock(&self.slots);
            for ack in acks {
                if slots.get(&ack.id).is_some_and(|s| s.attempt == ack.attempt) {
                    let slot = slots.remove(&ack.id).expect("just found");
                    self.tracked.fetch_sub(1, Ordering::AcqRel);
                    if let Some(value) = slot.pending {
                        last.push((ack.id, ack.attempt, value));
                    }
                }
            }
        }
        self.write(last);
    }

    /// The writing thread: wait for a job whose window is open with a value waiting, write
    /// every such value, repeat; stop when the store is closed or gone.
    fn run(self: Arc<Self>) {
        loop {
            if self.node.upgrade().is_none_or(|node| node.is_closed()) {
                self.running.store(false, Ordering::Release);
                return;
            }
            let wait = {
                let slots = lock(&self.slots);
                let now = Instant::now();
                let next = slots
                    .values()
                    .filter(|s| s.pending.is_some())
                    .map(|s| s.sent_at.map_or(now, |at| at + INTERVAL))
                    .min();
                match next {
                    Some(at) if at <= now => None,
                    Some(at) => Some((slots, (at - now).min(IDLE))),
                    None => Some((slots, IDLE)),
                }
            };
            if let Some((slots, wait)) = wait {
                drop(self.wake.wait_timeout(slots, wait).unwrap_or_else(PoisonError::into_inner));
                continue;
            }
            let _send = lock(&self.send);
            let batch: Vec<(JobId, u32, Value)> = {
                let mut slots = lock(&self.slots);
                let now = Instant::now();
                slots
                    .iter_mut()
                    .filter(|(_, s)| s.sent_at.is_none_or(|at| at + INTERVAL <= now))
                    .filter_map(|(id, s)| {
                        let value = s.pending.take()?;
                        s.sent_at = Some(now);
                        Some((*id, s.attempt, value))
                    })
                    .collect()
            };
            let ended = self.write(batch);
            let mut slots = lock(&self.slots);
            for (id, attempt) in ended {
                if slots.get(&id).is_some_and(|s| s.attempt == attempt && s.pending.is_none()) {
                    slots.remove(&id);
                    self.tracked.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Write `values`; returns the `(id, attempt)` the store refused as no longer executing.
    fn write(&self, values: Vec<(JobId, u32, Value)>) -> Vec<(JobId, u32)> {
        let Some(node) = self.node.upgrade() else { return Vec::new() };
        let mut ended = Vec::new();
        for (id, attempt, (fraction, note)) in values {
            let stored =
                node.retrying(|jobs| jobs.set_progress(id, attempt, fraction, note.clone()));
            self.writes.fetch_add(1, Ordering::Relaxed);
            if let Ok(false) = stored {
                ended.push((id, attempt));
            }
        }
        ended
    }
}
