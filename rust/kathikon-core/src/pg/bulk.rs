//! Bulk actions by filter: cancel, retry or delete every job a [`ListFilter`] selects, in
//! transactions of at most [`BULK_CHUNK`] jobs in id order. Each chunk is selected and locked
//! by the filter in one statement (`FOR UPDATE` re-checks the filter on a row that changed
//! while it waited), checked once more by the engine's own [`Matcher`], and changed through
//! the core's [`crate::Job`] methods, with the engine's rules: cancel spares finished jobs,
//! retry spares available and executing ones, delete spares unfinished ones unless forced.

use postgres::Client;

use super::batches::Settle;
use super::listen;
use super::reads::Condition;
use super::row::{job, pg_id, COLUMNS, NEXT_COLUMN};
use super::write::{begin, store};
use crate::clock::Micros;
use crate::error::Result;
use crate::job::{Job, JobId};
use crate::jobs::ListFilter;
use crate::listing::{BulkAction, Matcher, BULK_CHUNK};
use crate::state::JobState;

/// What a bulk cancel records as the reason, as a single cancel does.
const CANCELLED_BY_USER: &str = "cancelled by user";

/// Apply `action` at `now` to every job `filter` selects; returns how many changed. Chunks
/// committed before an error stay.
pub(crate) fn bulk(
    client: &mut Client,
    action: BulkAction,
    filter: &ListFilter,
    now: Micros,
) -> Result<u64> {
    let matcher = Matcher::new(filter)?;
    let mut page = ListFilter { limit: BULK_CHUNK, descending: false, ..filter.clone() };
    let mut total = 0;
    loop {
        let condition = Condition::of(&page)?;
        let sql = format!(
            "SELECT {COLUMNS}, node_id FROM kathikon.jobs {} ORDER BY id LIMIT {BULK_CHUNK} \
             FOR UPDATE",
            condition.where_clause()
        );
        let mut tx = begin(client, now)?;
        let rows = tx.query(sql.as_str(), &condition.params())?;
        let full = rows.len() == BULK_CHUNK;
        let mut changed: Vec<(Job, Option<i64>)> = Vec::new();
        let mut deleted: Vec<JobId> = Vec::new();
        // The deleted members, which leave their batches or stay counted in them.
        let mut settle = Settle::default();
        // The queues of executing jobs deleted: a place of a global limit each frees.
        let mut freed: Vec<String> = Vec::new();
        for row in &rows {
            let mut job = job(row)?;
            page.after = Some(job.id);
            if !matcher.matches(&job) {
                continue;
            }
            match action {
                BulkAction::Cancel if !job.state.is_terminal() => {
                    job.cancel(now, CANCELLED_BY_USER.into())?;
                    changed.push((job, row.get(NEXT_COLUMN)));
                }
                BulkAction::Retry
                    if !matches!(job.state, JobState::Available | JobState::Executing) =>
                {
                    job.retry(now)?;
                    changed.push((job, row.get(NEXT_COLUMN)));
                }
                BulkAction::Delete { force } if force || job.state.is_terminal() => {
                    if job.state == JobState::Executing {
                        freed.push(job.queue.clone());
                    }
                    settle.deleted(&job);
                    deleted.push(job.id);
                }
                _ => {}
            }
        }
        settle.merge(store(&mut tx, &changed.iter().map(|(j, n)| (j, *n)).collect::<Vec<_>>())?);
        if !deleted.is_empty() {
            let ids: Vec<i64> = deleted.iter().map(|id| pg_id(*id)).collect();
            tx.execute("DELETE FROM kathikon.jobs WHERE id = ANY($1)", &[&ids])?;
            // A job deleted unfinished ends its waits (they find it gone).
            super::finished::notify(&mut tx, &ids)?;
            listen::notify(&mut tx, &freed.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        settle.apply(&mut tx, now)?;
        tx.commit()?;
        total += (changed.len() + deleted.len()) as u64;
        if !full {
            return Ok(total);
        }
    }
}
