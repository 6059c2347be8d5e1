//! Records a transaction rewrote, kept here and written to `jobs` together when it commits
//! (or before anything reads `jobs` as a whole), instead of one `insert` each.
//!
//! A claimed job's record is rewritten when it is claimed and again when it is acknowledged,
//! usually within milliseconds and before the log's transaction commits: kept here, only the
//! last version reaches redb. Claims take ids in order, so what is left goes in as runs of
//! neighbouring keys (`ordered.rs`). `insert`ing records and their index entries one by one
//! was most of the writer's time in a drain.
//!
//! Only a store with a write-ahead log keeps records here across batches: each batch's
//! records are in the log, so memory is bounded by the log's size before a checkpoint.

use std::collections::BTreeMap;

use redb::Table;

use crate::error::Result;
use crate::job::JobId;

use super::ordered::rewrite_ascending;

/// Records rewritten and not yet in `jobs`, by id: each is the job's newest version.
#[derive(Default)]
pub(super) struct Rewrites {
    records: BTreeMap<JobId, Vec<u8>>,
}

impl Rewrites {
    /// `record` is job `id`'s newest version.
    pub(super) fn put(&mut self, id: JobId, record: Vec<u8>) {
        self.records.insert(id, record);
    }

    /// Job `id`'s newest record, when it is here.
    pub(super) fn get(&self, id: JobId) -> Option<&[u8]> {
        self.records.get(&id).map(Vec::as_slice)
    }

    /// Job `id` is deleted: its record must not be written.
    pub(super) fn forget(&mut self, id: JobId) {
        self.records.remove(&id);
    }

    /// Write every record to `jobs`.
    pub(super) fn flush(&mut self, jobs: &mut Table<'_, u64, &'static [u8]>) -> Result<()> {
        if self.records.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.records);
        let entries: Vec<(u64, &[u8])> =
            records.iter().map(|(id, record)| (*id, record.as_slice())).collect();
        rewrite_ascending(jobs, &entries)
    }
}
