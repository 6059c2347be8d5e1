//! A job as a row of `kathikon.jobs`: the columns read back ([`COLUMNS`]) and the job they
//! make ([`job`]), and the state numbers the queries use.

use postgres::Row;

use crate::error::{Error, Result};
use crate::job::{Job, JobError, JobId};
use crate::state::JobState;

/// The columns [`job`] reads, in its order (`args`, `meta`, `errors` and `result` as their
/// exact text); a query that reads more puts them after these, from index [`NEXT_COLUMN`].
pub(crate) const COLUMNS: &str =
    "id, state, queue, worker, args::text, meta::text, tags, attempt, \
     max_attempts, priority, errors::text, inserted_at, scheduled_at, attempted_at, completed_at, \
     cancelled_at, discarded_at, result::text, batch_id";

/// The index of the first column after [`COLUMNS`].
pub(crate) const NEXT_COLUMN: usize = 19;

/// [`COLUMNS`] of the table aliased `j`.
pub(crate) const J_COLUMNS: &str = "j.id, j.state, j.queue, j.worker, j.args::text, j.meta::text, \
     j.tags, j.attempt, j.max_attempts, j.priority, j.errors::text, j.inserted_at, j.scheduled_at, \
     j.attempted_at, j.completed_at, j.cancelled_at, j.discarded_at, j.result::text, j.batch_id";

/// A state as the `state` column stores it (its number in [`JobState`]).
pub(crate) fn code(state: JobState) -> i16 {
    i16::from(state as u8)
}

/// A comma-separated list of states' codes, for an SQL `IN (...)`.
pub(crate) fn codes(states: &[JobState]) -> String {
    states.iter().map(|s| code(*s).to_string()).collect::<Vec<_>>().join(", ")
}

/// The state stored as `code`.
pub(crate) fn state(id: JobId, code: i16) -> Result<JobState> {
    usize::try_from(code).ok().and_then(|i| JobState::ALL.get(i).copied()).ok_or_else(|| {
        Error::Storage(format!("job {id} has state number {code}, which no Kathikon state has"))
    })
}

/// An id as `PostgreSQL`'s bigint.
pub(crate) fn pg_id(id: JobId) -> i64 {
    id as i64
}

/// The job a row of [`COLUMNS`] holds.
pub(crate) fn job(row: &Row) -> Result<Job> {
    let id = row.get::<_, i64>(0) as JobId;
    let errors: String = row.get(10);
    let errors: Vec<JobError> = serde_json::from_str(&errors).map_err(|e| {
        Error::Storage(format!("job {id}'s errors column is not Kathikon's error list ({e})"))
    })?;
    Ok(Job {
        id,
        state: state(id, row.get(1))?,
        queue: row.get(2),
        worker: row.get(3),
        args: row.get(4),
        meta: row.get(5),
        tags: row.get(6),
        attempt: row.get::<_, i64>(7) as u32,
        max_attempts: row.get::<_, i64>(8) as u32,
        priority: row.get::<_, i16>(9) as u8,
        errors,
        inserted_at: row.get(11),
        scheduled_at: row.get(12),
        attempted_at: row.get(13),
        completed_at: row.get(14),
        cancelled_at: row.get(15),
        discarded_at: row.get(16),
        result: row.get(17),
        batch: row.get(18),
    })
}

/// A job's error list as the `errors` column's JSON text.
pub(crate) fn errors_json(job: &Job) -> String {
    serde_json::to_string(&job.errors).expect("error entries always encode")
}
