//! The bulk verb: one chunk of a bulk action ([`crate::Jobs::bulk`]), applied to jobs the
//! caller listed, each checked against the filter again as stored now, so a job that changed
//! since the listing is left alone.

use crate::claim::key_of;
use crate::clock::Micros;
use crate::error::Result;
use crate::job::JobId;
use crate::listing::{BulkAction, Matcher};
use crate::state::JobState;
use crate::storage::WriteTxn;

use super::effects::Effects;

/// Apply `action` to the jobs `ids` that `matcher` still selects; returns how many changed.
pub(super) fn apply(
    txn: &mut dyn WriteTxn,
    action: BulkAction,
    ids: &[JobId],
    matcher: &Matcher,
    now: Micros,
    effects: &mut Effects,
) -> Result<u64> {
    let mut changed = 0;
    for &id in ids {
        let Some(mut job) = txn.get(id)? else { continue };
        if !matcher.matches(&job) {
            continue;
        }
        let (before, was_key) = (job.placement(), key_of(&job));
        match action {
            BulkAction::Cancel => {
                if job.state.is_terminal() {
                    continue;
                }
                job.cancel(now, "cancelled by user".into())?;
                txn.put(Some(before), &job)?;
            }
            BulkAction::Retry => {
                if matches!(job.state, JobState::Available | JobState::Executing) {
                    continue;
                }
                job.retry(now)?;
                txn.put(Some(before), &job)?;
                effects.ready(&job);
            }
            BulkAction::Delete { force } => {
                if !force && !job.state.is_terminal() {
                    continue;
                }
                txn.remove(&job)?;
            }
        }
        if before.state == JobState::Available {
            effects.unready(job.queue.clone(), was_key);
        }
        changed += 1;
    }
    Ok(changed)
}
