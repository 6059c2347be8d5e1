//! Index entries a batch removes, deleted from redb together at the end of the batch (or
//! before anything in the transaction reads their table).
//!
//! Claims remove keys from the front of a queue's `available` index, acks from the front of
//! `executing`, promotions from the front of `due` and the pruner from the front of
//! `finished`. Deleted one by one, such keys cost ~13k instructions each in redb (3.5× an
//! insert, measured with callgrind on `examples/drain.rs`): once the front leaf is under half
//! full, every further delete merges it with its neighbour and builds a new page. Deleted
//! together, a run of neighbouring keys costs one pass over its leaves.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use redb::{ReadableTable, Table};

use crate::error::Result;
use crate::job::JobId;

/// An `available` key within its queue: `(priority, scheduled_at, id)`.
type QueueKey = (u8, i64, u64);

/// Removals not yet applied. Every entry named here is still in its table.
#[derive(Default)]
pub(super) struct Removals {
    /// Per queue (the first part of every `available` key).
    available: HashMap<String, Pending<QueueKey>>,
    pub(super) executing: Pending<JobId>,
    pub(super) due: Pending<(i64, JobId)>,
    pub(super) finished: Pending<(i64, JobId)>,
}

/// Keys to remove from one table (or one queue's part of `available`).
pub(super) struct Pending<K> {
    keys: HashSet<K>,
}

impl<K> Default for Pending<K> {
    fn default() -> Self {
        Self { keys: HashSet::new() }
    }
}

/// What a flush has to delete.
enum Batch<K> {
    Nothing,
    /// One key (an ack or claim alone in its batch): a plain delete is cheapest.
    One(K),
    /// Ascending, to be split into runs.
    Many(Vec<K>),
}

impl<K: Copy + Ord + Hash> Pending<K> {
    pub(super) fn remove(&mut self, key: K) {
        self.keys.insert(key);
    }

    /// The entry is indexed again: if its removal is pending, drop the removal (the entry is
    /// still there) and return true.
    pub(super) fn keep(&mut self, key: K) -> bool {
        self.keys.remove(&key)
    }

    fn take(&mut self) -> Batch<K> {
        let mut keys: Vec<K> = self.keys.drain().collect();
        match keys[..] {
            [] => Batch::Nothing,
            [only] => Batch::One(only),
            _ => {
                keys.sort_unstable();
                Batch::Many(keys)
            }
        }
    }

    /// Apply the pending removals to `table`.
    pub(super) fn flush<T>(&mut self, table: &mut Table<'_, T, ()>) -> Result<()>
    where
        T: redb::Key + 'static + for<'a> redb::Value<SelfType<'a> = K>,
    {
        match self.take() {
            Batch::Nothing => {}
            Batch::One(key) => drop(table.remove(key)?),
            Batch::Many(sorted) => {
                let table_runs = runs(&sorted, |from| {
                    Ok(table.range(from..)?.map(|e| e.map(|(k, _)| k.value())))
                })?;
                for (first, last) in table_runs {
                    table.retain_in(first..=last, |_, ()| false)?;
                }
            }
        }
        Ok(())
    }
}

impl Removals {
    pub(super) fn available(&mut self, queue: &str, key: QueueKey) {
        // Allocate the queue name only the first time it is seen.
        if let Some(keys) = self.available.get_mut(queue) {
            keys.remove(key);
        } else {
            let mut keys = Pending::default();
            keys.remove(key);
            self.available.insert(queue.to_string(), keys);
        }
    }

    /// See [`Pending::keep`].
    pub(super) fn keep_available(&mut self, queue: &str, key: QueueKey) -> bool {
        self.available.get_mut(queue).is_some_and(|keys| keys.keep(key))
    }

    /// Apply the pending removals from `available`: [`Pending::flush`], with each key under
    /// its queue's name.
    pub(super) fn flush_available(
        &mut self,
        available: &mut Table<'_, (&'static str, u8, i64, u64), ()>,
    ) -> Result<()> {
        for (queue, keys) in &mut self.available {
            let q = queue.as_str();
            let full = |(p, t, id): QueueKey| (q, p, t, id);
            match keys.take() {
                Batch::Nothing => {}
                Batch::One(key) => drop(available.remove(full(key))?),
                Batch::Many(sorted) => {
                    let table_runs = runs(&sorted, |from| {
                        Ok(available.range(full(from)..)?.map(|e| {
                            e.map(|(k, _)| {
                                let (_, p, t, id) = k.value();
                                (p, t, id)
                            })
                        }))
                    })?;
                    for (first, last) in table_runs {
                        available.retain_in(full(first)..=full(last), |_, ()| false)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Split `sorted` (keys to remove, ascending) into runs of keys that are neighbours in the
/// table, so that deleting every entry from a run's first key to its last deletes exactly
/// them. `from(k)` iterates the table's keys from `k` on. Keys no longer in the table are
/// skipped.
fn runs<K, I>(sorted: &[K], mut from: impl FnMut(K) -> Result<I>) -> Result<Vec<(K, K)>>
where
    K: Copy + PartialEq,
    I: Iterator<Item = std::result::Result<K, redb::StorageError>>,
{
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut next = i;
        for entry in from(sorted[i])? {
            if next < sorted.len() && entry? == sorted[next] {
                next += 1;
            } else {
                break;
            }
        }
        if next == i {
            i += 1; // not in the table: nothing to delete
        } else {
            out.push((sorted[i], sorted[next - 1]));
            i = next;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::runs;

    /// `runs` over a table holding `table` (ascending) for the pending keys `pending`.
    fn runs_in(table: &[u64], pending: &[u64]) -> Vec<(u64, u64)> {
        runs(pending, |from| Ok(table.iter().copied().filter(move |&k| k >= from).map(Ok))).unwrap()
    }

    #[test]
    fn neighbours_form_one_run_and_kept_entries_split_runs() {
        assert_eq!(runs_in(&[1, 2, 3, 5, 7, 8, 9], &[1, 2, 3, 7, 8]), vec![(1, 3), (7, 8)]);
        assert_eq!(runs_in(&[1, 2, 3], &[1, 2, 3]), vec![(1, 3)]);
        assert_eq!(runs_in(&[1, 2, 3], &[2]), vec![(2, 2)]);
    }

    #[test]
    fn keys_no_longer_in_the_table_are_skipped() {
        assert_eq!(runs_in(&[1, 2, 5, 6], &[1, 2, 4, 5]), vec![(1, 2), (5, 5)]);
        assert_eq!(runs_in(&[], &[1, 2]), vec![]);
        assert_eq!(runs_in(&[3], &[1, 2]), vec![]);
    }
}
