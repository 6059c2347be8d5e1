//! Rescue of dead nodes: a node whose lease ran out (it stopped renewing: killed, frozen, cut
//! off from the database) loses its row, and every job still executing for a node that has no
//! row is rescued through [`crate::Job::rescue_because`] — available again, or discarded when
//! out of attempts — with a `rescued:` entry in its history, as the socket owner writes for a
//! worker process that stopped renewing its lease.
//!
//! Exactly once: the expired rows are deleted `FOR UPDATE SKIP LOCKED … RETURNING`, and the
//! jobs read `FOR UPDATE SKIP LOCKED`, in one transaction, so two nodes rescuing at once take
//! disjoint sets, and a job rescued is no longer executing for the dead node when the other
//! looks. A late ack from the dead node is fenced, since the job no longer names it.
//!
//! Every node looks for expired nodes at each tick, not the leader alone: a frozen leader
//! (SIGSTOP) keeps its connection and with it the leader's lock, so it must be rescuable by
//! the others. The connections of a node whose row a rescue deleted are then ended
//! (`pg_terminate_backend`, by the `application_name` every node's connections carry): a
//! frozen node's leader lock and any transaction it left open (a claim holding its queue's
//! lock) go with them, and the next tick's leader is a live node.

use std::collections::HashMap;

use postgres::Client;

use super::metrics::Tally;
use super::row::{code, COLUMNS};
use super::write::store;
use crate::clock::Micros;
use crate::error::Result;
use crate::job::Job;
use crate::state::JobState;

/// A dead node, as its deleted row described it.
struct Dead {
    pid: i32,
    hostname: String,
    lease_us: Micros,
}

/// The `application_name` of node `node`'s connections.
pub(crate) fn connection_name(node: i64) -> String {
    format!("kathikon node {node}")
}

/// At `now`, delete the rows of nodes other than `this` whose lease has expired and rescue the
/// jobs they held, counted in `tally` once committed; with `sweep` (the leader's), also the
/// jobs of any node without a row. Ends the dead nodes' connections. Returns how many jobs
/// were rescued.
pub(crate) fn rescue_expired(
    client: &mut Client,
    this: i64,
    now: Micros,
    tally: &Tally,
    sweep: bool,
) -> Result<u64> {
    let mut tx = client.transaction()?;
    let dead: HashMap<i64, Dead> = tx
        .query(
            "DELETE FROM kathikon.nodes WHERE id IN (
                 SELECT id FROM kathikon.nodes WHERE lease_expires_at < $1 AND id <> $2
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, pid, hostname, lease_expires_at - heartbeat_at",
            &[&now, &this],
        )?
        .iter()
        .map(|r| (r.get(0), Dead { pid: r.get(1), hostname: r.get(2), lease_us: r.get(3) }))
        .collect();
    if dead.is_empty() && !sweep {
        tx.commit()?;
        return Ok(0);
    }
    // Jobs held by a node without a row: the ones just deleted, and any whose row an earlier
    // rescue deleted after the node claimed them (it was frozen, came back, claimed, died).
    let rows = tx.query(
        &format!(
            "SELECT {COLUMNS}, node_id FROM kathikon.jobs j
             WHERE state = $1 AND node_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM kathikon.nodes n WHERE n.id = j.node_id)
             ORDER BY id FOR UPDATE SKIP LOCKED"
        ),
        &[&code(JobState::Executing)],
    )?;
    let mut held: Vec<(Job, i64)> = rows
        .iter()
        .map(|r| super::row::job(r).map(|job| (job, r.get::<_, i64>(super::row::NEXT_COLUMN))))
        .collect::<Result<_>>()?;
    if !held.is_empty() {
        // A node registered after this statement's snapshot may have claimed a job since;
        // a fresh look at the rows spares its jobs.
        let nodes: Vec<i64> = held.iter().map(|(_, n)| *n).collect();
        let live: Vec<i64> = tx
            .query("SELECT id FROM kathikon.nodes WHERE id = ANY($1)", &[&nodes])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        held.retain(|(_, node)| !live.contains(node));
    }
    for (job, node) in &mut held {
        let cause = match dead.get(node) {
            Some(d) => format!(
                "rescued: node {node} (process {} on {}) stopped renewing its lease ({:.1} s) \
                 during attempt {}",
                d.pid,
                d.hostname,
                d.lease_us as f64 / 1e6,
                job.attempt
            ),
            None => format!(
                "rescued: node {node} lost its lease earlier and is gone, during attempt {}",
                job.attempt
            ),
        };
        job.rescue_because(now, &cause)?;
    }
    store(&mut tx, &held.iter().map(|(j, _)| (j, None)).collect::<Vec<_>>())?
        .apply(&mut tx, now)?;
    tx.commit()?;
    tally.rescued(held.iter().map(|(job, _)| job), now);
    if !dead.is_empty() {
        let names: Vec<String> = dead.keys().map(|node| connection_name(*node)).collect();
        // Refused without the right to signal them (another database user, not a member of
        // pg_signal_backend): the frozen node then keeps its connections until it thaws.
        let _ = client.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = ANY($1) AND pid <> pg_backend_pid()",
            &[&names],
        );
    }
    Ok(held.len() as u64)
}
