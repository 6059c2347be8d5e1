//! Which processes work on the database ([`crate::Jobs::processes`]): every node row, each a
//! peer ([`ProcessRole::Node`]) with its lease, the jobs executing for it and the queues it
//! claims from. One statement reads the rows and the jobs, so a job is listed under the node
//! holding it in that one snapshot: a job acked or rescued is under nobody, a job claimed
//! under its claimer.

use postgres::Client;

use super::claimers::published;
use super::row::code;
use crate::error::Result;
use crate::processes::{ProcessInfo, ProcessRole};
use crate::state::JobState;

/// Every node of the database, the others by id and node `this` last, with `queues` as this
/// node's queues (its live record; the others' as of their last heartbeat). A node whose row
/// is gone (rescued after its lease ran out, until it registers again) is not listed.
pub(crate) fn list(
    client: &mut Client,
    this: i64,
    queues: Vec<String>,
) -> Result<Vec<ProcessInfo>> {
    let rows = client.query(
        "SELECT n.id, n.pid, n.hostname, n.started_at, n.heartbeat_at, n.lease_expires_at,
                n.claimers::text,
                coalesce((SELECT array_agg(j.id ORDER BY j.id) FROM kathikon.jobs j
                          WHERE j.node_id = n.id AND j.state = $1), '{}')
         FROM kathikon.nodes n ORDER BY n.id",
        &[&code(JobState::Executing)],
    )?;
    let mut others = Vec::with_capacity(rows.len());
    let mut own = None;
    for row in rows {
        let node: i64 = row.get(0);
        let jobs: Vec<i64> = row.get(7);
        let mut info = ProcessInfo {
            pid: row.get::<_, i32>(1) as u32,
            role: ProcessRole::Node,
            hostname: row.get(2),
            connected_at: row.get(3),
            last_seen: row.get(4),
            lease_expires: Some(row.get(5)),
            jobs: jobs.into_iter().map(|id| id as u64).collect(),
            queues: Vec::new(),
        };
        if node == this {
            own = Some(info);
            continue;
        }
        info.queues = published(node, row.get(6))?.into_iter().map(|(queue, _)| queue).collect();
        info.queues.sort_unstable();
        others.push(info);
    }
    if let Some(mut own) = own {
        own.queues = queues;
        own.queues.sort_unstable();
        others.push(own);
    }
    Ok(others)
}
