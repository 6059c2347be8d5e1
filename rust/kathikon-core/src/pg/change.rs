//! The changes a user asks for by id: cancel and retry, through [`crate::Job::cancel`] and
//! [`crate::Job::retry`] on the locked row, with the engine's answers: a finished job's cancel
//! returns it unchanged, an available job's retry too, an executing job's retry is refused.
//! Cancelling an executing job takes it from its worker, whose later ack is then fenced.

use postgres::Client;

use super::metrics::Tally;
use super::write::{begin, lock, promote_if_due, store, Locked};
use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::job::{Job, JobId};
use crate::metrics::Ended;
use crate::retention::Retention;
use crate::state::JobState;

/// What a user's cancel records as the reason.
const CANCELLED_BY_USER: &str = "cancelled by user";

/// Cancel job `id` at `now`: the job as it now is and the state it was in. A job that had not
/// ended counts as cancelled in `tally` (with no duration: no attempt reported), as the
/// engine's cancel counts it.
pub(crate) fn cancel(
    client: &mut Client,
    id: JobId,
    now: Micros,
    tally: &Tally,
) -> Result<(Job, JobState)> {
    let mut tx = begin(client, now)?;
    let Locked { mut job, node } =
        lock(&mut tx, &[id])?.remove(&id).ok_or(Error::JobNotFound(id))?;
    promote_if_due(&mut job, now)?;
    let before = job.state;
    if !before.is_terminal() {
        job.cancel(now, CANCELLED_BY_USER.into())?;
        store(&mut tx, &[(&job, node)])?;
    }
    tx.commit()?;
    if !before.is_terminal() {
        tally.record(&job.queue, Ended::Cancelled, now, None);
    }
    Ok((job, before))
}

/// Make job `id` available at `now`.
pub(crate) fn retry(client: &mut Client, id: JobId, now: Micros) -> Result<Job> {
    let mut tx = begin(client, now)?;
    let Locked { mut job, node } =
        lock(&mut tx, &[id])?.remove(&id).ok_or(Error::JobNotFound(id))?;
    promote_if_due(&mut job, now)?;
    if job.state != JobState::Available {
        job.retry(now)?;
        store(&mut tx, &[(&job, node)])?;
    }
    tx.commit()?;
    Ok(job)
}

/// Delete finished jobs that finished at or before `before`; returns how many.
pub(crate) fn prune(client: &mut Client, before: Micros) -> Result<u64> {
    let sql = format!(
        "DELETE FROM kathikon.jobs WHERE state IN ({}) AND finished_at <= $1",
        super::row::codes(&JobState::TERMINAL)
    );
    Ok(client.execute(sql.as_str(), &[&before])?)
}

/// Delete the jobs finished longer ago than `retention` keeps each terminal state, at `now`;
/// returns how many.
pub(crate) fn prune_by_retention(
    client: &mut Client,
    retention: &Retention,
    now: Micros,
) -> Result<u64> {
    let mut pruned = 0;
    for state in JobState::TERMINAL {
        let Some(period) = retention.of(state) else { continue };
        let before = now.saturating_sub(i64::try_from(period.as_micros()).unwrap_or(i64::MAX));
        pruned += client.execute(
            "DELETE FROM kathikon.jobs WHERE state = $1 AND finished_at <= $2",
            &[&super::row::code(state), &before],
        )?;
    }
    Ok(pruned)
}
