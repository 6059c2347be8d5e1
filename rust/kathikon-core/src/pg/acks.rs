//! Acks grouped across calls, as the embedded store's writer groups its commits: every ack a
//! node's threads send goes to one applying thread, which takes all that are waiting and
//! applies them in one transaction ([`super::ack::ack`]), so a node's lanes share one
//! transaction (and one WAL flush) per group instead of one each, at any number of lanes.
//!
//! Each ack keeps its own outcome: the group applies them one after another in the order
//! they came, each meeting its job as the ones before left it, so fencing (holder and
//! attempt) and staleness are decided per ack exactly as in a transaction of its own. A
//! group refused as a whole (one ack's outcome cannot apply, say) is applied again call by
//! call, so only the call with the bad ack fails. A call that waits ([`AckGroup::ack`]) gets
//! its results once its group has committed; one that does not ([`AckGroup::send`]) returns
//! at once, and its acks are committed by the next group, and before [`AckGroup::flush`]
//! (the store's `sync` and `close`) returns. An ack not yet committed when the process dies
//! is lost, its job still executing for the node, which is rescued once its lease runs out
//! and run again: what a lost `ack_nowait` means in the embedded store too.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use super::connection::Connections;
use super::metrics::Tally;
use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::job::{Ack, AckResult};

/// Most acks one group applies; more wait for the next group (one transaction holds the row
/// locks of all of its jobs until it commits).
const MAX_GROUP: usize = 4096;

/// One call's acks, each with the time it was sent at.
struct Call {
    acks: Vec<(Ack, Micros)>,
    /// Where the results go, for a call that waits for them.
    reply: Option<SyncSender<Result<Vec<AckResult>>>>,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Call>,
    /// Calls queued so far, and calls whose group has been applied (committed or failed),
    /// counted: a flush waits until the second reaches what the first was when it began.
    queued: u64,
    applied: u64,
    stop: bool,
}

/// Where the calls meet the applying thread.
#[derive(Default)]
struct Queue {
    state: Mutex<State>,
    /// Calls were queued, or the thread is to stop.
    queued: Condvar,
    /// A group was applied.
    applied: Condvar,
}

impl Queue {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the applying thread needs to apply acks for its node.
pub(crate) struct Applier {
    pub(crate) connections: Connections,
    pub(crate) node: i64,
    pub(crate) tally: Arc<Tally>,
}

impl Applier {
    /// Apply `acks` in one transaction. An ack whose connection broke is sent once more on
    /// a new connection: if the first had committed, the second finds the attempts let go and
    /// answers stale, without a fencing note ([`super::ack::ack`]); if not, it applies.
    /// Either way each outcome is recorded once, and the jobs do not stay executing for a
    /// node that lives on.
    fn apply(&self, acks: &[(Ack, Micros)]) -> Result<Vec<AckResult>> {
        let pid = std::process::id();
        let run = |resent| {
            self.connections.with_prepared(|c, p| {
                super::ack::ack(c, p, acks, self.node, pid, &self.tally, resent)
            })
        };
        match run(false) {
            Err(Error::ConnectionLost { .. }) => run(true),
            answer => answer,
        }
    }

    /// Apply `calls` as one group, and each call again on its own if the group fails (so a
    /// call's refusal, or its bad outcome, is its own); each call's results, in order.
    fn apply_group(&self, calls: &[Call]) -> Vec<Result<Vec<AckResult>>> {
        if calls.len() == 1 {
            return vec![self.apply(&calls[0].acks)];
        }
        let all: Vec<(Ack, Micros)> = calls.iter().flat_map(|c| c.acks.iter().cloned()).collect();
        match self.apply(&all) {
            Ok(results) => {
                let mut results = results.into_iter();
                calls.iter().map(|c| Ok(results.by_ref().take(c.acks.len()).collect())).collect()
            }
            Err(_) => calls.iter().map(|c| self.apply(&c.acks)).collect(),
        }
    }
}

/// A node's grouped acks and their applying thread.
pub(crate) struct AckGroup {
    queue: Arc<Queue>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl AckGroup {
    /// Start the applying thread.
    pub(crate) fn start(applier: Applier) -> std::io::Result<AckGroup> {
        let queue = Arc::new(Queue::default());
        let q = queue.clone();
        let thread = std::thread::Builder::new()
            .name("kathikon-pg-acks".into())
            .spawn(move || run(&q, &applier))?;
        Ok(AckGroup { queue, thread: Mutex::new(Some(thread)) })
    }

    fn queue(&self, call: Call) -> Result<()> {
        let mut s = self.queue.state();
        if s.stop {
            return Err(Error::Closed);
        }
        s.waiting.push_back(call);
        s.queued += 1;
        drop(s);
        self.queue.queued.notify_one();
        Ok(())
    }

    /// Apply `acks` with the next group; their results once it has committed.
    pub(crate) fn ack(&self, acks: Vec<(Ack, Micros)>) -> Result<Vec<AckResult>> {
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, results) = sync_channel(1);
        self.queue(Call { acks, reply: Some(reply) })?;
        results.recv().map_err(|_| Error::Closed)?
    }

    /// Apply `acks` with the next group, without waiting for it.
    pub(crate) fn send(&self, acks: Vec<(Ack, Micros)>) -> Result<()> {
        if acks.is_empty() {
            return Ok(());
        }
        self.queue(Call { acks, reply: None })
    }

    /// Wait until every call queued before this one has been applied.
    pub(crate) fn flush(&self) {
        let mut s = self.queue.state();
        let target = s.queued;
        while s.applied < target {
            s = self.queue.applied.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Apply what is queued, then stop the thread; later calls are refused as closed.
    pub(crate) fn stop(&self) {
        self.queue.state().stop = true;
        self.queue.queued.notify_all();
        if let Some(thread) = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = thread.join();
        }
    }
}

/// The applying thread: take every call waiting (up to [`MAX_GROUP`] acks), apply them as one
/// group, answer the calls that wait, until stopped with nothing left.
fn run(queue: &Queue, applier: &Applier) {
    loop {
        let mut s = queue.state();
        while s.waiting.is_empty() && !s.stop {
            s = queue.queued.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        if s.waiting.is_empty() {
            return;
        }
        let mut calls = Vec::new();
        let mut acks = 0;
        while let Some(call) = s.waiting.front() {
            if !calls.is_empty() && acks + call.acks.len() > MAX_GROUP {
                break;
            }
            acks += call.acks.len();
            calls.extend(s.waiting.pop_front());
        }
        drop(s);
        let taken = calls.len() as u64;
        let results = applier.apply_group(&calls);
        for (call, result) in calls.into_iter().zip(results) {
            if let Some(reply) = call.reply {
                let _ = reply.send(result);
            }
        }
        let mut s = queue.state();
        s.applied += taken;
        drop(s);
        queue.applied.notify_all();
    }
}
