//! Insert: a batch of jobs in one statement (one round trip): the jobs' columns are sent as
//! arrays and unnested into rows, in the order given, so the ids `PostgreSQL` assigns ascend in
//! that order.

use postgres::GenericClient;

use super::row::code;
use super::validate::validate;
use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::job::{Job, NewJob};
use crate::state::JobState;

/// The insert, and in the same statement (so the same transaction, delivered at its commit)
/// a notification per queue that got available jobs ([`super::listen`]), naming this node
/// as its origin (it wakes its own waits at once, without the echo). The notifying CTE is
/// materialized and counted, so it runs exactly once, after the insert.
const INSERT: &str = "WITH ins AS (INSERT INTO kathikon.jobs
        (state, queue, worker, args, meta, tags, max_attempts, priority, inserted_at, scheduled_at)
    SELECT u.state, u.queue, u.worker, u.args::json, u.meta::json,
        ARRAY(SELECT t FROM json_array_elements_text(u.tags::json) WITH ORDINALITY AS e(t, k)
              ORDER BY k),
        u.max_attempts, u.priority, $9, u.scheduled_at
    FROM unnest($1::smallint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::bigint[], $8::smallint[], $10::bigint[])
        WITH ORDINALITY AS u(state, queue, worker, args, meta, tags, max_attempts, priority,
                             scheduled_at, n)
    ORDER BY u.n
    RETURNING id, queue, state),
    woke AS MATERIALIZED (
        SELECT pg_notify('kathikon_jobs', $12 || q.queue)
        FROM (SELECT DISTINCT queue FROM ins WHERE state = $11) q)
    SELECT id, (SELECT count(*) FROM woke) FROM ins";

/// Insert `jobs` at `now` for node `node`, all or none; returns them as stored, in the order
/// given. Jobs with a unique spec go through [`super::unique::insert_flagged`].
pub(crate) fn insert(
    client: &mut impl GenericClient,
    jobs: Vec<NewJob>,
    now: Micros,
    node: i64,
) -> Result<Vec<Job>> {
    for new in &jobs {
        validate(new)?;
        if new.unique.is_some() {
            return Err(Error::Storage("a unique job reached the plain insert".into()));
        }
    }
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut jobs: Vec<Job> = jobs.into_iter().map(|new| new.into_job(0, now)).collect();
    let states: Vec<i16> = jobs.iter().map(|j| code(j.state)).collect();
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
    let workers: Vec<&str> = jobs.iter().map(|j| j.worker.as_str()).collect();
    let args: Vec<&str> = jobs.iter().map(|j| j.args.as_str()).collect();
    let metas: Vec<&str> = jobs.iter().map(|j| j.meta.as_str()).collect();
    let tags: Vec<String> =
        jobs.iter().map(|j| serde_json::to_string(&j.tags).expect("tags always encode")).collect();
    let max_attempts: Vec<i64> = jobs.iter().map(|j| i64::from(j.max_attempts)).collect();
    let priorities: Vec<i16> = jobs.iter().map(|j| i16::from(j.priority)).collect();
    let scheduled: Vec<i64> = jobs.iter().map(|j| j.scheduled_at).collect();
    let rows = client.query(
        INSERT,
        &[
            &states,
            &queues,
            &workers,
            &args,
            &metas,
            &tags,
            &max_attempts,
            &priorities,
            &now,
            &scheduled,
            &code(JobState::Available),
            &super::listen::origin(node),
        ],
    )?;
    // One statement's identity values ascend in the order its rows are inserted (`ORDER BY`).
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort_unstable();
    if ids.len() != jobs.len() {
        return Err(Error::Storage(format!(
            "PostgreSQL inserted {} rows for {} jobs",
            ids.len(),
            jobs.len()
        )));
    }
    for (job, id) in jobs.iter_mut().zip(ids) {
        job.id = id as u64;
    }
    Ok(jobs)
}
