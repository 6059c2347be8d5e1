//! The `requests` table: which jobs an insert sent with a request id stored (see
//! `crate::request`), written in the insert's own transaction and logged in the same
//! write-ahead log record as its jobs, so a crash keeps both or neither and a resend after it
//! finds the jobs. The table is opened only by a batch that uses it: the inserts of the
//! owner's own process never do.

use redb::{ReadableTable, Table};

use super::schema::REQUESTS;
use super::tables::WriteTables;
use crate::clock::Micros;
use crate::error::Result;
use crate::job::JobId;
use crate::request::RequestId;

/// `(made at, nonce)` → `(first job id, how many)`.
pub(super) type RequestsTable<'t> = Table<'t, (i64, u64), (u64, u64)>;

impl<'t> WriteTables<'t> {
    fn requests(&mut self) -> Result<&mut RequestsTable<'t>> {
        if self.requests.is_none() {
            self.requests = Some(self.txn.open_table(REQUESTS)?);
        }
        Ok(self.requests.as_mut().expect("opened above"))
    }

    /// `(first id, count)` stored by the insert carrying `request`, if remembered.
    pub(super) fn request_lookup(&mut self, request: RequestId) -> Result<Option<(JobId, u64)>> {
        Ok(self.requests()?.get((request.at, request.nonce))?.map(|v| v.value()))
    }

    /// Remember `request`'s jobs, and log it with the batch (replay writes it again).
    pub(super) fn request_store(
        &mut self,
        request: RequestId,
        first: JobId,
        count: u64,
    ) -> Result<()> {
        self.requests()?.insert((request.at, request.nonce), (first, count))?;
        if let Some(log) = &mut self.log {
            log.request(request, first, count);
        }
        Ok(())
    }

    /// Forget up to `limit` requests made before `before`. Not logged: a crash brings them
    /// back until the next prune, which only makes the memory a little longer.
    pub(super) fn request_forget(&mut self, before: Micros, limit: usize) -> Result<u64> {
        let table = self.requests()?;
        let mut old = Vec::new();
        for entry in table.range(..(before, 0))?.take(limit) {
            old.push(entry?.0.value());
        }
        for key in &old {
            table.remove(key)?;
        }
        Ok(old.len() as u64)
    }
}
