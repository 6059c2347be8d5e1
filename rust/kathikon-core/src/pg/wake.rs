//! Waking claims that wait in this process: an insert here makes them look again at once, an
//! interrupt of their queue or a close ends them. Inserts by other processes are found by
//! polling (every `poll_interval`); `LISTEN/NOTIFY` is to replace that.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    /// Interrupts per queue, counted: a claim ends when its queue's count moves.
    interrupts: HashMap<String, u64>,
    /// Inserts made by this process, counted.
    inserts: u64,
    closed: bool,
}

/// What ended a wait.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Time to look again (an insert, or the poll interval passed).
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
    inserts: u64,
}

impl Wake {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The counts of `queue` now, taken before a claim's first look.
    pub(crate) fn mark(&self, queue: &str) -> Mark {
        let s = self.state();
        Mark { interrupts: s.interrupts.get(queue).copied().unwrap_or(0), inserts: s.inserts }
    }

    /// Wait until `deadline` or `poll` from now, whichever is first, or until something
    /// happens after `mark`; moves `mark` past the inserts seen.
    pub(crate) fn wait(
        &self,
        queue: &str,
        mark: &mut Mark,
        deadline: Instant,
        poll: Duration,
    ) -> Woken {
        let until = deadline.min(Instant::now() + poll);
        let mut s = self.state();
        loop {
            if s.closed {
                return Woken::Closed;
            }
            if s.interrupts.get(queue).copied().unwrap_or(0) != mark.interrupts {
                return Woken::Interrupted;
            }
            if s.inserts != mark.inserts {
                mark.inserts = s.inserts;
                return Woken::Look;
            }
            let now = Instant::now();
            if now >= until {
                return Woken::Look;
            }
            s = self
                .changed
                .wait_timeout(s, until - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// An insert was committed by this process.
    pub(crate) fn inserted(&self) {
        self.state().inserts += 1;
        self.changed.notify_all();
    }

    /// End the claims waiting on `queue`.
    pub(crate) fn interrupt(&self, queue: &str) {
        *self.state().interrupts.entry(queue.to_string()).or_insert(0) += 1;
        self.changed.notify_all();
    }

    /// End every wait, for good.
    pub(crate) fn close(&self) {
        self.state().closed = true;
        self.changed.notify_all();
    }
}
