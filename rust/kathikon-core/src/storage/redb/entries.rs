//! The `entries` table: small records kept beside the jobs under a kind and a name (see
//! [`EntryKind`]), with an index of the ones that expire. Written in the batch's transaction
//! and logged in the same write-ahead log record as its jobs, so a crash keeps both or
//! neither. Added without a format change, as `requests` was: a store without the tables gets
//! them at its first entry.

use redb::{ReadableTable, Table, TableDefinition};

use super::tables::{ReadTables, WriteTables};
use crate::clock::Micros;
use crate::error::Result;
use crate::storage::{Entry, EntryKind};

/// An entry's key: `(kind, name)`.
type Key<'a> = (u8, &'a str);
/// An entry's value: `(expires, value)`.
type Value<'a> = (Option<i64>, &'a [u8]);

/// `(kind, name)` → `(expires, value)`.
pub(super) const ENTRIES: TableDefinition<Key<'_>, Value<'_>> = TableDefinition::new("entries");
/// `(kind, expires, name)` for every entry that expires.
pub(super) const EXPIRY: TableDefinition<(u8, i64, &str), ()> =
    TableDefinition::new("entry_expiry");

pub(super) type EntriesTable<'t> = Table<'t, Key<'static>, Value<'static>>;
pub(super) type ExpiryTable<'t> = Table<'t, (u8, i64, &'static str), ()>;

impl<'t> WriteTables<'t> {
    fn entry_tables(&mut self) -> Result<(&mut EntriesTable<'t>, &mut ExpiryTable<'t>)> {
        if self.entries.is_none() {
            self.entries = Some((self.txn.open_table(ENTRIES)?, self.txn.open_table(EXPIRY)?));
        }
        let (entries, expiry) = self.entries.as_mut().expect("opened above");
        Ok((entries, expiry))
    }

    pub(super) fn entry_get(&mut self, kind: EntryKind, name: &str) -> Result<Option<Entry>> {
        let (entries, _) = self.entry_tables()?;
        Ok(entries.get((kind as u8, name))?.map(|v| {
            let (expires, value) = v.value();
            Entry { name: name.to_string(), value: value.to_vec(), expires }
        }))
    }

    /// Store an entry, and log it with the batch (replay writes it again).
    pub(super) fn entry_put(
        &mut self,
        kind: EntryKind,
        name: &str,
        value: &[u8],
        expires: Option<Micros>,
    ) -> Result<()> {
        let (entries, expiry) = self.entry_tables()?;
        if let Some(old) = entries.insert((kind as u8, name), (expires, value))? {
            if let Some(at) = old.value().0 {
                expiry.remove((kind as u8, at, name))?;
            }
        }
        if let Some(at) = expires {
            expiry.insert((kind as u8, at, name), ())?;
        }
        if let Some(log) = &mut self.log {
            log.put_entry(kind, name, value, expires);
        }
        Ok(())
    }

    /// Delete an entry, and log it with the batch.
    pub(super) fn entry_remove(&mut self, kind: EntryKind, name: &str) -> Result<()> {
        let (entries, expiry) = self.entry_tables()?;
        if let Some(old) = entries.remove((kind as u8, name))? {
            if let Some(at) = old.value().0 {
                expiry.remove((kind as u8, at, name))?;
            }
        }
        if let Some(log) = &mut self.log {
            log.remove_entry(kind, name);
        }
        Ok(())
    }

    pub(super) fn entry_expired(
        &mut self,
        kind: EntryKind,
        until: Micros,
        limit: usize,
    ) -> Result<Vec<String>> {
        let (_, expiry) = self.entry_tables()?;
        let mut out = Vec::new();
        for row in expiry.range((kind as u8, i64::MIN, "")..=(kind as u8, until, "\u{10FFFF}"))? {
            if out.len() >= limit {
                break;
            }
            let key = row?.0;
            let (_, at, name) = key.value();
            if at <= until {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }

    pub(super) fn entry_next_expiry(&mut self, kind: EntryKind) -> Result<Option<Micros>> {
        let (_, expiry) = self.entry_tables()?;
        let first =
            expiry.range((kind as u8, i64::MIN, "")..(kind as u8 + 1, i64::MIN, ""))?.next();
        Ok(match first {
            Some(row) => Some(row?.0.value().1),
            None => None,
        })
    }

    pub(super) fn entry_all(&mut self, kind: EntryKind) -> Result<Vec<Entry>> {
        let (entries, _) = self.entry_tables()?;
        collect(entries, kind)
    }
}

impl ReadTables<'_> {
    pub(super) fn entry_get(&mut self, kind: EntryKind, name: &str) -> Result<Option<Entry>> {
        let table = match self.txn.open_table(ENTRIES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get((kind as u8, name))?.map(|v| {
            let (expires, value) = v.value();
            Entry { name: name.to_string(), value: value.to_vec(), expires }
        }))
    }

    pub(super) fn entry_all(&mut self, kind: EntryKind) -> Result<Vec<Entry>> {
        match self.txn.open_table(ENTRIES) {
            Ok(table) => collect(&table, kind),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}

fn collect(
    table: &impl ReadableTable<Key<'static>, Value<'static>>,
    kind: EntryKind,
) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for row in table.range((kind as u8, "")..(kind as u8 + 1, ""))? {
        let (key, value) = row?;
        let (expires, value) = value.value();
        out.push(Entry { name: key.value().1.to_string(), value: value.to_vec(), expires });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::RedbStore;
    use crate::storage::{Entry, EntryKind, Store, WriteTxn};

    fn write(store: &RedbStore, f: &mut dyn FnMut(&mut dyn WriteTxn) -> crate::Result<()>) {
        store.write(f).unwrap();
    }

    fn read(store: &RedbStore, kind: EntryKind) -> Vec<Entry> {
        let mut out = Vec::new();
        store
            .read(&mut |txn| {
                out = txn.entries(kind)?;
                Ok(())
            })
            .unwrap();
        out
    }

    fn entry(name: &str, value: &[u8], expires: Option<i64>) -> Entry {
        Entry { name: name.into(), value: value.to_vec(), expires }
    }

    /// Entries are kept by kind and name, replaced and removed with their expiry index, and
    /// come back from the log after a crash (the files copied while the store was open).
    #[test]
    fn entries_are_kept_by_kind_expire_by_index_and_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = RedbStore::open(Some(&path), true).unwrap();
        assert_eq!(read(&store, EntryKind::Unique), []);
        write(&store, &mut |txn| {
            txn.put_entry(EntryKind::Unique, "a", b"1", Some(30))?;
            txn.put_entry(EntryKind::Unique, "b", b"2", Some(10))?;
            txn.put_entry(EntryKind::Unique, "c", b"3", None)?;
            txn.put_entry(EntryKind::Cron, "a", b"cron", Some(5))?;
            Ok(())
        });
        write(&store, &mut |txn| {
            // Replacing moves the expiry; removing drops it.
            txn.put_entry(EntryKind::Unique, "a", b"1'", Some(20))?;
            txn.remove_entry(EntryKind::Unique, "b")?;
            txn.remove_entry(EntryKind::Unique, "missing")?;
            assert_eq!(txn.entry(EntryKind::Unique, "a")?, Some(entry("a", b"1'", Some(20))));
            assert_eq!(txn.entry(EntryKind::Queue, "a")?, None);
            assert_eq!(txn.next_expiry(EntryKind::Unique)?, Some(20));
            assert_eq!(txn.next_expiry(EntryKind::Queue)?, None);
            assert_eq!(txn.expired_entries(EntryKind::Unique, 19, 10)?, Vec::<String>::new());
            assert_eq!(txn.expired_entries(EntryKind::Unique, 20, 10)?, ["a"]);
            assert_eq!(txn.expired_entries(EntryKind::Cron, 100, 10)?, ["a"]);
            Ok(())
        });
        // Copied before any read publishes the batches: they are in the log only.
        let crashed = tempfile::tempdir().unwrap();
        for name in ["s.redb", "s.redb-wal"] {
            std::fs::copy(dir.path().join(name), crashed.path().join(name)).unwrap();
        }
        let unique = [entry("a", b"1'", Some(20)), entry("c", b"3", None)];
        assert_eq!(read(&store, EntryKind::Unique), unique);
        assert_eq!(read(&store, EntryKind::Cron), [entry("a", b"cron", Some(5))]);

        let reopened = RedbStore::open(Some(&crashed.path().join("s.redb")), true).unwrap();
        assert_eq!(read(&reopened, EntryKind::Unique), unique);
        assert_eq!(read(&reopened, EntryKind::Cron), [entry("a", b"cron", Some(5))]);
        let mut expired = Vec::new();
        write(&reopened, &mut |txn| {
            expired = txn.expired_entries(EntryKind::Unique, i64::MAX, 10)?;
            Ok(())
        });
        assert_eq!(expired, ["a"], "the expiry index came back with its entries");
    }
}
