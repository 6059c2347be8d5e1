//! Acks: a worker's outcomes, applied in one transaction through [`crate::Job::finish`], and
//! fenced by node and attempt. A claim makes the node hold the attempt (`node_id`, `attempt`);
//! its first report lets go of it: applied if the job is still executing it, else stale (it
//! was cancelled meanwhile) and let go all the same. A report from a node that does not hold
//! the attempt — it reported already, or lost the job to a rescue and a new claim — is
//! refused and noted in the job's history (`fenced: …`), as the socket owner does for its
//! clients.
//!
//! The check reads the row locked `FOR UPDATE`, which no other transaction can change until
//! this one commits, so it holds at the update as it did at the read: a node that lost the job
//! never overwrites what happened since. A refused outcome changes no state.
//!
//! An ack sent again because its connection broke (`resent`) may find its own first send
//! committed: the attempt let go by this node, the job no longer executing it, and no rescue
//! since (a rescue is the one other way a job lets go of its node, and notes itself last in
//! the history). That is answered stale without a fencing note, as it is no late report but
//! the same one twice.

use postgres::Client;

use super::metrics::Tally;
use super::write::{begin, lock, promote_if_due, store, Locked};
use crate::clock::Micros;
use crate::error::Result;
use crate::job::{Ack, AckResult};
use crate::metrics::Ended;
use crate::state::JobState;

/// Apply `acks` at `now` for node `node` (process `pid`); one result per ack, in order. Each
/// applied outcome that ends an attempt counts in `tally` once the transaction commits.
pub(crate) fn ack(
    client: &mut Client,
    acks: Vec<Ack>,
    now: Micros,
    node: i64,
    pid: u32,
    tally: &Tally,
    resent: bool,
) -> Result<Vec<AckResult>> {
    if acks.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = begin(client, now)?;
    let ids: Vec<u64> = acks.iter().map(|a| a.id).collect();
    let mut jobs = lock(&mut tx, &ids)?;
    let mut results = Vec::with_capacity(acks.len());
    for Ack { id, attempt, outcome } in acks {
        let Some(Locked { job, node: holder }) = jobs.get_mut(&id) else {
            results.push(AckResult::Stale(None));
            continue;
        };
        promote_if_due(job, now)?;
        if *holder == Some(node) && job.attempt == attempt {
            *holder = None;
            if job.state == JobState::Executing {
                job.finish(outcome, now)?;
                results.push(AckResult::Applied(job.clone()));
            } else {
                results.push(AckResult::Stale(Some(job.state)));
            }
        } else if resent
            && holder.is_none()
            && job.attempt == attempt
            && job.state != JobState::Executing
            && !job.errors.last().is_some_and(|e| e.error.starts_with("rescued:"))
        {
            results.push(AckResult::Stale(Some(job.state)));
        } else {
            let text = format!(
                "fenced: node {node} (process {pid}) reported '{}' for attempt {attempt} while \
                 the job was {} (attempt {}); the report was refused",
                outcome.past_tense(),
                job.state,
                job.attempt
            );
            job.note_fenced(now, attempt, text);
            results.push(AckResult::Stale(Some(job.state)));
        }
    }
    let changed: Vec<_> = jobs.values().map(|l| (&l.job, l.node)).collect();
    store(&mut tx, &changed)?;
    tx.commit()?;
    for result in &results {
        if let AckResult::Applied(job) = result {
            if let Some(ended) = Ended::after_ack(job.state) {
                tally.record(&job.queue, ended, now, job.attempted_at.map(|at| now - at));
            }
        }
    }
    Ok(results)
}
