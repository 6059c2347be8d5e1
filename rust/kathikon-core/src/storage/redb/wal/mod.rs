//! The write-ahead log in front of redb.
//!
//! A redb commit with `Durability::Immediate` writes about a dozen scattered pages and syncs
//! them (~276 µs measured); one append to a preallocated file and one `fdatasync` costs a
//! fifth of that. Even unsynced, a redb commit costs ~40 µs of CPU, ten times applying a
//! small batch (`examples/txn_cost.rs`). So with the default durability the batches are
//! applied to one redb write transaction that stays open between them, and each batch's
//! *physical effects* — the final record of every job written, every job deleted, the next
//! free id — are appended to the log as one checksummed record and synced before any caller
//! is answered. The open transaction is committed without a sync when a reader needs to see
//! it (a read commits it first), and durably at a checkpoint.
//!
//! Every so often (and at a clean close) a *checkpoint* commits redb with
//! `Durability::Immediate`, which makes every earlier change durable too, and
//! records the last log sequence number it covers (`wal_seq` in `kathikon_meta`); the log is
//! then written again from its start. A clean close deletes the log, so a closed store is one
//! file again.
//!
//! At open, redb comes back at its last durable commit and the records after `wal_seq` are
//! applied again, in order, stopping at the first record that is torn, fails its checksum,
//! belongs to another store or breaks the sequence. Applying a record is idempotent: each job
//! is set to the logged record (its indexes and counts moved from whatever is stored now), so
//! a record applied twice changes nothing.
//!
//! Damage is told from a torn tail and refused, never read as an empty or shorter log: a
//! stop followed further on by a whole record of this store past `wal_seq` (only the last
//! record can be torn); a missing log while `log_open` in `kathikon_meta` says the store was
//! not closed cleanly (it is set once the log exists, before the first append, and cleared by
//! the clean close's checkpoint before the log is deleted).
//!
//! Record layout (little-endian), 32-byte header then payload:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `KWAL` |
//! | 4..8 | CRC-32C of bytes 8.. of header and the whole payload |
//! | 8..16 | payload length |
//! | 16..24 | sequence number (1, 2, … never reused for a store) |
//! | 24..32 | store id (random, in `kathikon_meta`): a log beside another store is ignored |
//!
//! Payload: operations, each a tag byte then its fields: `1` put (id u64, length u32, record
//! bytes as stored in `jobs`), `2` delete (id u64), `3` next id (u64), `4` request (made at
//! i64, nonce u64, first job id u64, count u64: an insert's request id, `requests.rs`).
//!
//! - `record.rs`: the record layout: a batch's effects built into a record, records read back
//!   from a log file, a payload split into its operations;
//! - `file.rs`: the log file open for appending (`O_DIRECT` blocks where the file system
//!   takes them, else the page cache), grown in chunks and reset after a checkpoint;
//! - `faults.rs`: failures injected into its writes and syncs, for tests.

mod faults;
mod file;
mod record;

use std::path::{Path, PathBuf};

pub use faults::{LogFaults, LogTrigger};
pub(crate) use file::{open_owner_only, Wal};
pub(crate) use record::{first_record, ops, records_after, Damage, LogBuf, Op, Payloads};

/// The log file beside the store at `store`: its name with `-wal` appended.
pub(crate) fn path_for(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_os_string();
    name.push("-wal");
    PathBuf::from(name)
}
