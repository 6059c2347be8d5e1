//! Acks: a worker's outcomes, applied in one transaction through [`crate::Job::finish`], and
//! fenced: an outcome counts only while the job is executing exactly the reported attempt for
//! this node. The check reads the row locked `FOR UPDATE`, which no other transaction can
//! change until this one commits, so it holds at the update as it did at the read: a node that
//! lost the job (it was rescued, cancelled, or claimed again elsewhere) never overwrites what
//! happened since. A refused outcome changes no state; it is written into the job's
//! history (`fenced: …`), as the socket owner does for its clients.

use postgres::Client;

use super::write::{lock, promote_if_due, store, Locked};
use crate::clock::Micros;
use crate::error::Result;
use crate::job::{Ack, AckResult};
use crate::state::JobState;

/// Apply `acks` at `now` for node `node` (process `pid`); one result per ack, in order.
pub(crate) fn ack(
    client: &mut Client,
    acks: Vec<Ack>,
    now: Micros,
    node: i64,
    pid: u32,
) -> Result<Vec<AckResult>> {
    if acks.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = client.transaction()?;
    let ids: Vec<u64> = acks.iter().map(|a| a.id).collect();
    let mut jobs = lock(&mut tx, &ids)?;
    let mut results = Vec::with_capacity(acks.len());
    for Ack { id, attempt, outcome } in acks {
        let Some(Locked { job, node: holder }) = jobs.get_mut(&id) else {
            results.push(AckResult::Stale(None));
            continue;
        };
        promote_if_due(job, now)?;
        let holds =
            job.state == JobState::Executing && job.attempt == attempt && *holder == Some(node);
        if holds {
            job.finish(outcome, now)?;
            results.push(AckResult::Applied(job.clone()));
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
    let changed: Vec<_> = jobs.values().map(|l| &l.job).collect();
    store(&mut tx, &changed)?;
    tx.commit()?;
    Ok(results)
}
