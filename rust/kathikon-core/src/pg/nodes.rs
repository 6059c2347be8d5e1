//! Nodes: each open store registers a row in `kathikon.nodes` (its process, host, start and
//! lease), and the jobs it claims carry its id, so an ack can be fenced by node and attempt.
//! Closing the store hands back what the node still holds — each job rescued through
//! [`crate::Job::rescue_because`], available again or discarded when out of attempts, with a
//! `rescued:` entry in its history — and deletes the row.

use postgres::Client;

use super::metrics::Tally;
use super::row::{code, COLUMNS};
use super::write::store;
use crate::clock::Micros;
use crate::error::Result;
use crate::job::Job;
use crate::state::JobState;

/// This machine's host name, as the node row records it.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into buf.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    if ok {
        String::from_utf8_lossy(&buf[..len]).into_owned()
    } else {
        String::new()
    }
}

/// Register this process as a node at `now`, its lease running for `lease_us`; its id.
pub(crate) fn register(client: &mut Client, now: Micros, lease_us: Micros) -> Result<i64> {
    let row = client.query_one(
        "INSERT INTO kathikon.nodes (pid, hostname, started_at, heartbeat_at, lease_expires_at)
         VALUES ($1, $2, $3, $3, $4) RETURNING id",
        &[&(std::process::id() as i32), &hostname(), &now, &now.saturating_add(lease_us)],
    )?;
    Ok(row.get(0))
}

/// Renew node `node`'s lease at `now` for `lease_us` more. A node whose row is gone — it
/// stopped renewing (frozen, cut off) past its lease and another node rescued its jobs —
/// registers again under the same id: what it held is lost to it already (its late acks are
/// fenced), and what it claims from now on must again be rescued should it stop for good.
///
/// The renewal publishes the node's `claimers` (JSON, [`super::claimers`]) as of `now`.
/// Returns whether the node was registered again (what hung off its row, its crontab, went
/// with the old one).
pub(crate) fn renew(
    client: &mut Client,
    node: i64,
    now: Micros,
    lease_us: Micros,
    claimers: &str,
) -> Result<bool> {
    let expires = now.saturating_add(lease_us);
    let renewed = client.execute(
        "UPDATE kathikon.nodes
         SET heartbeat_at = $2, lease_expires_at = $3, claimers = $4::text::json
         WHERE id = $1",
        &[&node, &now, &expires, &claimers],
    )?;
    if renewed == 0 {
        return Ok(client.execute(
            "INSERT INTO kathikon.nodes
                 (id, pid, hostname, started_at, heartbeat_at, lease_expires_at)
             OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $4, $5)
             ON CONFLICT (id) DO NOTHING",
            &[&node, &(std::process::id() as i32), &hostname(), &now, &expires],
        )? == 1);
    }
    Ok(false)
}

/// Rescue what node `node` still holds and delete its row, in one transaction; the rescued
/// jobs count in `tally` once committed. Returns how many jobs were rescued (discarded ones
/// included).
pub(crate) fn leave(client: &mut Client, node: i64, now: Micros, tally: &Tally) -> Result<u64> {
    let mut tx = client.transaction()?;
    let rows = tx.query(
        &format!(
            "SELECT {COLUMNS} FROM kathikon.jobs WHERE node_id = $1 AND state = $2 \
             ORDER BY id FOR UPDATE"
        ),
        &[&node, &code(JobState::Executing)],
    )?;
    let mut jobs = rows.iter().map(super::row::job).collect::<Result<Vec<Job>>>()?;
    for job in &mut jobs {
        let cause = format!(
            "rescued: node {node} (process {}) closed the store during attempt {}",
            std::process::id(),
            job.attempt
        );
        job.rescue_because(now, &cause)?;
    }
    store(&mut tx, &jobs.iter().map(|j| (j, None)).collect::<Vec<_>>())?.apply(&mut tx, now)?;
    tx.execute("DELETE FROM kathikon.nodes WHERE id = $1", &[&node])?;
    tx.commit()?;
    tally.rescued(&jobs, now);
    Ok(jobs.len() as u64)
}
