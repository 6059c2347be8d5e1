//! The changes a user asks for by id: cancel and retry, through [`crate::Job::cancel`] and
//! [`crate::Job::retry`] on the locked row, with the engine's answers: a finished job's cancel
//! returns it unchanged, an available job's retry too, an executing job's retry is refused.
//! Cancelling an executing job takes it from its worker, whose later ack is then fenced.

use std::sync::OnceLock;

use postgres::types::ToSql;
use postgres::{Client, Transaction};

use super::batches::Settle;
use super::metrics::Tally;
use super::row::{code, codes};
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
        store(&mut tx, &[(&job, node)])?.apply(&mut tx, now)?;
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
        store(&mut tx, &[(&job, node)])?.apply(&mut tx, now)?;
    }
    tx.commit()?;
    Ok(job)
}

/// Delete finished jobs that finished at or before `before`, at `now`; returns how many.
/// Deleted members stay counted in their batches.
pub(crate) fn prune(client: &mut Client, before: Micros, now: Micros) -> Result<u64> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        pruning(&format!("state IN ({}) AND finished_at <= $1", codes(&JobState::TERMINAL)))
    });
    let mut tx = client.transaction()?;
    let (pruned, settle) = prune_with(&mut tx, sql, &[&before])?;
    settle.apply(&mut tx, now)?;
    tx.commit()?;
    Ok(pruned)
}

/// Delete the jobs finished longer ago than `retention` keeps each terminal state, at `now`;
/// returns how many. Deleted members stay counted in their batches.
pub(crate) fn prune_by_retention(
    client: &mut Client,
    retention: &Retention,
    now: Micros,
) -> Result<u64> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| pruning("state = $1 AND finished_at <= $2"));
    let mut tx = client.transaction()?;
    let mut pruned = 0;
    let mut settle = Settle::default();
    for state in JobState::TERMINAL {
        let Some(period) = retention.of(state) else { continue };
        let before = now.saturating_sub(i64::try_from(period.as_micros()).unwrap_or(i64::MAX));
        let (n, kept) = prune_with(&mut tx, sql, &[&code(state), &before])?;
        pruned += n;
        settle.merge(kept);
    }
    settle.apply(&mut tx, now)?;
    tx.commit()?;
    Ok(pruned)
}

/// The statement deleting the jobs `filter` selects: how many, and the batch members among
/// them counted per batch and state (three arrays in one order).
fn pruning(filter: &str) -> String {
    format!(
        "WITH d AS (DELETE FROM kathikon.jobs WHERE {filter} RETURNING batch_id, state),
         k AS (SELECT batch_id, state, count(*) AS n FROM d WHERE batch_id IS NOT NULL
               GROUP BY batch_id, state)
         SELECT (SELECT count(*) FROM d), m.batches, m.states, m.ns
         FROM (SELECT array_agg(batch_id ORDER BY batch_id, state) AS batches,
                      array_agg(state ORDER BY batch_id, state) AS states,
                      array_agg(n ORDER BY batch_id, state) AS ns FROM k) m"
    )
}

/// Run a [`pruning`] statement: how many jobs it deleted, and the members it deleted.
fn prune_with(
    tx: &mut Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(u64, Settle)> {
    let row = tx.query_one(sql, params)?;
    let batches: Option<Vec<String>> = row.get(1);
    let states: Option<Vec<i16>> = row.get(2);
    let ns: Option<Vec<i64>> = row.get(3);
    let mut settle = Settle::default();
    let members = batches.unwrap_or_default().into_iter().zip(states.unwrap_or_default());
    for ((batch, c), n) in members.zip(ns.unwrap_or_default()) {
        // The filters delete finished jobs only.
        if let Some(state) = JobState::TERMINAL.into_iter().find(|s| code(*s) == c) {
            settle.pruned(&batch, state, n);
        }
    }
    Ok((row.get::<_, i64>(0) as u64, settle))
}
