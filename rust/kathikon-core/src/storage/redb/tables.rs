//! The table layer: [`WriteTxn`] and [`ReadTxn`] on redb's tables. A write transaction's
//! tables keep the job records, the indexes derived from each record's state, the counts per
//! queue and state, and the quarantine of records that no longer decode; what a batch writes
//! is kept back and written together at the end of the transaction.

use std::ops::Bound::{Excluded, Included};
use std::path::Path;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use redb::{ReadableTable, Table};

use super::index_changes::IndexChanges;
use super::rewrites::Rewrites;
use super::schema::{
    decode, encode, in_failed, AVAILABLE, COUNTS, DUE, EXECUTING, FAILED, FINISHED, JOBS, META,
    META_NEXT_ID, QUARANTINE,
};
use super::unfiled::Unfiled;
use super::wal::LogBuf;
use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::job::{Job, JobId, Placement};
use crate::request::RequestId;
use crate::state::JobState;
use crate::storage::{
    AvailableEntry, BatchMove, Entry, EntryKind, IndexSource, Quarantined, ReadTxn, WriteTxn,
};

type AvailKey<'a> = (&'a str, u8, i64, u64);
type FailedTable<'t> = Table<'t, (&'static str, u8, u64), ()>;

/// The tables of one write transaction, opened once for the whole batch.
pub(super) struct WriteTables<'t> {
    jobs: Table<'t, u64, &'static [u8]>,
    available: Table<'t, AvailKey<'static>, ()>,
    due: Table<'t, (i64, u64), ()>,
    executing: Table<'t, u64, ()>,
    finished: Table<'t, (i64, u64), ()>,
    pub(super) meta: Table<'t, &'static str, u64>,
    pub(super) counts: Table<'t, (&'static str, u8), u64>,
    quarantine: Table<'t, u64, (i64, &'static str, &'static [u8])>,
    /// The `failed` index, once a batch changed it (most batches have no failure).
    failed: Option<FailedTable<'t>>,
    /// The transaction, to open the tables only some batches use when one first does.
    pub(super) txn: &'t redb::WriteTransaction,
    /// Inserts sent with a request id (`requests.rs`), once a batch used the table.
    pub(super) requests: Option<super::requests::RequestsTable<'t>>,
    /// Entries and their expiry index (`entries.rs`), once a batch used them.
    pub(super) entries: Option<(super::entries::EntriesTable<'t>, super::entries::ExpiryTable<'t>)>,
    /// Changes to `counts` made by this transaction per queue (indexed by state), written
    /// once at its end (the log's long transaction: just before it is committed).
    pub(super) deltas: HashMap<String, [i64; 7]>,
    /// Index entries added and removed, written together (`index_changes.rs`).
    changes: IndexChanges,
    /// Records rewritten, written together (`rewrites.rs`).
    rewrites: Rewrites,
    /// The earliest due time, while known: kept until the due index changes, so that the
    /// writer's look for due jobs, made every batch, costs nothing when none has changed.
    first_due: FirstDue,
    /// The next free id as this transaction leaves it, when it has allocated any: written to
    /// `meta` with the counts.
    pub(super) next_id: Option<u64>,
    /// Records this transaction moved to the quarantine table, with the reason.
    quarantined: Vec<(JobId, String)>,
    /// Jobs this transaction moved out of the executing state (or deleted while executing).
    left_executing: Vec<JobId>,
    /// Jobs moved into a terminal state or deleted unfinished (see `WriteTxn::take_ended`).
    ended: Vec<JobId>,
    /// Batch members' changes of state (see `WriteTxn::take_batch_moves`).
    batch_moves: Vec<BatchMove>,
    /// Whether this transaction moved any record aside (`quarantined` is emptied by the
    /// writer before the commit; this is not).
    pub(super) moved_aside: bool,
    path: Arc<Path>,
    /// The batch's effects, for the write-ahead log (when the store has one).
    pub(super) log: Option<LogBuf>,
    /// New jobs logged but not yet in `jobs` and `available` (only with a log).
    pub(super) unfiled: Unfiled,
}

/// The `failed` table of `txn`, opened into `slot` the first time a transaction needs it.
fn failed_table<'s, 't>(
    slot: &'s mut Option<FailedTable<'t>>,
    txn: &'t redb::WriteTransaction,
) -> Result<&'s mut FailedTable<'t>> {
    if slot.is_none() {
        *slot = Some(txn.open_table(FAILED)?);
    }
    Ok(slot.as_mut().expect("opened"))
}

/// The earliest due time of a transaction's due index, once looked up.
#[derive(Clone, Copy)]
enum FirstDue {
    Unknown,
    /// `None`: no job is due at all.
    Known(Option<Micros>),
}

impl WriteTables<'_> {
    /// Open every table of `txn` for a batch, logging its effects into `log` when given.
    pub(super) fn open<'t>(
        txn: &'t redb::WriteTransaction,
        path: &Arc<Path>,
        log: Option<LogBuf>,
    ) -> Result<WriteTables<'t>> {
        Ok(WriteTables {
            jobs: txn.open_table(JOBS)?,
            available: txn.open_table(AVAILABLE)?,
            due: txn.open_table(DUE)?,
            executing: txn.open_table(EXECUTING)?,
            finished: txn.open_table(FINISHED)?,
            meta: txn.open_table(META)?,
            counts: txn.open_table(COUNTS)?,
            quarantine: txn.open_table(QUARANTINE)?,
            failed: None,
            txn,
            requests: None,
            entries: None,
            deltas: HashMap::new(),
            changes: IndexChanges::default(),
            rewrites: Rewrites::default(),
            first_due: FirstDue::Unknown,
            next_id: None,
            quarantined: Vec::new(),
            left_executing: Vec::new(),
            ended: Vec::new(),
            batch_moves: Vec::new(),
            moved_aside: false,
            path: path.clone(),
            log,
            unfiled: Unfiled::default(),
        })
    }
}

impl WriteTables<'_> {
    fn count(&mut self, queue: &str, state: JobState, by: i64) {
        // Allocate the queue name only the first time this transaction sees it.
        if let Some(row) = self.deltas.get_mut(queue) {
            row[state as usize] += by;
        } else {
            let mut row = [0; 7];
            row[state as usize] = by;
            self.deltas.insert(queue.to_string(), row);
        }
    }

    /// Write the records and index entries kept back (not the counts and next id).
    fn flush_tables(&mut self) -> Result<()> {
        self.file(usize::MAX)?;
        self.rewrites.flush(&mut self.jobs)?;
        self.changes.flush_available(&mut self.available)?;
        self.changes.executing.flush(&mut self.executing)?;
        self.changes.due.flush(&mut self.due)?;
        self.changes.finished.flush(&mut self.finished)?;
        if self.changes.failed_pending() {
            self.changes.flush_failed(failed_table(&mut self.failed, self.txn)?)?;
        }
        Ok(())
    }

    /// The next free id: as this transaction left it, or as stored.
    pub(super) fn next_id(&self) -> Result<u64> {
        match self.next_id {
            Some(next) => Ok(next),
            None => Ok(self.meta.get(META_NEXT_ID)?.map_or(1, |v| v.value())),
        }
    }

    /// File up to `limit` unfiled jobs; returns whether any are left.
    pub(super) fn file(&mut self, limit: usize) -> Result<bool> {
        self.unfiled.file(&mut self.jobs, &mut self.available, limit)
    }

    /// Write what waits for the end of the transaction: the unfiled jobs, the records and
    /// index entries kept back, the counts and the next free id.
    pub(super) fn flush_deferred(&mut self) -> Result<()> {
        self.flush_tables()?;
        if let Some(next) = self.next_id.take() {
            self.meta.insert(META_NEXT_ID, next)?;
        }
        let deltas: Vec<(String, [i64; 7])> = self.deltas.drain().collect();
        for (queue, row) in &deltas {
            for (state, &delta) in row.iter().enumerate() {
                if delta != 0 {
                    self.apply_count(queue, state as u8, delta)?;
                }
            }
        }
        Ok(())
    }

    fn apply_count(&mut self, queue: &str, state: u8, delta: i64) -> Result<()> {
        {
            let key = (queue, state);
            let current = self.counts.get(key)?.map_or(0, |v| v.value());
            let next = (current as i64 + delta).max(0) as u64;
            if next == 0 {
                self.counts.remove(key)?;
            } else {
                self.counts.insert(key, next)?;
            }
        }
        Ok(())
    }

    /// Move the undecodable record `bytes` of job `id` aside: keep it in the quarantine table
    /// with `reason`, drop it and every index entry naming its id, and recount `counts` from
    /// the records (its queue and state are unknown, so its count cannot simply be taken
    /// back). Rare and slow on big stores (every record is read once); other records found
    /// undecodable meanwhile are quarantined too.
    fn quarantine_record(&mut self, id: JobId, bytes: &[u8], reason: &str) -> Result<()> {
        self.flush_tables()?;
        let mut pending = vec![(id, bytes.to_vec(), reason.to_string())];
        while !pending.is_empty() {
            for (id, bytes, reason) in pending.drain(..) {
                let at = now_micros();
                self.quarantine.insert(id, (at, reason.as_str(), bytes.as_slice()))?;
                self.jobs.remove(id)?;
                self.executing.remove(id)?;
                for key in keys_naming(&self.due, id)? {
                    self.due.remove(key)?;
                    self.first_due = FirstDue::Unknown;
                }
                for key in keys_naming(&self.finished, id)? {
                    self.finished.remove(key)?;
                }
                let mut available = Vec::new();
                for entry in self.available.iter()? {
                    let key = entry?.0;
                    let (queue, priority, at, job) = key.value();
                    if job == id {
                        available.push((queue.to_string(), priority, at, job));
                    }
                }
                for (queue, priority, at, job) in available {
                    self.available.remove((queue.as_str(), priority, at, job))?;
                }
                let failed = failed_table(&mut self.failed, self.txn)?;
                let mut naming = Vec::new();
                for entry in failed.iter()? {
                    let key = entry?.0;
                    let (queue, state, job) = key.value();
                    if job == id {
                        naming.push((queue.to_string(), state));
                    }
                }
                for (queue, state) in naming {
                    failed.remove((queue.as_str(), state, id))?;
                }
                self.quarantined.push((id, reason));
                self.moved_aside = true;
            }
            // Recount: the records as this transaction leaves them are the truth, so pending
            // deltas are already part of the tally.
            self.deltas.clear();
            let mut tally: HashMap<(String, u8), u64> = HashMap::new();
            for entry in self.jobs.iter()? {
                let (k, v) = entry?;
                match decode(k.value(), v.value()) {
                    Ok(job) => *tally.entry((job.queue, job.state as u8)).or_default() += 1,
                    Err(e) => pending.push((k.value(), v.value().to_vec(), reason_of(&e))),
                }
            }
            self.counts.retain(|_, _| false)?;
            for ((queue, state), n) in tally {
                self.counts.insert((queue.as_str(), state), n)?;
            }
        }
        Ok(())
    }

    /// Drop the index entry of a job that was at `at` (written with the rest, later).
    fn unindex(&mut self, queue: &str, id: JobId, at: Placement) {
        match at.state {
            JobState::Available => {
                self.changes.remove_available(queue, (at.priority, at.scheduled_at, id));
            }
            JobState::Scheduled | JobState::Retryable => {
                self.changes.due.remove((at.scheduled_at, id));
                self.first_due = FirstDue::Unknown;
            }
            JobState::Executing => self.changes.executing.remove(id),
            JobState::Completed | JobState::Cancelled | JobState::Discarded => {
                self.changes.finished.remove((at.finished_at.unwrap_or(0), id));
            }
        }
        if in_failed(at.state) {
            self.changes.remove_failed(queue, (at.state as u8, id));
        }
    }

    /// Add the index entry of `job`'s state (written with the rest, later).
    fn index(&mut self, job: &Job) {
        match job.state {
            JobState::Available => {
                let key = (job.priority, job.scheduled_at, job.id);
                self.changes.add_available(&job.queue, key);
            }
            JobState::Scheduled | JobState::Retryable => {
                self.changes.due.add((job.scheduled_at, job.id));
                self.first_due = FirstDue::Unknown;
            }
            JobState::Executing => self.changes.executing.add(job.id),
            JobState::Completed | JobState::Cancelled | JobState::Discarded => {
                self.changes.finished.add((job.finished_at().unwrap_or(0), job.id));
            }
        }
        if in_failed(job.state) {
            self.changes.add_failed(&job.queue, (job.state as u8, job.id));
        }
    }
}

impl WriteTxn for WriteTables<'_> {
    fn get(&mut self, id: JobId) -> Result<Option<Job>> {
        if let Some(record) = self.rewrites.get(id) {
            return decode(id, record).map(Some); // encoded by this process: it decodes
        }
        if self.unfiled.may_hold(id) {
            self.file(usize::MAX)?;
        }
        let (error, bytes) = match self.jobs.get(id)? {
            None => return Ok(None),
            Some(v) => match decode(id, v.value()) {
                Ok(job) => return Ok(Some(job)),
                Err(e) => (e, v.value().to_vec()),
            },
        };
        self.quarantine_record(id, &bytes, &reason_of(&error))?;
        Ok(None)
    }

    fn missing(&mut self, id: JobId) -> Result<Error> {
        Ok(match self.quarantine.get(id)? {
            Some(v) => quarantined_error(&self.path, id, &v.value()),
            None => Error::JobNotFound(id),
        })
    }

    fn take_quarantined(&mut self) -> Vec<(JobId, String)> {
        std::mem::take(&mut self.quarantined)
    }

    fn take_left_executing(&mut self) -> Vec<JobId> {
        std::mem::take(&mut self.left_executing)
    }

    fn take_ended(&mut self) -> Vec<JobId> {
        std::mem::take(&mut self.ended)
    }

    fn take_batch_moves(&mut self) -> Vec<BatchMove> {
        std::mem::take(&mut self.batch_moves)
    }

    fn allocate_ids(&mut self, n: u64) -> Result<JobId> {
        let first = self.next_id()?;
        self.next_id = Some(first + n);
        if let Some(log) = &mut self.log {
            log.next_id(first + n);
        }
        Ok(first)
    }

    fn put(&mut self, old: Option<Placement>, new: &Job) -> Result<()> {
        if let Some(batch) = &new.batch {
            let from = old.map(|o| o.state);
            if from != Some(new.state) {
                let batch = batch.clone();
                self.batch_moves.push(BatchMove { batch, from, to: Some(new.state) });
            }
        }
        if let Some(old) = old {
            if old.state == JobState::Executing && new.state != JobState::Executing {
                self.left_executing.push(new.id);
            }
            if new.state.is_terminal() && !old.state.is_terminal() {
                self.ended.push(new.id);
            }
            self.unindex(&new.queue, new.id, old);
            self.count(&new.queue, old.state, -1);
        }
        self.count(&new.queue, new.state, 1);
        let record = encode(new);
        if let Some(log) = &mut self.log {
            log.put(new.id, &record);
        }
        self.rewrites.put(new.id, record);
        self.index(new);
        Ok(())
    }

    fn put_new(&mut self, new: &Job) -> Result<()> {
        let available = match new.state {
            JobState::Available => true,
            JobState::Scheduled => false,
            _ => return self.put(None, new),
        };
        if self.log.is_none() {
            return self.put(None, new);
        }
        if let Some(batch) = &new.batch {
            let batch = batch.clone();
            self.batch_moves.push(BatchMove { batch, from: None, to: Some(new.state) });
        }
        self.count(&new.queue, new.state, 1);
        let record = self.unfiled.push(new, available);
        if let Some(log) = &mut self.log {
            log.put(new.id, record);
        }
        if !available {
            self.index(new); // its `due` entry, read after every batch
        }
        Ok(())
    }

    fn remove(&mut self, job: &Job) -> Result<()> {
        if let Some(batch) = &job.batch {
            let batch = batch.clone();
            self.batch_moves.push(BatchMove { batch, from: Some(job.state), to: None });
        }
        if job.state == JobState::Executing {
            self.left_executing.push(job.id);
        }
        if !job.state.is_terminal() {
            self.ended.push(job.id);
        }
        self.unindex(&job.queue, job.id, job.placement());
        self.count(&job.queue, job.state, -1);
        self.rewrites.forget(job.id);
        self.jobs.remove(job.id)?;
        if let Some(log) = &mut self.log {
            log.delete(job.id);
        }
        Ok(())
    }

    fn due(&mut self, until: Micros, limit: usize) -> Result<Vec<JobId>> {
        if let FirstDue::Known(first) = self.first_due {
            if first.is_none_or(|at| at > until) {
                return Ok(Vec::new());
            }
        }
        self.changes.due.flush(&mut self.due)?;
        let mut out = Vec::new();
        for entry in self.due.range(..=(until, u64::MAX))?.take(limit) {
            out.push(entry?.0.value().1);
        }
        Ok(out)
    }

    fn next_due(&mut self) -> Result<Option<Micros>> {
        if let FirstDue::Known(first) = self.first_due {
            return Ok(first);
        }
        self.changes.due.flush(&mut self.due)?;
        let first = self.due.first()?.map(|(k, _)| k.value().0);
        self.first_due = FirstDue::Known(first);
        Ok(first)
    }

    fn finished(
        &mut self,
        after: Option<(Micros, JobId)>,
        until: Micros,
        limit: usize,
    ) -> Result<Vec<(Micros, JobId)>> {
        self.changes.finished.flush(&mut self.finished)?;
        let end = (until, u64::MAX);
        let mut out = Vec::new();
        let range = match after {
            None => self.finished.range(..=end)?,
            Some(after) if after >= end => return Ok(out),
            Some(after) => {
                self.finished.range::<(Micros, JobId)>((Excluded(after), Included(end)))?
            }
        };
        for entry in range.take(limit) {
            out.push(entry?.0.value());
        }
        Ok(out)
    }

    fn executing(&mut self) -> Result<Vec<JobId>> {
        self.changes.executing.flush(&mut self.executing)?;
        let mut out = Vec::new();
        for entry in self.executing.iter()? {
            out.push(entry?.0.value());
        }
        Ok(out)
    }

    fn inserted_by(&mut self, request: RequestId) -> Result<Option<(JobId, u64)>> {
        self.request_lookup(request)
    }

    fn remember_insert(&mut self, request: RequestId, first: JobId, count: u64) -> Result<()> {
        self.request_store(request, first, count)
    }

    fn forget_requests(&mut self, before: Micros, limit: usize) -> Result<u64> {
        self.request_forget(before, limit)
    }

    fn entry(&mut self, kind: EntryKind, name: &str) -> Result<Option<Entry>> {
        self.entry_get(kind, name)
    }

    fn put_entry(
        &mut self,
        kind: EntryKind,
        name: &str,
        value: &[u8],
        expires: Option<Micros>,
    ) -> Result<()> {
        self.entry_put(kind, name, value, expires)
    }

    fn remove_entry(&mut self, kind: EntryKind, name: &str) -> Result<()> {
        self.entry_remove(kind, name)
    }

    fn expired_entries(
        &mut self,
        kind: EntryKind,
        until: Micros,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.entry_expired(kind, until, limit)
    }

    fn next_expiry(&mut self, kind: EntryKind) -> Result<Option<Micros>> {
        self.entry_next_expiry(kind)
    }

    fn entries(&mut self, kind: EntryKind) -> Result<Vec<Entry>> {
        self.entry_all(kind)
    }
}

pub(super) struct ReadTables<'p> {
    pub(super) jobs: redb::ReadOnlyTable<u64, &'static [u8]>,
    pub(super) available: redb::ReadOnlyTable<AvailKey<'static>, ()>,
    pub(super) counts: redb::ReadOnlyTable<(&'static str, u8), u64>,
    pub(super) quarantine: redb::ReadOnlyTable<u64, (i64, &'static str, &'static [u8])>,
    pub(super) path: &'p Path,
    /// The snapshot, to open the tables only some stores have (`entries.rs`).
    pub(super) txn: &'p redb::ReadTransaction,
}

impl ReadTxn for ReadTables<'_> {
    fn get(&mut self, id: JobId) -> Result<Option<Job>> {
        if let Some(v) = self.jobs.get(id)? {
            return decode(id, v.value()).map(Some);
        }
        match self.quarantine.get(id)? {
            Some(v) => Err(quarantined_error(self.path, id, &v.value())),
            None => Ok(None),
        }
    }

    fn scan(
        &mut self,
        after: Option<JobId>,
        f: &mut dyn FnMut(Job) -> bool,
        damaged: &mut Vec<JobId>,
    ) -> Result<()> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        for entry in self.jobs.range(start..)? {
            let (k, v) = entry?;
            match decode(k.value(), v.value()) {
                Ok(job) => {
                    if !f(job) {
                        break;
                    }
                }
                Err(_) => damaged.push(k.value()),
            }
        }
        Ok(())
    }

    fn scan_desc(
        &mut self,
        before: Option<JobId>,
        f: &mut dyn FnMut(Job) -> bool,
        damaged: &mut Vec<JobId>,
    ) -> Result<()> {
        let end = before.unwrap_or(u64::MAX);
        for entry in self.jobs.range(..end)?.rev() {
            let (k, v) = entry?;
            match decode(k.value(), v.value()) {
                Ok(job) => {
                    if !f(job) {
                        break;
                    }
                }
                Err(_) => damaged.push(k.value()),
            }
        }
        Ok(())
    }

    fn quarantined(&mut self) -> Result<Vec<Quarantined>> {
        let mut out = Vec::new();
        for entry in self.quarantine.iter()? {
            let (k, v) = entry?;
            let (at, reason, bytes) = v.value();
            out.push(Quarantined {
                id: k.value(),
                at,
                reason: reason.to_string(),
                bytes: bytes.to_vec(),
            });
        }
        Ok(out)
    }

    fn available(&mut self, f: &mut dyn FnMut(AvailableEntry)) -> Result<()> {
        for entry in self.available.iter()? {
            let (key, _) = entry?;
            let (queue, priority, at, id) = key.value();
            f((queue.to_string(), priority, at, id));
        }
        Ok(())
    }

    fn counts(&mut self) -> Result<Vec<(String, JobState, u64)>> {
        count_rows(&self.counts, &HashMap::new())
    }

    fn oldest_available(&mut self, queue: &str) -> Result<Option<Micros>> {
        // The index orders by priority first, so look at the head of each priority's run.
        let mut oldest: Option<Micros> = None;
        for priority in 0..=crate::job::MAX_PRIORITY {
            let start = (queue, priority, i64::MIN, 0_u64);
            let end = (queue, priority, i64::MAX, u64::MAX);
            if let Some(entry) = self.available.range(start..=end)?.next() {
                let at = entry?.0.value().2;
                oldest = Some(oldest.map_or(at, |o| o.min(at)));
            }
        }
        Ok(oldest)
    }

    fn entry(&mut self, kind: EntryKind, name: &str) -> Result<Option<Entry>> {
        self.entry_get(kind, name)
    }

    fn entries(&mut self, kind: EntryKind) -> Result<Vec<Entry>> {
        self.entry_all(kind)
    }

    fn index_ids(
        &mut self,
        source: &IndexSource<'_>,
        after: Option<JobId>,
        before: Option<JobId>,
        budget: usize,
        out: &mut Vec<JobId>,
    ) -> Result<bool> {
        let (low, high) = (after.map_or(0, |a| a.saturating_add(1)), before.unwrap_or(u64::MAX));
        if low >= high {
            return Ok(true);
        }
        let limit = out.len().saturating_add(budget);
        // Push `id` if within the bounds; false once over budget.
        let mut keep = |id: JobId| {
            if (low..high).contains(&id) {
                out.push(id);
            }
            out.len() <= limit
        };
        match *source {
            IndexSource::Available(queue) => {
                let range = (queue, 0, i64::MIN, 0)..=(queue, u8::MAX, i64::MAX, u64::MAX);
                for entry in self.available.range(range)? {
                    if !keep(entry?.0.value().3) {
                        return Ok(false);
                    }
                }
            }
            IndexSource::Due => {
                for entry in self.txn.open_table(DUE)?.iter()? {
                    if !keep(entry?.0.value().1) {
                        return Ok(false);
                    }
                }
            }
            IndexSource::Executing => {
                for entry in self.txn.open_table(EXECUTING)?.range(low..high)? {
                    if !keep(entry?.0.value()) {
                        return Ok(false);
                    }
                }
            }
            IndexSource::Finished(from, to) => {
                let start = (from.unwrap_or(i64::MIN), 0);
                let table = self.txn.open_table(FINISHED)?;
                let range = match to {
                    Some(to) if to <= start.0 => return Ok(true),
                    Some(to) => table.range(start..(to, 0))?,
                    None => table.range(start..)?,
                };
                for entry in range {
                    if !keep(entry?.0.value().1) {
                        return Ok(false);
                    }
                }
            }
            IndexSource::Failed(queue, state) => {
                // A store upgraded from format 2 has the table; so does every newer one.
                let table = self.txn.open_table(FAILED)?;
                let s = state as u8;
                for entry in table.range((queue, s, low)..(queue, s, high))? {
                    if !keep(entry?.0.value().2) {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }
}

/// The rows of a `counts` table with a transaction's pending `deltas` added, in the table's
/// order (queue, then state), leaving out pairs that come to zero.
pub(super) fn count_rows(
    table: &impl ReadableTable<(&'static str, u8), u64>,
    deltas: &HashMap<String, [i64; 7]>,
) -> Result<Vec<(String, JobState, u64)>> {
    let mut rows = std::collections::BTreeMap::<(String, u8), i64>::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let (queue, state) = key.value();
        rows.insert((queue.to_string(), state), value.value() as i64);
    }
    for (queue, row) in deltas {
        for (state, &delta) in row.iter().enumerate().filter(|(_, d)| **d != 0) {
            *rows.entry((queue.clone(), state as u8)).or_default() += delta;
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    for ((queue, state), n) in rows {
        let state = JobState::ALL
            .get(usize::from(state))
            .copied()
            .ok_or_else(|| self_damaged(format!("counts: unknown state number {state}")))?;
        if n > 0 {
            out.push((queue, state, n as u64));
        }
    }
    Ok(out)
}

/// The words of a decode error, for the quarantine table.
fn reason_of(e: &Error) -> String {
    match e {
        Error::Corrupted { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

fn quarantined_error(path: &Path, id: JobId, (at, reason, _): &(i64, &str, &[u8])) -> Error {
    Error::Corrupted {
        path: path.to_path_buf(),
        detail: format!(
            "job {id}'s record was damaged and was moved to the quarantine table at {at} µs \
             since the epoch: {reason}"
        ),
        job: None,
    }
}

fn now_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Micros)
}

/// The keys of a `(time, id)` index that name job `id`.
fn keys_naming(table: &Table<'_, (i64, u64), ()>, id: JobId) -> Result<Vec<(i64, u64)>> {
    let mut out = Vec::new();
    for entry in table.iter()? {
        let key = entry?.0.value();
        if key.1 == id {
            out.push(key);
        }
    }
    Ok(out)
}

fn self_damaged(detail: String) -> Error {
    Error::Corrupted { path: "<store>".into(), detail, job: None }
}
