//! Claims combined per queue: at most one claim transaction of a queue runs in a node at a
//! time, for every claim call of that queue that arrived meanwhile. A call that finds one
//! running waits for it to end and joins the next round with the others that came; the round
//! claims what they asked for together and hands each its share, in claim order (the first
//! to ask gets the most urgent jobs). A node with many lanes thus runs one claim
//! transaction per round, not one per lane: with 100 lanes of short jobs, each lane's claims
//! are small (a lane sizes them by its own pace, which its 99 neighbours slow), and one
//! transaction each made the database's CPU, not the jobs, the limit.
//!
//! A claimed job is handed to exactly one call, which always waits for its round's answer
//! (an interrupt or a close ends waits for jobs, never a round in flight), so none is lost
//! between the transaction and its caller.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::limits::Claimed;
use crate::clock::Micros;
use crate::error::Result;
use crate::job::Job;

/// One call's part of a round: how many jobs it asks for, and its answer once the round ran.
struct Ask {
    max: usize,
    answer: Option<Result<Claimed>>,
}

/// What a call got from its round.
#[derive(Debug, Default)]
pub(crate) struct Share {
    /// Its jobs, in claim order.
    pub(crate) jobs: Vec<Job>,
    /// Told to the call that ran the round only: whether the round got all its calls asked
    /// for (so jobs may be left: told once per round).
    pub(crate) full: bool,
    /// When a rate limit that held back ready jobs has room again.
    pub(crate) retry_at: Option<Micros>,
}

#[derive(Default)]
struct Queue {
    /// Whether a round of this queue runs now.
    running: bool,
    /// The calls waiting for the next round.
    waiting: Vec<Arc<Mutex<Ask>>>,
}

/// The rounds of every queue of one node.
#[derive(Default)]
pub(crate) struct Rounds {
    queues: Mutex<HashMap<String, Queue>>,
    /// A round ended (its answers are set).
    ended: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Rounds {
    /// Up to `max` jobs of `queue`, claimed by `claim(n)` (one transaction for `n` jobs, in
    /// claim order) in a round shared with the calls that wait meanwhile.
    pub(crate) fn claim(
        &self,
        queue: &str,
        max: usize,
        claim: impl FnOnce(usize) -> Result<Claimed>,
    ) -> Result<Share> {
        let ask = Arc::new(Mutex::new(Ask { max, answer: None }));
        let mut queues = lock(&self.queues);
        queues.entry(queue.to_string()).or_default().waiting.push(ask.clone());
        loop {
            if let Some(answer) = lock(&ask).answer.take() {
                return answer.map(|c| Share { jobs: c.jobs, full: false, retry_at: c.retry_at });
            }
            let q = queues.get_mut(queue).expect("made above, removed only when idle");
            if q.running {
                queues = self.ended.wait(queues).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // This call runs the round, for itself and every call waiting.
            q.running = true;
            let asks = std::mem::take(&mut q.waiting);
            drop(queues);
            let total = asks.iter().fold(0usize, |total, a| total.saturating_add(lock(a).max));
            let claimed = claim(total);
            let full = matches!(&claimed, Ok(c) if c.jobs.len() == total);
            match claimed {
                Ok(Claimed { jobs, retry_at }) => {
                    let mut jobs = jobs.into_iter();
                    for a in &asks {
                        let mut a = lock(a);
                        let jobs = jobs.by_ref().take(a.max).collect();
                        a.answer = Some(Ok(Claimed { jobs, retry_at }));
                    }
                }
                Err(e) => {
                    for a in &asks {
                        lock(a).answer = Some(Err(e.clone()));
                    }
                }
            }
            queues = lock(&self.queues);
            let q = queues.get_mut(queue).expect("made above, removed only when idle");
            q.running = false;
            if q.waiting.is_empty() {
                queues.remove(queue);
            }
            drop(queues);
            self.ended.notify_all();
            let answer = lock(&ask).answer.take().expect("this round answered its own call");
            return answer.map(|c| Share { jobs: c.jobs, full, retry_at: c.retry_at });
        }
    }
}
