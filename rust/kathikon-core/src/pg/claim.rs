//! Promotion and claiming. Promotion makes scheduled and retryable jobs whose time has come
//! available (the transition [`Event::Promote`]); a claim promotes its queue's due jobs, then
//! takes the most urgent available ones — by priority, due time, id — with
//! `FOR UPDATE SKIP LOCKED`, so claimers in any number of processes each get different jobs
//! without waiting on each other's locks, and marks them executing for this node with the
//! attempt counted ([`Event::Claim`]; the same fields [`crate::Job::claim`] sets) — unless
//! the queue is paused, checked under the queue's lock ([`super::queues`]). A queue with
//! limits is claimed by [`super::limits`] instead; the statement that takes the lock says
//! whether it has any, so an unlimited queue's claim costs no more round trips.

use std::sync::OnceLock;

use postgres::{Client, GenericClient};

use super::connection::Prepared;
use super::limits::Claimed;
use super::queues::{is_limited, not_paused, QUEUE_LOCKS};
use super::row::{code, codes, job, J_COLUMNS};
use crate::clock::{Clock, Micros};
use crate::error::Result;
use crate::job::Job;
use crate::state::{transition, Event, JobState};

/// The state a due waiting job is promoted to, per the transition table.
fn promoted() -> JobState {
    transition(0, JobState::Scheduled, Event::Promote).expect("scheduled jobs promote")
}

/// The promotion statement: due waiting jobs (of queue `$2` only, when `queue` says so) made
/// available, their queues notified; with `lock`, the claim's shared lock of queue `$2` is
/// taken first (a materialized CTE, counted so it runs), and a last column says whether the
/// queue has limits.
fn promotion(queue: bool, skip_locked: bool, lock: bool) -> String {
    format!(
        "WITH {lock_cte} p AS (UPDATE kathikon.jobs SET state = {available} WHERE id IN (
                 SELECT id FROM kathikon.jobs
                 WHERE state IN ({waiting}) AND scheduled_at <= $1 {queue}
                 ORDER BY id FOR UPDATE {skip})
             RETURNING queue),
         woke AS MATERIALIZED (
             SELECT pg_notify('kathikon_jobs', ':' || q.queue)
             FROM (SELECT DISTINCT queue FROM p) q)
         SELECT (SELECT count(*) FROM p), (SELECT count(*) FROM woke) {lock_count}",
        lock_cte = if lock {
            format!(
                "l AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared({QUEUE_LOCKS}, \
                 hashtext($2))),"
            )
        } else {
            String::new()
        },
        lock_count = if lock {
            format!(", (SELECT count(*) FROM l), {}", is_limited("$2"))
        } else {
            String::new()
        },
        available = code(promoted()),
        waiting = codes(&JobState::WAITING),
        queue = if queue { "AND queue = $2" } else { "" },
        skip = if skip_locked { "SKIP LOCKED" } else { "" },
    )
}

/// Make every scheduled or retryable job due at or before `until` available. With
/// `skip_locked`, rows another transaction holds are left for the next promotion (a claim
/// must not wait); without, this waits for them (a sync promises every due job promoted).
/// The queues that got jobs are notified ([`super::listen`]). Returns how many were promoted.
pub(crate) fn promote(
    client: &mut impl GenericClient,
    until: Micros,
    skip_locked: bool,
) -> Result<u64> {
    let row = client.query_one(promotion_sql(skip_locked), &[&until])?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// The statement that claims the jobs whose ids `chosen` selects (locked) for node `$3` at
/// `$2`: executing, the attempt counted ([`Event::Claim`]), returned.
pub(crate) fn claiming(chosen: &str) -> String {
    format!(
        "UPDATE kathikon.jobs j
         SET state = {executing}, attempt = j.attempt + 1, attempted_at = $2, node_id = $3
         FROM ({chosen}) c
         WHERE j.id = c.id
         RETURNING {J_COLUMNS}",
        executing =
            code(transition(0, JobState::Available, Event::Claim).expect("available jobs claim")),
    )
}

/// The statement [`promote`] runs, to prepare.
pub(crate) fn promotion_sql(skip_locked: bool) -> &'static str {
    static SQL: OnceLock<[String; 2]> = OnceLock::new();
    let sql = SQL.get_or_init(|| [promotion(false, false, false), promotion(false, true, false)]);
    &sql[usize::from(skip_locked)]
}

/// Claim up to `max` jobs of `queue` at `now` for node `node`, none if it is paused (a limited
/// queue's claim reads its time from `clock` once it holds the queue's limit lock); returns
/// them in claim order. One transaction: the queue's shared lock and its promotion, then the
/// claim, whose later snapshot sees any pause committed before the lock was granted. The
/// claim of an unlimited queue takes nothing if limits were set while the lock was awaited
/// (the change notifies, and the next look claims under them).
pub(crate) fn claim(
    client: &mut Client,
    prepared: &mut Prepared,
    queue: &str,
    max: usize,
    now: Micros,
    clock: &dyn Clock,
    node: i64,
) -> Result<Claimed> {
    static SQL: OnceLock<String> = OnceLock::new();
    // The queue's shared lock and its promotion, before the claim ([`promotion`]).
    static PREPARE: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        claiming(&format!(
            "SELECT id FROM kathikon.jobs
             WHERE queue = $1 AND state = {available} AND {not_paused} AND NOT {limited}
             ORDER BY priority, scheduled_at, id
             LIMIT $4
             FOR UPDATE SKIP LOCKED",
            available = code(JobState::Available),
            not_paused = not_paused("$1"),
            limited = is_limited("$1"),
        ))
    });
    let prepare = prepared.get(client, PREPARE.get_or_init(|| promotion(true, true, true)))?;
    let sql = prepared.get(client, sql)?;
    let mut tx = client.transaction()?;
    let locked = tx.query_one(&prepare, &[&now, &queue])?;
    if locked.get::<_, bool>(3) {
        if let Some(claimed) = super::limits::claim(&mut tx, prepared, queue, max, clock, node)? {
            tx.commit()?;
            return Ok(claimed);
        }
    }
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let rows = tx.query(&sql, &[&queue, &now, &node, &limit])?;
    tx.commit()?;
    let mut jobs = rows.iter().map(job).collect::<Result<Vec<Job>>>()?;
    // RETURNING promises no order; the claim's is the queue's.
    jobs.sort_unstable_by_key(|j| (j.priority, j.scheduled_at, j.id));
    Ok(Claimed { jobs, retry_at: None })
}
