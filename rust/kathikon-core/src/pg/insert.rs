//! Insert: a batch of jobs in one statement (one round trip): the jobs' columns are sent as
//! arrays and unnested into rows, in the order given, so the ids `PostgreSQL` assigns ascend in
//! that order.

use std::sync::OnceLock;

use postgres::types::ToSql;
use postgres::{Client, GenericClient, ToStatement};

use super::connection::Prepared;
use super::row::code;
use super::validate::validate;
use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::job::{Job, NewJob};
use crate::state::JobState;

/// The insert, and in the same statement (so the same transaction, delivered at its commit)
/// a notification per queue that got available jobs ([`super::listen`]), naming this node
/// as its origin (it wakes its own waits at once, without the echo). The notifying CTE is
/// materialized and counted, so it runs exactly once, after the insert. A template: the
/// `{batch_…}` places take the batch column or nothing ([`insert_sql`]).
const INSERT: &str = "WITH ins AS (INSERT INTO kathikon.jobs
        (state, queue, worker, args, meta, tags, max_attempts, priority, inserted_at, scheduled_at
         {batch_column})
    SELECT u.state, u.queue, u.worker, u.args::json, u.meta::json,
        ARRAY(SELECT t FROM json_array_elements_text(u.tags::json) WITH ORDINALITY AS e(t, k)
              ORDER BY k),
        u.max_attempts, u.priority, $9, u.scheduled_at {batch_select}
    FROM unnest($1::smallint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::bigint[], $8::smallint[], $10::bigint[] {batch_param})
        WITH ORDINALITY AS u(state, queue, worker, args, meta, tags, max_attempts, priority,
                             scheduled_at {batch_column}, n)
    ORDER BY u.n
    RETURNING id, queue, state),
    woke AS MATERIALIZED (
        SELECT pg_notify('kathikon_jobs', $12 || q.queue)
        FROM (SELECT DISTINCT queue FROM ins WHERE state = $11) q)
    SELECT id, (SELECT count(*) FROM woke) FROM ins";

/// [`INSERT`] for jobs of no batch (`members` false: 12 parameters, the statement a host's
/// driver runs too), or with each job's batch id, `$13` (`members`).
fn insert_sql(members: bool) -> &'static str {
    static SQL: OnceLock<[String; 2]> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let plain = INSERT
            .replace("{batch_column}", "")
            .replace("{batch_select}", "")
            .replace("{batch_param}", "");
        let members = INSERT
            .replace("{batch_column}", ", batch_id")
            .replace("{batch_select}", ", u.batch_id")
            .replace("{batch_param}", ", $13::text[]");
        [plain, members]
    });
    &sql[usize::from(members)]
}

/// The columns of a batch of jobs as [`INSERT`] takes them, parameter by parameter.
pub struct InsertColumns {
    /// `$1`: each job's state number.
    pub states: Vec<i16>,
    /// `$2`: each job's queue.
    pub queues: Vec<String>,
    /// `$3`: each job's worker.
    pub workers: Vec<String>,
    /// `$4`: each job's args (JSON text).
    pub args: Vec<String>,
    /// `$5`: each job's meta (JSON text).
    pub metas: Vec<String>,
    /// `$6`: each job's tags, as a JSON array.
    pub tags: Vec<String>,
    /// `$7`: each job's attempts.
    pub max_attempts: Vec<i64>,
    /// `$8`: each job's priority.
    pub priorities: Vec<i16>,
    /// `$9`: the insert time of them all.
    pub now: Micros,
    /// `$10`: when each is due.
    pub scheduled: Vec<Micros>,
    /// `$11`: the available state's number (which jobs wake their queue).
    pub available: i16,
    /// `$12`: the node the notification names as its origin.
    pub origin: String,
    /// `$13`, in the statement for batch members only: each job's batch id.
    batches: Vec<Option<String>>,
}

/// Check `jobs` and lay them out as columns for an insert at `now` by `origin`; with them,
/// the jobs as they will be stored (their ids still 0). A unique job is refused: its key
/// takes a transaction of its own ([`super::unique`]).
fn columns(jobs: Vec<NewJob>, now: Micros, origin: String) -> Result<(InsertColumns, Vec<Job>)> {
    for new in &jobs {
        validate(new)?;
        if new.unique.is_some() {
            return Err(Error::InvalidJob(
                "a unique job cannot be inserted through this statement; insert it through the \
                 app, or without unique"
                    .into(),
            ));
        }
    }
    let jobs: Vec<Job> = jobs.into_iter().map(|new| new.into_job(0, now)).collect();
    let columns = InsertColumns {
        states: jobs.iter().map(|j| code(j.state)).collect(),
        queues: jobs.iter().map(|j| j.queue.clone()).collect(),
        workers: jobs.iter().map(|j| j.worker.clone()).collect(),
        args: jobs.iter().map(|j| j.args.clone()).collect(),
        metas: jobs.iter().map(|j| j.meta.clone()).collect(),
        tags: jobs
            .iter()
            .map(|j| serde_json::to_string(&j.tags).expect("tags always encode"))
            .collect(),
        max_attempts: jobs.iter().map(|j| i64::from(j.max_attempts)).collect(),
        priorities: jobs.iter().map(|j| i16::from(j.priority)).collect(),
        now,
        scheduled: jobs.iter().map(|j| j.scheduled_at).collect(),
        available: code(JobState::Available),
        origin,
        batches: jobs.iter().map(|j| j.batch.clone()).collect(),
    };
    Ok((columns, jobs))
}

/// Insert `jobs` at `now` for node `node`, all or none; returns them as stored, in the order
/// given. Jobs with a unique spec go through [`super::unique::insert_flagged`]; the batches of
/// batch members are the caller's to open in the same transaction ([`super::batches::open`]).
pub(crate) fn insert(
    client: &mut impl GenericClient,
    jobs: Vec<NewJob>,
    now: Micros,
    node: i64,
) -> Result<Vec<Job>> {
    let members = jobs.iter().any(|j| j.batch.is_some());
    insert_with(client, insert_sql(members), jobs, now, super::listen::origin(node))
}

/// [`insert`], its notification naming no node, so every node's waits wake, this one's too:
/// for jobs no call of this process inserted (a batch's callbacks).
pub(crate) fn insert_waking_all(
    client: &mut impl GenericClient,
    jobs: Vec<NewJob>,
    now: Micros,
) -> Result<Vec<Job>> {
    let members = jobs.iter().any(|j| j.batch.is_some());
    insert_with(client, insert_sql(members), jobs, now, String::new())
}

/// [`insert`] of jobs of no batch on its own (its statement a transaction), with the
/// statement prepared on the connection.
pub(crate) fn insert_prepared(
    client: &mut Client,
    prepared: &mut Prepared,
    jobs: Vec<NewJob>,
    now: Micros,
    node: i64,
) -> Result<Vec<Job>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    debug_assert!(jobs.iter().all(|j| j.batch.is_none()), "batch members need their batch opened");
    let statement = prepared.get(client, insert_sql(false))?;
    insert_with(client, &statement, jobs, now, super::listen::origin(node))
}

/// [`insert`], running `statement` ([`insert_sql`] for the jobs, or the statement prepared
/// from it), the notification naming `origin`.
fn insert_with<S: ?Sized + ToStatement>(
    client: &mut impl GenericClient,
    statement: &S,
    jobs: Vec<NewJob>,
    now: Micros,
    origin: String,
) -> Result<Vec<Job>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let (c, mut jobs) = columns(jobs, now, origin)?;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &c.states,
        &c.queues,
        &c.workers,
        &c.args,
        &c.metas,
        &c.tags,
        &c.max_attempts,
        &c.priorities,
        &c.now,
        &c.scheduled,
        &c.available,
        &c.origin,
    ];
    if c.batches.iter().any(Option::is_some) {
        params.push(&c.batches);
    }
    let rows = client.query(statement, &params)?;
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

/// The insert for a host's own database driver, so jobs commit or roll back with the
/// caller's transaction (`Kathikon.insert(..., conn=)`): the statement with `%(pN)s`
/// placeholders (psycopg's named style) for parameter `$N`, the parameters, and the jobs as
/// they will be stored (their ids still 0: the statement returns each inserted row's id in
/// its first column, and they ascend in the order given). Its notification names no node, so
/// every node's waits wake when the caller commits.
/// A batch member is refused: its batch is opened in a transaction of Kathikon's own.
pub fn host_insert(jobs: Vec<NewJob>, now: Micros) -> Result<(String, InsertColumns, Vec<Job>)> {
    if let Some(join) = jobs.iter().find_map(|j| j.batch.as_ref()) {
        return Err(Error::InvalidJob(format!(
            "a job of batch {:?} cannot be inserted through your connection (conn=): its batch \
             is opened in a transaction of Kathikon's own; insert the batch without conn=",
            join.id
        )));
    }
    let (columns, jobs) = columns(jobs, now, String::new())?;
    let mut sql = insert_sql(false).to_string();
    // From the highest number down, so `$1` does not rewrite the start of `$10`.
    for n in (1..=12).rev() {
        sql = sql.replace(&format!("${n}"), &format!("%(p{n})s"));
    }
    Ok((sql, columns, jobs))
}
