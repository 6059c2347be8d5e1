//! Claimers: which queues are claimed from, and by whom. Each node records its own claims
//! in memory ([`ClaimerLog`]: a lock and a map entry per call, no round trip) and publishes
//! them with every heartbeat into its `kathikon.nodes` row; [`crate::Jobs::claimers`] merges
//! this node's live record with the other nodes' published ones (as of their last heartbeat),
//! one entry per queue: the most recent claimer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use postgres::Client;

use crate::claim::Claimer;
use crate::clock::Micros;
use crate::error::{Error, Result};

/// A queue's claims in this process.
struct Entry {
    /// Claims (or `wait_ready` calls) waiting on it now.
    waiting: usize,
    /// When the latest one ended.
    ended: Instant,
}

/// This node's claims, per queue.
#[derive(Default)]
pub(crate) struct ClaimerLog {
    queues: Mutex<HashMap<String, Entry>>,
}

/// Claims on some queues in progress; ended when dropped.
pub(crate) struct Claiming<'a> {
    log: &'a ClaimerLog,
    queues: Vec<String>,
}

impl ClaimerLog {
    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A claim (or a `wait_ready`) on `queues` begins; it ends when the result is dropped.
    pub(crate) fn begin<'a>(&'a self, queues: &[String]) -> Claiming<'a> {
        let mut map = self.queues();
        for queue in queues {
            map.entry(queue.clone())
                .or_insert(Entry { waiting: 0, ended: Instant::now() })
                .waiting += 1;
        }
        Claiming { log: self, queues: queues.to_vec() }
    }

    /// This node's claimers, as process `pid`: idle zero while a claim waits.
    pub(crate) fn local(&self, pid: u32) -> Vec<Claimer> {
        self.queues()
            .iter()
            .map(|(queue, e)| Claimer {
                queue: queue.clone(),
                pid,
                idle: if e.waiting > 0 { Duration::ZERO } else { e.ended.elapsed() },
            })
            .collect()
    }

    /// The record as the node row's `claimers` column holds it.
    pub(crate) fn published(&self) -> String {
        let map = self.queues();
        let pairs: Vec<(&str, Option<u64>)> = map
            .iter()
            .map(|(queue, e)| {
                let idle = (e.waiting == 0).then(|| e.ended.elapsed().as_micros() as u64);
                (queue.as_str(), idle)
            })
            .collect();
        serde_json::to_string(&pairs).expect("claimers always encode")
    }
}

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        let mut map = self.log.queues();
        for queue in &self.queues {
            if let Some(e) = map.get_mut(queue) {
                e.waiting = e.waiting.saturating_sub(1);
                e.ended = Instant::now();
            }
        }
    }
}

/// The claimers other nodes than `this` published, at `now`: idle grows from their last
/// heartbeat.
pub(crate) fn others(client: &mut Client, this: i64, now: Micros) -> Result<Vec<Claimer>> {
    let rows = client.query(
        "SELECT id, pid, heartbeat_at, claimers::text FROM kathikon.nodes WHERE id <> $1",
        &[&this],
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (node, pid, heartbeat): (i64, i32, Micros) = (row.get(0), row.get(1), row.get(2));
        let pairs = published(node, row.get(3))?;
        let since = u64::try_from(now.saturating_sub(heartbeat)).unwrap_or(0);
        out.extend(pairs.into_iter().map(|(queue, idle)| Claimer {
            queue,
            pid: pid as u32,
            idle: idle.map_or(Duration::ZERO, |us| Duration::from_micros(us + since)),
        }));
    }
    Ok(out)
}

/// Node `node`'s `claimers` column: `(queue, idle µs or None while a claim waits)` pairs.
pub(crate) fn published(node: i64, column: &str) -> Result<Vec<(String, Option<u64>)>> {
    serde_json::from_str(column).map_err(|e| {
        Error::Storage(format!("node {node}'s claimers column is not Kathikon's ({e})"))
    })
}

/// One claimer per queue — the least idle — in queue name order.
pub(crate) fn merge(claimers: Vec<Claimer>) -> Vec<Claimer> {
    let mut latest: HashMap<String, Claimer> = HashMap::new();
    for c in claimers {
        match latest.get(&c.queue) {
            Some(seen) if seen.idle <= c.idle => {}
            _ => {
                latest.insert(c.queue.clone(), c);
            }
        }
    }
    let mut out: Vec<Claimer> = latest.into_values().collect();
    out.sort_by(|a, b| a.queue.cmp(&b.queue));
    out
}
