//! Waking the claims and `wait_ready` calls that wait in this process: an insert here, or a
//! notification from the database ([`super::listen`]) that a queue has jobs available, makes
//! a claim of that queue look again at once; an interrupt of their queue or a close ends
//! them. Every one of these moves the store's ready generation, which `wait_ready` compares.
//!
//! A notification wakes *one* waiting claim of its queue, not all of them: it owes the queue
//! one look (a permit), which the first claim to wake takes. Waking every claim would have
//! each run a transaction for what one of them gets (a node with 100 lanes would run 100 per
//! job). A look that got as many jobs as it asked for may have left more, so it passes a
//! permit on to the next waiting claim ([`Wake::pass`]); one that got fewer saw the queue
//! emptied (as of its snapshot), and any job committed after that snapshot notified again.
//! So every available job is looked for by some claim while claims wait.
//!
//! While the listener is connected, a wait needs no polling: every transaction that makes
//! jobs available notifies. While it is not, a wait looks again every `poll_interval`, and
//! when it connects again every wait looks once (what was notified meanwhile is lost).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One queue's wake-ups.
#[derive(Default)]
struct QueueWake {
    /// Interrupts, counted: a claim ends when its queue's count moves.
    interrupts: u64,
    /// A look is owed: jobs were made available (or may be left) since a claim last took it.
    permit: bool,
    /// Where the queue's claims wait (with [`Wake::state`]'s lock).
    changed: Arc<Condvar>,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, QueueWake>,
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
    fn queue(&mut self, queue: &str) -> &mut QueueWake {
        if !self.queues.contains_key(queue) {
            self.queues.insert(queue.to_string(), QueueWake::default());
        }
        self.queues.get_mut(queue).expect("just made")
    }

    fn interrupts(&self, queue: &str) -> u64 {
        self.queues.get(queue).map_or(0, |q| q.interrupts)
    }

    /// Wake every claim of every queue.
    fn wake_all_claims(&self) {
        for q in self.queues.values() {
            q.changed.notify_all();
        }
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
    /// Where `wait_ready` calls wait (generation changes, reconnects, close).
    changed: Condvar,
}

/// Where a claim started: the counts it compares against.
pub(crate) struct Mark {
    interrupts: u64,
    relistened: u64,
}

impl Wake {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait_until<'a>(
        s: MutexGuard<'a, State>,
        on: &Condvar,
        until: Instant,
    ) -> MutexGuard<'a, State> {
        let left = until.saturating_duration_since(Instant::now());
        on.wait_timeout(s, left).unwrap_or_else(std::sync::PoisonError::into_inner).0
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
        Mark { interrupts: s.interrupts(queue), relistened: s.relistened }
    }

    /// Wait until `deadline` (or `poll` from now, while the listener is down), until the
    /// queue owes a look (which this takes), or until `queue` is interrupted or the listener
    /// reconnects after `mark`; moves `mark` past what it saw.
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
            if s.relistened != mark.relistened {
                mark.relistened = s.relistened;
                return Woken::Look;
            }
            let q = s.queue(queue);
            if std::mem::take(&mut q.permit) {
                return Woken::Look;
            }
            let changed = q.changed.clone();
            let until = Self::look_by(&s, started, deadline, poll);
            if Instant::now() >= until {
                return Woken::Look;
            }
            s = Self::wait_until(s, &changed, until);
        }
    }

    /// A claim of `queue` got all it asked for, so jobs may be left: the next waiting claim
    /// looks.
    pub(crate) fn pass(&self, queue: &str) {
        let mut s = self.state();
        let q = s.queue(queue);
        q.permit = true;
        q.changed.notify_one();
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
            s = Self::wait_until(s, &self.changed, by);
        }
    }

    /// Jobs were made available in `queue` (by this process, or as notified): one waiting
    /// claim looks, and `wait_ready` calls see the generation move.
    pub(crate) fn notified(&self, queue: &str) {
        let mut s = self.state();
        s.generation += 1;
        let q = s.queue(queue);
        q.permit = true;
        q.changed.notify_one();
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
        s.wake_all_claims();
        drop(s);
        self.changed.notify_all();
    }

    /// End the claims waiting on `queue`.
    pub(crate) fn interrupt(&self, queue: &str) {
        let mut s = self.state();
        s.generation += 1;
        let q = s.queue(queue);
        q.interrupts += 1;
        q.changed.notify_all();
        drop(s);
        self.changed.notify_all();
    }

    /// End every wait, for good.
    pub(crate) fn close(&self) {
        let mut s = self.state();
        s.closed = true;
        s.wake_all_claims();
        drop(s);
        self.changed.notify_all();
    }

    /// Whether the store closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.state().closed
    }
}
