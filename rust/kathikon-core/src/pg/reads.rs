//! Reads: one job, the counts per queue and state, the oldest available job of a queue and
//! how many are ready, and listing and counting by [`ListFilter`], translated to one query
//! each (`args`/`meta` containment is `jsonb`'s `@>`, which the contract's filter copies).

use postgres::types::ToSql;
use postgres::Client;

use super::row::{code, job, pg_id, state, COLUMNS};
use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::job::{Job, JobId};
use crate::jobs::ListFilter;
use crate::limits::Limits;
use crate::listing::TimeRange;
use crate::queues::QueueSettings;
use crate::state::JobState;
use crate::storage::EntryKind;

/// Job `id` as last committed.
pub(crate) fn get(client: &mut Client, id: JobId) -> Result<Job> {
    let row = client
        .query_opt(&format!("SELECT {COLUMNS} FROM kathikon.jobs WHERE id = $1"), &[&pg_id(id)])?
        .ok_or(Error::JobNotFound(id))?;
    job(&row)
}

/// Job counts per queue and state, by queue then state.
pub(crate) fn counts(client: &mut Client) -> Result<Vec<(String, JobState, u64)>> {
    client
        .query(
            "SELECT queue, state, count(*) FROM kathikon.jobs GROUP BY queue, state \
             ORDER BY queue, state",
            &[],
        )?
        .iter()
        .map(|r| Ok((r.get(0), state(0, r.get(1))?, r.get::<_, i64>(2) as u64)))
        .collect()
}

/// When the oldest available job of `queue` became due.
pub(crate) fn oldest_available(client: &mut Client, queue: &str) -> Result<Option<Micros>> {
    let row = client.query_one(
        "SELECT min(scheduled_at) FROM kathikon.jobs WHERE queue = $1 AND state = $2",
        &[&queue, &code(JobState::Available)],
    )?;
    Ok(row.get(0))
}

/// How many jobs of `queue` are available.
pub(crate) fn ready_count(client: &mut Client, queue: &str) -> Result<usize> {
    let row = client.query_one(
        "SELECT count(*) FROM kathikon.jobs WHERE queue = $1 AND state = $2",
        &[&queue, &code(JobState::Available)],
    )?;
    Ok(row.get::<_, i64>(0) as usize)
}

/// Which of `queues` have available jobs and are not paused, in the order given, each with
/// its limits if it has any (a limited queue is ready only while they have room, which the
/// caller checks: [`super::limits::claimable`]).
pub(crate) fn ready_queues(
    client: &mut Client,
    prepared: &mut super::connection::Prepared,
    queues: &[String],
) -> Result<Vec<(String, Option<Limits>)>> {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "SELECT w.q, (SELECT value FROM kathikon.entries
                          WHERE kind = {kind} AND name = w.q AND {limited})
             FROM unnest($1::text[]) WITH ORDINALITY AS w(q, n)
             WHERE EXISTS (SELECT 1 FROM kathikon.jobs WHERE queue = w.q AND state = $2)
                 AND {not_paused}
             ORDER BY w.n",
            kind = EntryKind::Queue as i16,
            limited = super::queues::limited("convert_from(value, 'UTF8')::jsonb"),
            not_paused = super::queues::not_paused("w.q"),
        )
    });
    let sql = prepared.get(client, sql)?;
    let rows = client.query(&sql, &[&queues, &code(JobState::Available)])?;
    rows.iter()
        .map(|r| {
            let queue: String = r.get(0);
            let limits = r
                .get::<_, Option<&[u8]>>(1)
                .map(|value| QueueSettings::decode_value(&queue, value))
                .transpose()?
                .map(|settings| settings.limits());
            Ok((queue, limits))
        })
        .collect()
}

/// A filter as an SQL condition and its parameters.
pub(crate) struct Condition {
    sql: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync>>,
}

impl Condition {
    fn add(&mut self, sql: impl FnOnce(usize) -> String, param: Box<dyn ToSql + Sync>) {
        self.params.push(param);
        self.sql.push(sql(self.params.len()));
    }

    fn range(&mut self, column: &str, range: TimeRange) {
        if let Some(after) = range.after {
            self.add(|n| format!("{column} >= ${n}"), Box::new(after));
        }
        if let Some(before) = range.before {
            self.add(|n| format!("{column} < ${n}"), Box::new(before));
        }
    }

    fn json(&mut self, column: &str, what: &str, text: Option<&String>) -> Result<()> {
        let Some(text) = text else { return Ok(()) };
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            Error::InvalidJob(format!(
                "the {what} filter {text:?} is not JSON ({e}); pass the JSON a job's {what} \
                 must contain, such as {{\"user_id\": 7}}"
            ))
        })?;
        // Sent re-encoded: what PostgreSQL parses is what was checked here.
        let text = value.to_string();
        if text.contains("\\u0000") {
            return Err(Error::InvalidJob(format!(
                "the {what} filter contains a NUL character (\\u0000), which PostgreSQL cannot \
                 compare; remove it"
            )));
        }
        self.add(|n| format!("{column}::jsonb @> ${n}::text::jsonb"), Box::new(text));
        Ok(())
    }

    /// `filter`'s condition; a containment filter that is not JSON is refused by name.
    pub(crate) fn of(filter: &ListFilter) -> Result<Condition> {
        let mut c = Condition { sql: Vec::new(), params: Vec::new() };
        if let Some(s) = filter.state {
            c.add(|n| format!("state = ${n}"), Box::new(code(s)));
        }
        if !filter.states.is_empty() {
            let states: Vec<i16> = filter.states.iter().map(|s| code(*s)).collect();
            c.add(|n| format!("state = ANY(${n})"), Box::new(states));
        }
        if let Some(q) = &filter.queue {
            c.add(|n| format!("queue = ${n}"), Box::new(q.clone()));
        }
        if let Some(w) = &filter.worker {
            c.add(|n| format!("worker = ${n}"), Box::new(w.clone()));
        }
        if let Some(after) = filter.after {
            c.add(|n| format!("id > ${n}"), Box::new(pg_id(after)));
        }
        if let Some(before) = filter.before {
            c.add(|n| format!("id < ${n}"), Box::new(pg_id(before)));
        }
        if !filter.tags.is_empty() {
            c.add(|n| format!("tags @> ${n}::text[]"), Box::new(filter.tags.clone()));
        }
        c.json("args", "args", filter.args.as_ref())?;
        c.json("meta", "meta", filter.meta.as_ref())?;
        c.range("inserted_at", filter.inserted);
        c.range("scheduled_at", filter.scheduled);
        // A finished-time range selects finished jobs only: others have no finished_at.
        c.range("finished_at", filter.finished);
        Ok(c)
    }

    /// `WHERE …`, or nothing when the filter selects every job.
    pub(crate) fn where_clause(&self) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.sql.join(" AND "))
        }
    }

    /// The parameters, in the order the condition numbers them.
    pub(crate) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| &**p).collect()
    }
}

/// The jobs `filter` selects, in id order (descending when it says so), at most its limit.
pub(crate) fn list(client: &mut Client, filter: &ListFilter) -> Result<Vec<Job>> {
    let c = Condition::of(filter)?;
    let order = if filter.descending { "DESC" } else { "ASC" };
    let limit = if filter.limit == 0 { String::new() } else { format!("LIMIT {}", filter.limit) };
    let sql = format!(
        "SELECT {COLUMNS} FROM kathikon.jobs {} ORDER BY id {order} {limit}",
        c.where_clause()
    );
    client.query(sql.as_str(), &c.params())?.iter().map(job).collect()
}

/// How many jobs `filter` selects, its limit aside.
pub(crate) fn count(client: &mut Client, filter: &ListFilter) -> Result<u64> {
    let c = Condition::of(filter)?;
    let sql = format!("SELECT count(*) FROM kathikon.jobs {}", c.where_clause());
    Ok(client.query_one(sql.as_str(), &c.params())?.get::<_, i64>(0) as u64)
}
