//! [`ReadySignal`]: one store-wide signal that some queue may have jobs ready, so that one
//! waiter can watch many queues at once ([`crate::Jobs::wait_ready`]) instead of one parked
//! claim per queue.
//!
//! Every [`crate::claim::ClaimQueue::notify`] moves the store's *ready generation* on. A
//! watcher remembers the generation it last saw and parks until it moves, then looks at the
//! queues it watches; so a queue whose backlog a worker is already draining does not wake it
//! again and again, and nothing that lands while the watcher looks is missed.
//!
//! The generation is an atomic counter (one uncontended add per notify, which is per commit
//! and queue, not per job); the condition variable is touched only while a watcher parks.
//! Lost wakeups are excluded by the pair of sequentially consistent operations on each side:
//! the notifier adds to the generation, then reads the watcher count; a watcher adds itself
//! to the count, then reads the generation under the lock. One of the two sees the other.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Instant;

/// The store-wide ready generation and its parked watchers.
#[derive(Debug, Default)]
pub struct ReadySignal {
    generation: AtomicU64,
    watchers: AtomicUsize,
    lock: Mutex<()>,
    wakeup: Condvar,
}

impl ReadySignal {
    /// Something may have become ready (or a wait was interrupted): move the generation on
    /// and wake the parked watchers, if any.
    pub fn signal(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if self.watchers.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.wakeup.notify_all();
        }
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Park until the generation differs from `seen` or `deadline` passes; returns the
    /// generation then.
    pub fn wait_past(&self, seen: u64, deadline: Instant) -> u64 {
        self.watchers.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = self.generation.load(Ordering::SeqCst);
            let left = deadline.saturating_duration_since(Instant::now());
            if now != seen || left.is_zero() {
                drop(guard);
                self.watchers.fetch_sub(1, Ordering::SeqCst);
                return now;
            }
            guard = self.wakeup.wait_timeout(guard, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_waiter_returns_when_signalled_and_not_before() {
        let ready = Arc::new(ReadySignal::default());
        let seen = ready.generation();
        // Not signalled: waits out its deadline and reports the same generation.
        assert_eq!(ready.wait_past(seen, Instant::now() + Duration::from_millis(20)), seen);
        let signaller = {
            let ready = ready.clone();
            std::thread::spawn(move || {
                // Signal until the waiter has seen it, however late it parks.
                while ready.watchers.load(Ordering::SeqCst) == 0 {
                    std::thread::yield_now();
                }
                ready.signal();
            })
        };
        let after = ready.wait_past(seen, Instant::now() + Duration::from_secs(60));
        assert_ne!(after, seen, "woken by the signal, long before the deadline");
        signaller.join().unwrap();
        // A signal given while nobody waited is still seen by a later wait.
        ready.signal();
        assert_ne!(ready.wait_past(after, Instant::now() + Duration::from_secs(60)), after);
    }
}
