//! Waking the claims and `wait_ready` calls that wait in this process: an insert here, or a
//! notification from the database ([`super::listen`]) that a queue has jobs available, makes
//! the claims of that queue look again at once; an interrupt of their queue or a close ends
//! them. Every one of these moves the store's ready generation, which `wait_ready` compares.
//!
//! While the listener is connected, a wait needs no polling: every transaction that makes
//! jobs available notifies. While it is not, a wait looks again every `poll_interval`, and
//! when it connects again every wait looks once (what was notified meanwhile is lost).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    /// Interrupts per queue, counted: a claim ends when its queue's count moves.
    interrupts: HashMap<String, u64>,
    /// Jobs made available per queue (inserts here, notifications), counted.
    notified: HashMap<String, u64>,
    /// Times the listener (re)connected: every wait looks again.
    relistened: u64,
    /// Moves with every notification and interrupt: `wait_ready`'s generation. Not with a
    /// reconnect of the listener, which asks for a look but is no known change.
    generation: u64,
    /// Whether the listener is connected (else waits poll).
    listening: bool,
    closed: bool,
}

impl State {
    fn notified(&self, queue: &str) -> u64 {
        self.notified.get(queue).copied().unwrap_or(0)
    }

    fn interrupts(&self, queue: &str) -> u64 {
        self.interrupts.get(queue).copied().unwrap_or(0)
    }
}

/// What ended a wait.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Time to look again (jobs were notified, or the poll interval passed).
    Look,
    /// The queue was interrupted: the claim returns empty.
    Interrupted,
    /// The store was closed.
    Closed,
}

/// The waiting claims' meeting point.
#[derive(Default)]
pub(crate) struct Wake {
    state: Mutex<State>,
    changed: Condvar,
}

/// Where a claim started: the counts it compares against.
pub(crate) struct Mark {
    interrupts: u64,
    notified: u64,
    relistened: u64,
}

impl Wake {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait_until<'a>(&'a self, s: MutexGuard<'a, State>, until: Instant) -> MutexGuard<'a, State> {
        let left = until.saturating_duration_since(Instant::now());
        self.changed.wait_timeout(s, left).unwrap_or_else(std::sync::PoisonError::into_inner).0
    }

    /// When a wait that started at `started` and may last until `deadline` looks again at
    /// the latest: at `deadline` while the listener is connected, else `poll` after its start.
    fn look_by(s: &State, started: Instant, deadline: Instant, poll: Duration) -> Instant {
        if s.listening {
            deadline
        } else {
            deadline.min(started + poll)
        }
    }

    /// The counts of `queue` now, taken before a claim's first look.
    pub(crate) fn mark(&self, queue: &str) -> Mark {
        let s = self.state();
        Mark {
            interrupts: s.interrupts(queue),
            notified: s.notified(queue),
            relistened: s.relistened,
        }
    }

    /// Wait until `deadline` (or `poll` from now, while the listener is down) or until
    /// something happens to `queue` after `mark`; moves `mark` past what it saw.
    pub(crate) fn wait(
        &self,
        queue: &str,
        mark: &mut Mark,
        deadline: Instant,
        poll: Duration,
    ) -> Woken {
        let started = Instant::now();
        let mut s = self.state();
        loop {
            if s.closed {
                return Woken::Closed;
            }
            if s.interrupts(queue) != mark.interrupts {
                return Woken::Interrupted;
            }
            if s.notified(queue) != mark.notified || s.relistened != mark.relistened {
                mark.notified = s.notified(queue);
                mark.relistened = s.relistened;
                return Woken::Look;
            }
            let until = Self::look_by(&s, started, deadline, poll);
            if Instant::now() >= until {
                return Woken::Look;
            }
            s = self.wait_until(s, until);
        }
    }

    /// The ready generation now.
    pub(crate) fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Wait until the generation differs from `seen`, the listener reconnects (a look is due),
    /// `deadline` passes, or (while the listener is down) `poll` passes. Returns the
    /// generation then, or `None` once closed.
    pub(crate) fn wait_past(&self, seen: u64, deadline: Instant, poll: Duration) -> Option<u64> {
        let started = Instant::now();
        let mut s = self.state();
        let relistened = s.relistened;
        loop {
            if s.closed {
                return None;
            }
            let by = Self::look_by(&s, started, deadline, poll);
            if s.generation != seen || s.relistened != relistened || Instant::now() >= by {
                return Some(s.generation);
            }
            s = self.wait_until(s, by);
        }
    }

    /// Jobs were made available in `queue` (by this process, or as notified).
    pub(crate) fn notified(&self, queue: &str) {
        let mut s = self.state();
        *s.notified.entry(queue.to_string()).or_insert(0) += 1;
        s.generation += 1;
        drop(s);
        self.changed.notify_all();
    }

    /// The listener connected (every wait looks again) or lost its connection (waits poll).
    pub(crate) fn listening(&self, on: bool) {
        let mut s = self.state();
        s.listening = on;
        if on {
            s.relistened += 1;
        }
        drop(s);
        self.changed.notify_all();
    }

    /// End the claims waiting on `queue`.
    pub(crate) fn interrupt(&self, queue: &str) {
        let mut s = self.state();
        *s.interrupts.entry(queue.to_string()).or_insert(0) += 1;
        s.generation += 1;
        drop(s);
        self.changed.notify_all();
    }

    /// End every wait, for good.
    pub(crate) fn close(&self) {
        self.state().closed = true;
        self.changed.notify_all();
    }

    /// Whether the store closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.state().closed
    }
}
