//! Waiting for a job to finish on `PostgreSQL` ([`crate::Jobs::wait_finished`]): a wait
//! registers a row in `kathikon.awaited` and reads the job in one statement, and a
//! transaction that finishes an awaited job (or deletes it unfinished) sends
//! `NOTIFY kathikon_done, '<id>'` ([`notify_sql`], in `write::store`'s statement), which
//! `PostgreSQL` delivers at its commit to every node's listener (`listen.rs`); the listener
//! wakes this process's waits on that id (`crate::finished`).
//!
//! No notification is missed: the registering statement reads the job `FOR SHARE`, so it
//! waits for a transaction that holds the job locked (every change locks the job first, then
//! notifies in a later statement) and then reads what it committed; a change that locks the
//! job after that statement waits for its commit, and its notifying statement, with a later
//! snapshot, sees the row.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

use postgres::GenericClient;

use super::row::{job, pg_id, COLUMNS};
use crate::error::{Error, Result};
use crate::job::{Job, JobId};

/// The channel of finished awaited jobs; the payload is the job's id.
pub(crate) const CHANNEL: &str = "kathikon_done";

/// The query that notifies [`CHANNEL`] of each job among the ids of the bigint array
/// parameter `ids` (`$n`) that a wait registered for.
pub(crate) fn notify_sql(ids: &str) -> String {
    format!(
        "SELECT pg_notify('{CHANNEL}', a.job_id::text) FROM kathikon.awaited a \
         WHERE a.job_id = ANY({ids})"
    )
}

/// In the transaction of `client`, notify the waits of the jobs `ids` (deleted unfinished).
pub(crate) fn notify(client: &mut impl GenericClient, ids: &[i64]) -> Result<()> {
    if !ids.is_empty() {
        client.execute(notify_sql("$1::bigint[]").as_str(), &[&ids])?;
    }
    Ok(())
}

/// A number for a new wait of this process (with the node, it names the wait's row).
pub(crate) fn new_waiter() -> i64 {
    static NEXT: AtomicI64 = AtomicI64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Register wait `waiter` of node `node` on job `id`, and read the job (see the module
/// documentation for why it is read `FOR SHARE`).
pub(crate) fn register(
    client: &mut impl GenericClient,
    node: i64,
    waiter: i64,
    id: JobId,
) -> Result<Job> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "WITH registered AS (
                 INSERT INTO kathikon.awaited (job_id, node_id, waiter) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING)
             SELECT {COLUMNS} FROM kathikon.jobs WHERE id = $1 FOR SHARE"
        )
    });
    let row = client.query_opt(sql.as_str(), &[&pg_id(id), &node, &waiter])?;
    job(&row.ok_or(Error::JobNotFound(id))?)
}

/// Delete wait `waiter`'s row.
pub(crate) fn unregister(
    client: &mut impl GenericClient,
    node: i64,
    waiter: i64,
    id: JobId,
) -> Result<()> {
    client.execute(
        "DELETE FROM kathikon.awaited WHERE job_id = $1 AND node_id = $2 AND waiter = $3",
        &[&pg_id(id), &node, &waiter],
    )?;
    Ok(())
}
