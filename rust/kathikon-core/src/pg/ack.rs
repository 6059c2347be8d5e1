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
//!
//! Acks sent by many calls are applied together in one transaction ([`super::acks`]): each
//! keeps its own time, and one after another in the order given, each ack meets the job as
//! the ones before it left it, as if each had been its own transaction.

use postgres::Client;

use super::connection::Prepared;
use super::metrics::Tally;
use super::write::{promote_if_due, Change, Locked};
use crate::clock::Micros;
use crate::error::Result;
use crate::job::{Ack, AckResult};
use crate::metrics::Ended;
use crate::state::JobState;

/// Apply `acks`, each at its time, for node `node` (process `pid`); one result per ack, in
/// order. Each applied outcome that ends an attempt counts in `tally` once the transaction
/// commits.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ack(
    client: &mut Client,
    prepared: &mut Prepared,
    acks: &[(Ack, Micros)],
    node: i64,
    pid: u32,
    tally: &Tally,
    resent: bool,
) -> Result<Vec<AckResult>> {
    let Some(latest) = acks.iter().map(|(_, at)| *at).max() else {
        return Ok(Vec::new());
    };
    let change = Change::prepare(client, prepared)?;
    let mut tx = change.begin(client, latest)?;
    let ids: Vec<u64> = acks.iter().map(|(a, _)| a.id).collect();
    let mut jobs = change.lock(&mut tx, &ids)?;
    let mut results = Vec::with_capacity(acks.len());
    let mut ended = Vec::new();
    for (Ack { id, attempt, outcome }, now) in acks {
        let (id, attempt, now) = (*id, *attempt, *now);
        let Some(Locked { job, node: holder }) = jobs.get_mut(&id) else {
            results.push(AckResult::Stale(None));
            continue;
        };
        promote_if_due(job, now)?;
        if *holder == Some(node) && job.attempt == attempt {
            *holder = None;
            if job.state == JobState::Executing {
                job.finish(outcome.clone(), now)?;
                ended.push(now);
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
    let settle = change.store(&mut tx, &changed)?;
    change.settle(&mut tx, settle, latest)?;
    tx.commit()?;
    let applied = results.iter().filter_map(|r| match r {
        AckResult::Applied(job) => Some(job),
        AckResult::Stale(_) => None,
    });
    for (job, now) in applied.zip(ended) {
        if let Some(ended) = Ended::after_ack(job.state) {
            tally.record(&job.queue, ended, now, job.attempted_at.map(|at| now - at));
        }
    }
    Ok(results)
}
