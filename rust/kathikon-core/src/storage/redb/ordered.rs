//! Writing many keys of one redb table at once, in ascending order.
//!
//! redb walks its tree from the root for every `insert` and `remove`. A run of keys that are
//! neighbours goes much faster as one operation: a cursor (`Table::lower_bound_mut` +
//! `CursorMut::insert_before`) packs keys inserted into one gap straight into leaves, and
//! `retain_in` over a range deletes its entries in one pass over their leaves. New jobs are
//! filed (`unfiled.rs`), index entries moved (`index_changes.rs`) and records rewritten
//! (`rewrites.rs`) through these.

use std::ops::Bound;

use redb::{CursorError, Key, ReadableTable, Table, Value};

use crate::error::{Error, Result};

/// Insert `entries`, whose keys ascend, into `table`, where none of them is yet. Each run of
/// keys that falls into one gap between the table's keys goes in through one cursor; a key the
/// cursor refuses (it is not below the entry after the gap) starts a new run at its own place.
/// A key the table holds already is overwritten, as `insert` would, so that a broken promise
/// of order or novelty costs speed, not a job.
pub(super) fn insert_ascending<'e, K, V>(
    table: &mut Table<'_, K, V>,
    entries: impl Iterator<Item = (K::SelfType<'e>, V::SelfType<'e>)>,
) -> Result<()>
where
    K: Key + 'static,
    V: Value + 'static,
{
    let mut entries = entries.peekable();
    while let Some((key, _)) = entries.peek() {
        let mut cursor = table.lower_bound_mut(Bound::Included(key))?;
        let mut placed = 0_usize;
        while let Some((key, value)) = entries.peek() {
            match cursor.insert_before(key, value) {
                Ok(()) => {
                    placed += 1;
                    entries.next();
                }
                Err(CursorError::UnorderedKey) => break,
                Err(CursorError::Storage(e)) => return Err(e.into()),
                Err(e) => return Err(Error::Storage(e.to_string())),
            }
        }
        cursor.close()?;
        if placed == 0 {
            // Refused right after the seek: the key is in the table already.
            let (key, value) = entries.next().expect("peeked");
            table.insert(key, value)?;
        }
    }
    Ok(())
}

/// Store `entries` (keys strictly ascending), whether or not the table holds their keys
/// already. Each run of two or more keys that are neighbours in the table (no key of the table
/// between them is left out) is deleted with one `retain_in` and written back through one
/// cursor; a key alone in its run, or not in the table, is a plain `insert`.
///
/// Rewriting a run this way costs less per record than an `insert` of each (measured:
/// `benches/RESULTS.md`).
pub(super) fn rewrite_ascending<'e, T, K, V>(
    table: &mut Table<'_, T, V>,
    entries: &[(K, V::SelfType<'e>)],
) -> Result<()>
where
    T: Key + 'static + for<'a> Value<SelfType<'a> = K>,
    K: Copy + PartialEq,
    V: Value + 'static,
    V::SelfType<'e>: Copy,
{
    let keys: Vec<K> = entries.iter().map(|(k, _)| *k).collect();
    let table_runs =
        neighbour_runs(&keys, |from| Ok(table.range(from..)?.map(|e| e.map(|(k, _)| k.value()))))?;
    let mut i = 0;
    for (first, last) in table_runs {
        while keys[i] != first {
            table.insert(entries[i].0, entries[i].1)?; // not in the table
            i += 1;
        }
        let mut end = i + 1;
        while keys[end - 1] != last {
            end += 1;
        }
        if end - i == 1 {
            table.insert(entries[i].0, entries[i].1)?;
        } else {
            table.retain_in((Bound::Included(first), Bound::Included(last)), |_, _| false)?;
            insert_ascending(table, entries[i..end].iter().copied())?;
        }
        i = end;
    }
    for &(key, value) in &entries[i..] {
        table.insert(key, value)?;
    }
    Ok(())
}

/// Split `sorted` (keys, ascending) into runs of keys that are neighbours in the
/// table, so that deleting every entry from a run's first key to its last deletes exactly
/// them. `from(k)` iterates the table's keys from `k` on. Keys no longer in the table are
/// skipped.
pub(super) fn neighbour_runs<K, I>(
    sorted: &[K],
    mut from: impl FnMut(K) -> Result<I>,
) -> Result<Vec<(K, K)>>
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
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use redb::backends::InMemoryBackend;
    use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

    use super::{insert_ascending, neighbour_runs, rewrite_ascending};

    const TABLE: TableDefinition<u64, u64> = TableDefinition::new("t");

    /// The table holding `existing` (key → 0) after `write` stored `new` (key → key + 1000)
    /// in it, against a `BTreeMap` given the same with plain inserts.
    fn check_with(
        existing: &[u64],
        new: &[u64],
        write: impl FnOnce(&mut redb::Table<'_, u64, u64>, &[u64]),
    ) {
        let db = Database::builder().create_with_backend(InMemoryBackend::new()).unwrap();
        let txn = db.begin_write().unwrap();
        let mut model = BTreeMap::new();
        {
            let mut table = txn.open_table(TABLE).unwrap();
            for &k in existing {
                table.insert(k, 0).unwrap();
                model.insert(k, 0);
            }
            write(&mut table, new);
        }
        txn.commit().unwrap();
        for &k in new {
            model.insert(k, k + 1000);
        }
        let read = db.begin_read().unwrap();
        let table = read.open_table(TABLE).unwrap();
        let stored: BTreeMap<u64, u64> = table
            .iter()
            .unwrap()
            .map(|e| e.map(|(k, v)| (k.value(), v.value())).unwrap())
            .collect();
        assert_eq!(stored, model, "existing {existing:?}, new {new:?}");
    }

    /// [`check_with`] for `insert_ascending`, given `new` as it is.
    fn check(existing: &[u64], new: &[u64]) {
        check_with(existing, new, |table, new| {
            insert_ascending(table, new.iter().map(|&k| (k, k + 1000))).unwrap();
        });
    }

    #[test]
    fn appends_fill_an_empty_table_and_extend_a_full_one() {
        check(&[], &(1..=500).collect::<Vec<_>>());
        check(&(1..=500).collect::<Vec<_>>(), &(501..=1000).collect::<Vec<_>>());
    }

    #[test]
    fn keys_between_existing_ones_go_in_their_gaps() {
        let existing: Vec<u64> = (0..400).map(|k| k * 10).collect();
        check(&existing, &(0..400).map(|k| k * 10 + 5).collect::<Vec<_>>());
        check(&[100], &[1, 2, 3, 150, 151]);
    }

    #[test]
    fn a_key_already_stored_is_overwritten_not_looped_on() {
        check(&[1, 2, 3], &[2]);
        check(&[1, 2, 3], &[0, 1, 2, 3, 4]);
    }

    #[test]
    fn keys_out_of_order_or_repeated_still_all_go_in() {
        check(&[5], &[9, 3, 7, 7, 1]);
    }

    /// [`check_with`] for `rewrite_ascending`, given `new` sorted and deduplicated.
    fn check_rewrite(existing: &[u64], new: &[u64]) {
        let mut new = new.to_vec();
        new.sort_unstable();
        new.dedup();
        check_with(existing, &new, |table, new| {
            let entries: Vec<(u64, u64)> = new.iter().map(|&k| (k, k + 1000)).collect();
            rewrite_ascending(table, &entries).unwrap();
        });
    }

    #[test]
    fn a_rewrite_replaces_runs_and_single_keys_and_adds_absent_ones() {
        let existing: Vec<u64> = (1..=600).collect();
        // A long run, a run of two, a single key, and keys the table does not hold.
        check_rewrite(&existing, &(100..=400).chain([450, 451, 500, 601, 700]).collect::<Vec<_>>());
        // Every key, and none of them.
        check_rewrite(&existing, &existing);
        check_rewrite(&[], &[3, 4, 5]);
        // Neighbours in the table even though their keys are not consecutive numbers.
        check_rewrite(&[10, 20, 30, 40], &[0, 10, 20, 30, 35]);
    }

    proptest! {
        #[test]
        fn rewrites_match_plain_inserts(
            existing in proptest::collection::vec(0_u64..2000, 0..600),
            new in proptest::collection::vec(0_u64..2000, 0..600),
        ) {
            check_rewrite(&existing, &new);
        }

        #[test]
        fn matches_plain_inserts(
            existing in proptest::collection::vec(0_u64..3000, 0..600),
            mut new in proptest::collection::vec(0_u64..3000, 0..600),
            sorted in any::<bool>(),
        ) {
            // Mostly as the filing calls it (ascending), sometimes in any order.
            if sorted {
                new.sort_unstable();
                new.dedup();
            }
            check(&existing, &new);
        }
    }

    /// `runs` over a table holding `table` (ascending) for the pending keys `pending`.
    fn runs_in(table: &[u64], pending: &[u64]) -> Vec<(u64, u64)> {
        neighbour_runs(pending, |from| {
            Ok(table.iter().copied().filter(move |&k| k >= from).map(Ok))
        })
        .unwrap()
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
