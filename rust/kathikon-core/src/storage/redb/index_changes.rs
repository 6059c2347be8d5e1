//! Index entries a transaction adds and removes, written to redb together (when the
//! transaction commits, or before anything in it reads their table) rather than one by one.
//!
//! Claims remove keys from the front of a queue's `available` index, acks from the front of
//! `executing`, promotions from the front of `due` and the pruner from the front of
//! `finished`. Deleted one by one, such keys cost ~13k instructions each in redb (3.5× an
//! insert, measured with callgrind on `examples/drain.rs`): once the front leaf is under half
//! full, every further delete merges it with its neighbour and builds a new page. Deleted
//! together, a run of neighbouring keys costs one pass over its leaves. Added keys mostly
//! ascend too (ids, and finishing times), and go in through cursors (`ordered.rs`).
//!
//! Most entries never reach redb at all: a job claimed and acknowledged before the next
//! commit adds its `executing` entry and removes it again, and the two cancel out here.

use std::hash::Hash;

use foldhash::{HashMap, HashSet, HashSetExt};

use redb::{Key, ReadableTable, Table, Value};

use crate::error::Result;
use crate::job::JobId;

use super::ordered::{insert_ascending, neighbour_runs};

/// An `available` key within its queue: `(priority, scheduled_at, id)`.
type QueueKey = (u8, i64, u64);

/// Changes not yet applied, per index table.
#[derive(Default)]
pub(super) struct IndexChanges {
    /// Per queue (the first part of every `available` key).
    available: HashMap<String, Changes<QueueKey>>,
    pub(super) executing: Changes<JobId>,
    pub(super) due: Changes<(i64, JobId)>,
    pub(super) finished: Changes<(i64, JobId)>,
    /// Per queue (the first part of every `failed` key): `(state as u8, id)`.
    failed: HashMap<String, Changes<(u8, JobId)>>,
}

/// Keys to add to one table (or one queue's part of `available`) and keys to remove from it.
/// Every key to remove is in the table; no key to add is (the two sets never share a key).
pub(super) struct Changes<K> {
    adds: HashSet<K>,
    removes: HashSet<K>,
}

impl<K> Default for Changes<K> {
    fn default() -> Self {
        Self { adds: HashSet::new(), removes: HashSet::new() }
    }
}

/// What a flush has to write of one kind.
enum Batch<K> {
    Nothing,
    /// One key (an ack or claim alone in its batch): a plain insert or delete is cheapest.
    One(K),
    /// Ascending, to be split into runs.
    Many(Vec<K>),
}

fn batch<K: Ord + Hash>(keys: &mut HashSet<K>) -> Batch<K> {
    let mut keys: Vec<K> = keys.drain().collect();
    match keys.len() {
        0 => Batch::Nothing,
        1 => Batch::One(keys.pop().expect("one key")),
        _ => {
            keys.sort_unstable();
            Batch::Many(keys)
        }
    }
}

impl<K: Copy + Ord + Hash> Changes<K> {
    /// The entry `key` is added: if its removal is pending, the entry is in the table
    /// already and stays.
    pub(super) fn add(&mut self, key: K) {
        if !self.removes.remove(&key) {
            self.adds.insert(key);
        }
    }

    /// The entry `key` (in the table, or added by this transaction) is removed.
    pub(super) fn remove(&mut self, key: K) {
        if !self.adds.remove(&key) {
            self.removes.insert(key);
        }
    }

    /// Apply the pending changes to `table`, whose keys are `full(key)`; `part` takes a
    /// table key back.
    fn flush_as<'q, T>(
        &mut self,
        table: &mut Table<'_, T, ()>,
        full: impl Fn(K) -> T::SelfType<'q>,
        part: impl for<'a> Fn(T::SelfType<'a>) -> K,
    ) -> Result<()>
    where
        T: Key + 'static,
    {
        match batch(&mut self.removes) {
            Batch::Nothing => {}
            Batch::One(key) => drop(table.remove(full(key))?),
            Batch::Many(sorted) => {
                let table_runs = neighbour_runs(&sorted, |from| {
                    Ok(table.range(full(from)..)?.map(|e| e.map(|(k, _)| part(k.value()))))
                })?;
                for (first, last) in table_runs {
                    table.retain_in(full(first)..=full(last), |_, ()| false)?;
                }
            }
        }
        match batch(&mut self.adds) {
            Batch::Nothing => {}
            Batch::One(key) => drop(table.insert(full(key), ())?),
            Batch::Many(sorted) => {
                insert_ascending(table, sorted.into_iter().map(|key| (full(key), ())))?;
            }
        }
        Ok(())
    }

    /// Apply the pending changes to `table`.
    pub(super) fn flush<T>(&mut self, table: &mut Table<'_, T, ()>) -> Result<()>
    where
        T: Key + 'static + for<'a> Value<SelfType<'a> = K>,
    {
        self.flush_as(table, |key| key, |key| key)
    }
}

impl IndexChanges {
    /// The `available` entry `key` of `queue`'s is added ([`Changes::add`]).
    pub(super) fn add_available(&mut self, queue: &str, key: QueueKey) {
        self.queue(queue).add(key);
    }

    /// The `available` entry `key` of `queue`'s is removed ([`Changes::remove`]).
    pub(super) fn remove_available(&mut self, queue: &str, key: QueueKey) {
        self.queue(queue).remove(key);
    }

    /// The `failed` entry `key` of `queue`'s is added ([`Changes::add`]).
    pub(super) fn add_failed(&mut self, queue: &str, key: (u8, JobId)) {
        failed_queue(&mut self.failed, queue).add(key);
    }

    /// The `failed` entry `key` of `queue`'s is removed ([`Changes::remove`]).
    pub(super) fn remove_failed(&mut self, queue: &str, key: (u8, JobId)) {
        failed_queue(&mut self.failed, queue).remove(key);
    }

    /// Whether any `failed` entry waits to be written.
    pub(super) fn failed_pending(&self) -> bool {
        self.failed.values().any(|c| !c.adds.is_empty() || !c.removes.is_empty())
    }

    /// Apply the pending changes to `failed`, each key under its queue's name.
    pub(super) fn flush_failed(
        &mut self,
        failed: &mut Table<'_, (&'static str, u8, u64), ()>,
    ) -> Result<()> {
        for (queue, changes) in &mut self.failed {
            let q = queue.as_str();
            changes.flush_as(failed, |(s, id)| (q, s, id), |(_, s, id)| (s, id))?;
        }
        Ok(())
    }

    fn queue(&mut self, queue: &str) -> &mut Changes<QueueKey> {
        // Allocate the queue name only the first time it is seen.
        if !self.available.contains_key(queue) {
            self.available.insert(queue.to_string(), Changes::default());
        }
        self.available.get_mut(queue).expect("inserted")
    }

    /// Apply the pending changes to `available`: [`Changes::flush`], with each key under its
    /// queue's name.
    pub(super) fn flush_available(
        &mut self,
        available: &mut Table<'_, (&'static str, u8, i64, u64), ()>,
    ) -> Result<()> {
        for (queue, changes) in &mut self.available {
            let q = queue.as_str();
            changes.flush_as(available, |(p, t, id)| (q, p, t, id), |(_, p, t, id)| (p, t, id))?;
        }
        Ok(())
    }
}

/// `queue`'s changes in `failed`, made the first time the queue is seen.
fn failed_queue<'m>(
    failed: &'m mut HashMap<String, Changes<(u8, JobId)>>,
    queue: &str,
) -> &'m mut Changes<(u8, JobId)> {
    if !failed.contains_key(queue) {
        failed.insert(queue.to_string(), Changes::default());
    }
    failed.get_mut(queue).expect("inserted")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use redb::backends::InMemoryBackend;
    use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

    use super::{Changes, IndexChanges};

    const TABLE: TableDefinition<u64, ()> = TableDefinition::new("t");
    const AVAILABLE: TableDefinition<(&str, u8, i64, u64), ()> = TableDefinition::new("a");

    /// The keys of a table holding `existing` after `ops` (true: add, false: remove) went
    /// through [`Changes`] and were flushed, against the same ops on a set, one by one.
    fn check(existing: &[u64], ops: &[(bool, u64)]) {
        let db = Database::builder().create_with_backend(InMemoryBackend::new()).unwrap();
        let txn = db.begin_write().unwrap();
        let mut model: BTreeSet<u64> = existing.iter().copied().collect();
        {
            let mut table = txn.open_table(TABLE).unwrap();
            for &k in existing {
                table.insert(k, ()).unwrap();
            }
            let mut changes = Changes::default();
            for &(add, key) in ops {
                // As the store calls them: only present keys are removed, absent ones added.
                if add && !model.contains(&key) {
                    changes.add(key);
                    model.insert(key);
                } else if !add && model.contains(&key) {
                    changes.remove(key);
                    model.remove(&key);
                }
            }
            changes.flush(&mut table).unwrap();
            assert!(changes.adds.is_empty() && changes.removes.is_empty());
        }
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        let table = read.open_table(TABLE).unwrap();
        let stored: BTreeSet<u64> = table.iter().unwrap().map(|e| e.unwrap().0.value()).collect();
        assert_eq!(stored, model, "existing {existing:?}, ops {ops:?}");
    }

    #[test]
    fn an_entry_added_then_removed_never_reaches_the_table_and_the_reverse_stays() {
        let mut changes = Changes::default();
        changes.add(7_u64);
        changes.remove(7);
        changes.remove(3);
        changes.add(3);
        assert!(changes.adds.is_empty() && changes.removes.is_empty());
        check(&[3], &[(true, 7), (false, 7), (false, 3), (true, 3)]);
    }

    #[test]
    fn runs_of_adds_and_removes_are_applied() {
        let existing: Vec<u64> = (0..300).collect();
        let mut ops: Vec<(bool, u64)> = (0..150).map(|k| (false, k)).collect();
        ops.extend((300..600).map(|k| (true, k)));
        ops.extend([(false, 200), (true, 1000), (false, 1000)]);
        check(&existing, &ops);
    }

    #[test]
    fn available_keys_are_flushed_under_their_queue() {
        let db = Database::builder().create_with_backend(InMemoryBackend::new()).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(AVAILABLE).unwrap();
            for id in 1..=3 {
                table.insert(("a", 0, 5, id), ()).unwrap();
                table.insert(("b", 0, 5, id), ()).unwrap();
            }
            let mut changes = IndexChanges::default();
            changes.remove_available("a", (0, 5, 1));
            changes.remove_available("a", (0, 5, 2));
            changes.add_available("b", (1, 0, 9));
            changes.add_available("b", (1, 0, 10));
            changes.remove_available("b", (1, 0, 10));
            changes.flush_available(&mut table).unwrap();
            let keys: Vec<(String, u8, i64, u64)> = table
                .iter()
                .unwrap()
                .map(|e| {
                    let key = e.unwrap().0;
                    let (q, p, t, id) = key.value();
                    (q.to_string(), p, t, id)
                })
                .collect();
            let want =
                [("a", 0, 5, 3), ("b", 0, 5, 1), ("b", 0, 5, 2), ("b", 0, 5, 3), ("b", 1, 0, 9)];
            let want: Vec<(String, u8, i64, u64)> =
                want.iter().map(|&(q, p, t, id)| (q.to_string(), p, t, id)).collect();
            assert_eq!(keys, want);
        }
        txn.commit().unwrap();
    }

    proptest::proptest! {
        #[test]
        fn changes_match_a_set(
            existing in proptest::collection::vec(0_u64..500, 0..300),
            ops in proptest::collection::vec((proptest::bool::ANY, 0_u64..500), 0..400),
        ) {
            check(&existing, &ops);
        }
    }
}
