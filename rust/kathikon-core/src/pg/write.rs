//! Changing jobs through the state machine: read them locked (`FOR UPDATE`, in id order, so
//! two writers never deadlock), apply the core's own [`crate::Job`] methods — which alone
//! decide the next state and the fields that go with it — and write the changed fields back
//! in one statement. The rules live in `state.rs` and `job.rs` once, not again in SQL.

use std::collections::BTreeMap;

use std::sync::OnceLock;

use postgres::types::ToSql;
use postgres::{Client, Statement, ToStatement, Transaction};

use super::batches::Settle;
use super::connection::Prepared;
use super::row::{errors_json, job, pg_id, COLUMNS, NEXT_COLUMN};
use crate::clock::Micros;
use crate::error::Result;
use crate::job::{Job, JobId};
use crate::state::JobState;
use crate::storage::EntryKind;

/// A job read for a change, and the node that claimed its latest attempt.
pub(crate) struct Locked {
    /// The job.
    pub(crate) job: Job,
    /// The node that claimed its latest attempt, if any did.
    pub(crate) node: Option<i64>,
}

/// The statement [`lock`] runs.
fn lock_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "SELECT {COLUMNS}, node_id FROM kathikon.jobs WHERE id = ANY($1) ORDER BY id \
             FOR UPDATE"
        )
    })
}

/// The jobs among `ids` that exist, locked until the transaction ends, by id.
pub(crate) fn lock(tx: &mut Transaction<'_>, ids: &[JobId]) -> Result<BTreeMap<JobId, Locked>> {
    lock_with(tx, lock_sql(), ids)
}

/// [`lock`], running `statement` (its text or the statement prepared from it).
fn lock_with<S: ?Sized + ToStatement>(
    tx: &mut Transaction<'_>,
    statement: &S,
    ids: &[JobId],
) -> Result<BTreeMap<JobId, Locked>> {
    let ids: Vec<i64> = ids.iter().map(|id| pg_id(*id)).collect();
    let rows = tx.query(statement, &[&ids])?;
    rows.iter()
        .map(|r| job(r).map(|job| (job.id, Locked { job, node: r.get(NEXT_COLUMN) })))
        .collect()
}

/// A waiting job whose time has come is available: what the engine's every write batch does
/// first, so a change sees the state the job would have had after the last promotion.
pub(crate) fn promote_if_due(job: &mut Job, now: Micros) -> Result<()> {
    if job.state.is_waiting() && job.scheduled_at <= now {
        job.promote()?;
    }
    Ok(())
}

/// Open a transaction for a change at `now`, first promoting every due job that no other
/// transaction holds, as each of the engine's write batches starts.
pub(crate) fn begin(client: &mut Client, now: Micros) -> Result<Transaction<'_>> {
    let mut tx = client.transaction()?;
    super::claim::promote(&mut tx, now, true)?;
    Ok(tx)
}

/// The statements of a change ([`begin`], [`lock`], [`store`], and settling the batches of
/// the members it finished), prepared on one connection: the hot path of acks, which run them
/// for every batch.
pub(crate) struct Change {
    promote: Statement,
    lock: Statement,
    store: Statement,
    settle: Statement,
}

impl Change {
    /// The statements, prepared on `client` (once per connection, then from `prepared`).
    pub(crate) fn prepare(client: &mut Client, prepared: &mut Prepared) -> Result<Change> {
        Ok(Change {
            promote: prepared.get(client, super::claim::promotion_sql(true))?,
            lock: prepared.get(client, lock_sql())?,
            store: prepared.get(client, store_sql())?,
            settle: prepared.get(client, super::batches::SETTLE)?,
        })
    }

    /// [`begin`] with the prepared statement.
    pub(crate) fn begin<'a>(&self, client: &'a mut Client, now: Micros) -> Result<Transaction<'a>> {
        let mut tx = client.transaction()?;
        tx.query_one(&self.promote, &[&now])?;
        Ok(tx)
    }

    /// [`lock`] with the prepared statement.
    pub(crate) fn lock(
        &self,
        tx: &mut Transaction<'_>,
        ids: &[JobId],
    ) -> Result<BTreeMap<JobId, Locked>> {
        lock_with(tx, &self.lock, ids)
    }

    /// [`store`] with the prepared statement.
    pub(crate) fn store(
        &self,
        tx: &mut Transaction<'_>,
        jobs: &[(&Job, Option<i64>)],
    ) -> Result<Settle> {
        store_with(tx, &self.store, jobs)
    }

    /// [`Settle::apply`] with the prepared statement.
    pub(crate) fn settle(
        &self,
        tx: &mut Transaction<'_>,
        settle: Settle,
        now: Micros,
    ) -> Result<()> {
        settle.apply_with(tx, &self.settle, now)
    }
}

/// The statement [`store`] runs: the changed fields, as arrays unnested into rows; the
/// queues `$12` that have a global limit notified, as a job of theirs that left the executing
/// state frees a place a waiting claim may take ([`super::limits`]; a queue without a global
/// limit costs one lookup of its settings row); and the jobs `$14` (those now finished) that
/// someone awaits notified on [`super::finished::CHANNEL`] (a job nobody awaits costs one
/// probe of the `awaited` index).
fn store_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "WITH changed AS (
                 UPDATE kathikon.jobs j SET state = u.state, attempt = u.attempt,
                     max_attempts = u.max_attempts, errors = u.errors::json,
                     scheduled_at = u.scheduled_at, attempted_at = u.attempted_at,
                     completed_at = u.completed_at, cancelled_at = u.cancelled_at,
                     discarded_at = u.discarded_at, node_id = u.node_id,
                     result = u.result::json
                 FROM unnest($1::bigint[], $2::smallint[], $3::bigint[], $4::bigint[],
                             $5::text[], $6::bigint[], $7::bigint[], $8::bigint[],
                             $9::bigint[], $10::bigint[], $11::bigint[], $13::text[])
                     AS u(id, state, attempt, max_attempts, errors, scheduled_at,
                          attempted_at, completed_at, cancelled_at, discarded_at, node_id,
                          result)
                 WHERE j.id = u.id
                 RETURNING 1),
             freed AS MATERIALIZED (
                 SELECT pg_notify('kathikon_jobs', ':' || name) FROM kathikon.entries
                 WHERE kind = {kind} AND name = ANY($12)
                     AND jsonb_typeof(convert_from(value, 'UTF8')::jsonb -> 'global_limit')
                         = 'object'),
             done AS MATERIALIZED ({done})
             SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM freed),
                 (SELECT count(*) FROM done)",
            kind = EntryKind::Queue as i16,
            done = super::finished::notify_sql("$14"),
        )
    })
}

/// Write the fields a transition changes of each of `jobs` (locked by [`lock`]), and the
/// node that holds each (`None`: none); notify the queues of the jobs now available, the
/// globally limited queues of jobs not executing (any may have left the state), and the
/// waiters of the jobs now finished. Returns the batches of the members now finished, to
/// settle before the transaction commits ([`Settle::apply`]).
pub(crate) fn store(tx: &mut Transaction<'_>, jobs: &[(&Job, Option<i64>)]) -> Result<Settle> {
    store_with(tx, store_sql(), jobs)
}

/// [`store`], running `statement` (its text or the statement prepared from it).
fn store_with<S: ?Sized + ToStatement>(
    tx: &mut Transaction<'_>,
    statement: &S,
    jobs: &[(&Job, Option<i64>)],
) -> Result<Settle> {
    if jobs.is_empty() {
        return Ok(Settle::default());
    }
    let nodes: Vec<Option<i64>> = jobs.iter().map(|(_, node)| *node).collect();
    let jobs: Vec<&Job> = jobs.iter().map(|(job, _)| *job).collect();
    let ids: Vec<i64> = jobs.iter().map(|j| pg_id(j.id)).collect();
    let states: Vec<i16> = jobs.iter().map(|j| super::row::code(j.state)).collect();
    let attempts: Vec<i64> = jobs.iter().map(|j| i64::from(j.attempt)).collect();
    let max_attempts: Vec<i64> = jobs.iter().map(|j| i64::from(j.max_attempts)).collect();
    let errors: Vec<String> = jobs.iter().map(|j| errors_json(j)).collect();
    let scheduled: Vec<Micros> = jobs.iter().map(|j| j.scheduled_at).collect();
    let attempted: Vec<Option<Micros>> = jobs.iter().map(|j| j.attempted_at).collect();
    let completed: Vec<Option<Micros>> = jobs.iter().map(|j| j.completed_at).collect();
    let cancelled: Vec<Option<Micros>> = jobs.iter().map(|j| j.cancelled_at).collect();
    let discarded: Vec<Option<Micros>> = jobs.iter().map(|j| j.discarded_at).collect();
    let mut settled: Vec<&str> =
        jobs.iter().filter(|j| j.state != JobState::Executing).map(|j| j.queue.as_str()).collect();
    settled.sort_unstable();
    settled.dedup();
    let results: Vec<Option<&str>> = jobs.iter().map(|j| j.result.as_deref()).collect();
    let finished: Vec<i64> =
        jobs.iter().filter(|j| j.state.is_terminal()).map(|j| pg_id(j.id)).collect();
    let params: [&(dyn ToSql + Sync); 14] = [
        &ids,
        &states,
        &attempts,
        &max_attempts,
        &errors,
        &scheduled,
        &attempted,
        &completed,
        &cancelled,
        &discarded,
        &nodes,
        &settled,
        &results,
        &finished,
    ];
    tx.query_one(statement, &params)?;
    // Jobs made available (retried, rescued) wake the claims waiting on their queues.
    let mut woken: Vec<&str> =
        jobs.iter().filter(|j| j.state == JobState::Available).map(|j| j.queue.as_str()).collect();
    woken.sort_unstable();
    woken.dedup();
    super::listen::notify(tx, &woken)?;
    Ok(Settle::finished(jobs))
}
