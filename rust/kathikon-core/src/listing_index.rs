//! Which index a listing reads: a filter that names states (or a finishing-time range) is
//! answered from the store's per-state indexes when that costs less than the walk in id
//! order, and at once when the counts say no job can match.
//!
//! The choice never changes the answer: an index holds every job of its states (of its queue,
//! where it has one), the ids it gives are sorted into the listing's order and bounded by its
//! cursor, and each job is read and matched against the whole filter, as the walk does. Only
//! the cost differs, estimated from the counts per queue and state, read in the same snapshot:
//! the walk reads about `limit × jobs / matching` records in order (every job without a
//! limit); the index path one entry per job of its tables, then looks up records one by one
//! until the page is full (about `limit × entries / matching`, every entry without a limit).
//! An entry (a key, no record) is taken to cost a tenth of a record read in order, a record
//! looked up by id twice one read in order (a descent from the root, then the same decode).

use crate::error::{Error, Result};
use crate::job::{Job, JobId};
use crate::listing::Matcher;
use crate::state::JobState;
use crate::storage::{IndexSource, ReadTxn};

/// The jobs `matcher` selects, in its order, bounded by its cursor, read through the indexes;
/// `Ok(false)` when the walk in id order is the cheaper way (nothing was passed to `f`).
/// Records that do not decode go to `damaged`.
pub(crate) fn walk_indexed(
    txn: &mut dyn ReadTxn,
    matcher: &Matcher,
    damaged: &mut Vec<JobId>,
    f: &mut dyn FnMut(Job) -> bool,
) -> Result<bool> {
    let Some(ids) = candidates(txn, matcher)? else { return Ok(false) };
    for id in ids {
        match txn.get(id) {
            Ok(Some(job)) => {
                if matcher.matches(&job) && !f(job) {
                    break;
                }
            }
            Ok(None) => {}
            Err(Error::Corrupted { job: Some(bad), .. }) if bad == id => damaged.push(id),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The states a filter can select, by `JobState as usize`.
fn wanted_states(matcher: &Matcher) -> [bool; 7] {
    let f = matcher.filter();
    let mut wanted = [true; 7];
    for s in JobState::ALL {
        let ok = f.state.is_none_or(|only| only == s)
            && (f.states.is_empty() || f.states.contains(&s))
            && (f.finished.after.is_none() && f.finished.before.is_none() || s.is_terminal());
        wanted[s as usize] = ok;
    }
    wanted
}

/// The ids to read, in the listing's order and within its cursor, or `None` to walk.
fn candidates(txn: &mut dyn ReadTxn, matcher: &Matcher) -> Result<Option<Vec<JobId>>> {
    let f = matcher.filter();
    let wanted = wanted_states(matcher);
    if wanted.iter().all(|w| *w) {
        return Ok(None); // no state narrows the listing: every index together is the walk
    }
    let counts = txn.counts()?;
    let queue_ok = |q: &str| f.queue.as_deref().is_none_or(|want| want == q);
    let total: u64 = counts.iter().map(|(_, _, n)| n).sum();
    let matching: u64 = counts
        .iter()
        .filter(|(q, s, _)| wanted[*s as usize] && queue_ok(q))
        .map(|(_, _, n)| n)
        .sum();
    if matching == 0 {
        return Ok(Some(Vec::new()));
    }
    // Records the walk would read: to the end without a limit, else until `limit` of the
    // `matching` jobs, spread over the `total`, are found.
    let walk = match f.limit {
        0 => total,
        limit => total.min((limit as u64).saturating_mul(total).div_ceil(matching)),
    };
    let in_state = |state: JobState| -> u64 {
        counts.iter().filter(|(_, s, _)| *s == state).map(|(_, _, n)| n).sum()
    };
    let mut sources: Vec<(IndexSource<'_>, u64)> = Vec::new();
    for (queue, state, n) in &counts {
        if !wanted[*state as usize] || !queue_ok(queue) {
            continue;
        }
        // A failure state's jobs are in `due` or `finished` too: read from `failed` when
        // that table is not read whole anyway, so no id is read twice.
        let covered = match state {
            JobState::Retryable => wanted[JobState::Scheduled as usize],
            _ => wanted[JobState::Completed as usize],
        };
        match state {
            JobState::Available => sources.push((IndexSource::Available(queue), *n)),
            JobState::Retryable | JobState::Cancelled | JobState::Discarded if !covered => {
                sources.push((IndexSource::Failed(queue, *state), *n));
            }
            _ => {}
        }
    }
    if wanted[JobState::Scheduled as usize] {
        let n = in_state(JobState::Scheduled) + in_state(JobState::Retryable);
        sources.push((IndexSource::Due, n));
    }
    if wanted[JobState::Executing as usize] {
        sources.push((IndexSource::Executing, in_state(JobState::Executing)));
    }
    let ranged = !(f.finished.after.is_none() && f.finished.before.is_none());
    let in_range = IndexSource::Finished(f.finished.after, f.finished.before);
    if wanted[JobState::Completed as usize] {
        let n = JobState::TERMINAL.iter().map(|s| in_state(*s)).sum();
        if ranged {
            // The range holds every job the filter can select: it alone is read.
            sources = vec![(in_range, n)];
        } else {
            sources.push((in_range, n));
        }
    }
    // In tenths of a record read in order (see the module doc).
    let entries: u64 = sources.iter().map(|(_, n)| n).sum();
    let lookups = match f.limit {
        0 => entries,
        limit => entries.min((limit as u64).saturating_mul(entries).div_ceil(matching)),
    };
    let by_index = entries.saturating_add(lookups.saturating_mul(20));
    let by_walk = walk.saturating_mul(10);
    // Over the walk's cost, a finishing-time range is still tried, up to as many entries as
    // could all be looked up for that cost: it may hold far fewer than its states' counts say.
    let budget = if by_index <= by_walk {
        usize::MAX
    } else if ranged {
        sources = vec![(in_range, 0)];
        usize::try_from(by_walk / 21).unwrap_or(usize::MAX)
    } else {
        return Ok(None);
    };
    let mut ids = Vec::new();
    for (source, _) in &sources {
        let left = budget.saturating_sub(ids.len());
        if !txn.index_ids(source, f.after, f.before, left, &mut ids)? {
            return Ok(None);
        }
    }
    ids.sort_unstable(); // the sources are disjoint: no id twice
    if f.descending {
        ids.reverse();
    }
    Ok(Some(ids))
}

#[cfg(test)]
mod tests {
    use super::candidates;
    use crate::job::tests::new_job;
    use crate::job::{JobId, NewJob};
    use crate::jobs::ListFilter;
    use crate::listing::{Matcher, TimeRange};
    use crate::state::JobState;
    use crate::storage::{RedbStore, Store};

    /// 1,000 available jobs of queue "a", then ten of queue "b" cancelled at times 1..=10.
    fn store() -> RedbStore {
        let store = RedbStore::open(None, false).unwrap();
        store
            .write(&mut |txn| {
                let first = txn.allocate_ids(1_010)?;
                for id in first..first + 1_010 {
                    let queue = if id - first < 1_000 { "a" } else { "b" };
                    let mut job = NewJob { queue: queue.into(), ..new_job() }.into_job(id, 1);
                    if queue == "b" {
                        job.cancel((id - first - 999) as i64, "no".into())?;
                    }
                    txn.put(None, &job)?;
                }
                Ok(())
            })
            .unwrap();
        store
    }

    fn plan(store: &RedbStore, filter: &ListFilter) -> Option<Vec<JobId>> {
        let matcher = Matcher::new(filter).unwrap();
        let mut out = None;
        store
            .read(&mut |txn| {
                out = candidates(txn, &matcher)?;
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn a_rare_state_is_read_from_its_index_and_a_common_one_walked() {
        let store = store();
        let b = |state| ListFilter {
            state: Some(state),
            queue: Some("b".into()),
            limit: 5,
            descending: true,
            ..Default::default()
        };
        let cancelled: Vec<JobId> = (1_001..=1_010).rev().collect();
        assert_eq!(plan(&store, &b(JobState::Cancelled)), Some(cancelled));
        // The counts say no job of "b" is discarded: nothing to read.
        assert_eq!(plan(&store, &b(JobState::Discarded)), Some(vec![]));
        // A page of "a"'s available jobs: the walk finds it in the first records.
        let available =
            ListFilter { state: Some(JobState::Available), limit: 50, ..Default::default() };
        assert_eq!(plan(&store, &available.clone()), None);
        // Without a limit too: every job in the common state is read in order, the few in
        // the rare state looked up.
        assert_eq!(plan(&store, &ListFilter { limit: 0, ..available }), None);
        let every_cancelled = ListFilter { state: Some(JobState::Cancelled), ..Default::default() };
        assert_eq!(plan(&store, &every_cancelled), Some((1_001..=1_010).collect()));
        // No state named: the walk.
        assert_eq!(
            plan(&store, &ListFilter { queue: Some("b".into()), ..Default::default() }),
            None
        );
        // The cursor bounds the ids read.
        let page = ListFilter { after: Some(1_004), before: Some(1_008), ..b(JobState::Cancelled) };
        assert_eq!(plan(&store, &page), Some(vec![1_007, 1_006, 1_005]));
    }

    #[test]
    fn a_finishing_time_range_reads_that_range_of_the_finished_index() {
        let store = store();
        let f = ListFilter {
            finished: TimeRange { after: Some(3), before: Some(6) },
            ..Default::default()
        };
        assert_eq!(plan(&store, &f), Some(vec![1_003, 1_004, 1_005]));
    }
}
