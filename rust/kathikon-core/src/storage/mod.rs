//! Storage behind a trait, so the engine does not care whether jobs live in redb (today) or
//! `PostgreSQL` (later).
//!
//! A store only persists what the engine decided: it keeps each job record and the indexes
//! derived from the record's state, and never changes a state itself. Transactions are closures
//! so an implementation can keep its open tables on the stack for the whole batch.
//!
//! The contract ([`Store`], [`ReadTxn`], [`WriteTxn`]) names no storage engine: how a store
//! makes a commit durable (redb's write-ahead log and checkpoints, a database server's own),
//! where it lives and how it is opened belong to the implementation (`redb/`), which the
//! engine receives already open ([`crate::Engine::with_store`]).

mod redb;

pub(crate) use self::redb::canonical;
pub use self::redb::{
    decode_record, encode_record, LogFaults, LogTrigger, RedbStore, FORMAT_VERSION,
};

use crate::clock::Micros;
use crate::error::Result;
use crate::job::{Job, JobId, Placement};
use crate::request::RequestId;
use crate::state::JobState;

/// Small records kept beside the jobs, each under a kind and a name: the keys of unique jobs,
/// the last slot each cron entry fired, the settings of queues controlled at runtime. They are
/// written in the writer's transaction with the jobs, so a crash keeps both or neither, and a
/// value is opaque bytes to the store (each feature encodes its own). An entry may carry an
/// expiry time, which the store indexes so that expired entries are found without a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// A unique job's key → the job that holds it.
    Unique = 1,
    /// A cron entry's name → the last slot it fired.
    Cron = 2,
    /// A queue's name → its settings (paused, concurrency, started at runtime).
    Queue = 3,
    /// A (queue, minute) → its outcome counts and duration histogram (`crate::metrics`).
    Metrics = 4,
    /// A job's id → the latest progress its running attempt reported (`crate::progress`).
    Progress = 5,
    /// A (queue, rate partition) → the starts in its rate-limit window (`crate::limits`).
    RateWindow = 6,
    /// A batch's id → its counts, callbacks and state (`crate::batch`).
    Batch = 7,
}

impl EntryKind {
    /// The kind stored as `byte`, if any.
    pub fn from_byte(byte: u8) -> Option<EntryKind> {
        match byte {
            1 => Some(EntryKind::Unique),
            2 => Some(EntryKind::Cron),
            3 => Some(EntryKind::Queue),
            4 => Some(EntryKind::Metrics),
            5 => Some(EntryKind::Progress),
            6 => Some(EntryKind::RateWindow),
            7 => Some(EntryKind::Batch),
            _ => None,
        }
    }
}

/// One stored entry: its name, value and expiry time (if it has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name it is stored under (within its kind).
    pub name: String,
    /// The value, as the feature that wrote it encoded it.
    pub value: Vec<u8>,
    /// When it expires, if ever.
    pub expires: Option<Micros>,
}

/// A batch member's change of state ([`WriteTxn::take_batch_moves`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMove {
    /// The member's batch.
    pub batch: String,
    /// The state it left; `None` when it was stored new.
    pub from: Option<JobState>,
    /// The state it entered; `None` when it was deleted.
    pub to: Option<JobState>,
}

/// An available job's place in its queue: `(queue, priority, scheduled_at, id)`.
pub type AvailableEntry = (String, u8, Micros, JobId);

/// A job record that no longer decoded (damaged on disk), moved aside with why and when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Quarantined {
    /// The job's id (the key it was stored under).
    pub id: JobId,
    /// When it was moved aside (wall-clock microseconds since the Unix epoch).
    pub at: Micros,
    /// What the decoder said.
    pub reason: String,
    /// The record's bytes as found, for forensics.
    pub bytes: Vec<u8>,
}

/// A store of jobs with the indexes the engine needs.
pub trait Store: Send + Sync {
    /// Run `f` against a consistent snapshot of the last commit.
    fn read(&self, f: &mut dyn FnMut(&mut dyn ReadTxn) -> Result<()>) -> Result<()>;

    /// Run `f` in one write transaction and commit it. `f` runs once (the writer moves the
    /// inserted jobs out of their commands).
    ///
    /// On `Ok`, everything `f` wrote is committed: visible to every later read, and durable
    /// when the store was opened to wait for durability. If `f` returns `Err`, nothing it
    /// wrote is kept. If the commit itself fails, the outcome is unknown: the changes may or
    /// may not be durable, and the store must be reopened before it is written again (reads
    /// then either show every change committed before the failure or fail the same way).
    fn write(&self, f: &mut dyn FnMut(&mut dyn WriteTxn) -> Result<()>) -> Result<()>;

    /// Job counts per `(queue, state)`, for every pair with at least one job, as of the last
    /// acknowledged write. A store that keeps acknowledged writes back from its readers
    /// answers without making them visible (which costs a commit).
    fn counts(&self) -> Result<Vec<(String, JobState, u64)>> {
        read_counts(self)
    }

    /// Make every write acknowledged so far durable in the store's own tables, not only in
    /// what it acknowledged it with (a log, say), so a test can look at or damage what the
    /// store keeps. For tests; a store that writes everything in place at each commit does
    /// nothing. It is on the contract because the engine reaches it through the writer, which
    /// holds the store as a `dyn Store`: so it waits for the put-off work and fails as writes
    /// do once one failed.
    #[doc(hidden)]
    fn checkpoint(&self) -> Result<()> {
        Ok(())
    }

    /// Whether the store put work off for the writer's idle time (filing the jobs taken by
    /// [`WriteTxn::put_new`], say). While it does, the idle writer calls
    /// [`Store::do_background_work`].
    fn has_background_work(&self) -> bool {
        false
    }

    /// Do a piece of that work, `limit` units of it (jobs filed, say), so the writer can turn
    /// to callers between pieces; returns whether more remains. An `Err` is a failed write:
    /// the store drops its uncommitted work, as after a failed batch.
    fn do_background_work(&self, limit: usize) -> Result<bool> {
        let _ = limit;
        Ok(false)
    }
}

/// The counts as a read sees them (after whatever a read of `store` does first).
fn read_counts<S: Store + ?Sized>(store: &S) -> Result<Vec<(String, JobState, u64)>> {
    let mut out = Vec::new();
    store.read(&mut |txn| {
        out = txn.counts()?;
        Ok(())
    })?;
    Ok(out)
}

/// Reads inside a snapshot.
pub trait ReadTxn {
    /// The job with this id; a record that does not decode, or was quarantined (see
    /// [`Quarantined`]), is [`crate::Error::Corrupted`] saying so.
    fn get(&mut self, id: JobId) -> Result<Option<Job>>;
    /// Jobs in ascending id order, starting after `after`; stop when `f` returns false.
    /// Records that do not decode are skipped and their ids added to `damaged` (a read cannot
    /// move them aside; the engine asks the writer to).
    fn scan(
        &mut self,
        after: Option<JobId>,
        f: &mut dyn FnMut(Job) -> bool,
        damaged: &mut Vec<JobId>,
    ) -> Result<()>;
    /// Like [`ReadTxn::scan`], in descending id order, starting below `before`.
    fn scan_desc(
        &mut self,
        before: Option<JobId>,
        f: &mut dyn FnMut(Job) -> bool,
        damaged: &mut Vec<JobId>,
    ) -> Result<()>;
    /// Every quarantined record, by id.
    fn quarantined(&mut self) -> Result<Vec<Quarantined>>;
    /// Every available job's queue position.
    fn available(&mut self, f: &mut dyn FnMut(AvailableEntry)) -> Result<()>;
    /// Job counts per `(queue, state)`, for every pair with at least one job.
    fn counts(&mut self) -> Result<Vec<(String, JobState, u64)>>;
    /// The earliest `scheduled_at` among `queue`'s available jobs.
    fn oldest_available(&mut self, queue: &str) -> Result<Option<Micros>>;
    /// Every entry of `kind`, by name.
    fn entries(&mut self, kind: EntryKind) -> Result<Vec<Entry>>;
    /// The entry `(kind, name)`, if stored.
    fn entry(&mut self, kind: EntryKind, name: &str) -> Result<Option<Entry>>;
    /// Push to `out` the ids that the index `source` holds between the id bounds `after` and
    /// `before` (both excluded), in no particular order, and return true; return false when
    /// the store has no such index or it holds more than `budget` ids in those bounds (`out`
    /// is then partly filled, to be thrown away). The store without indexes lists by walking.
    fn index_ids(
        &mut self,
        source: &IndexSource<'_>,
        after: Option<JobId>,
        before: Option<JobId>,
        budget: usize,
        out: &mut Vec<JobId>,
    ) -> Result<bool> {
        let _ = (source, after, before, budget, out);
        Ok(false)
    }
}

/// One of a store's per-state indexes, read by a listing instead of every record
/// ([`ReadTxn::index_ids`]). Each holds every job in its states (of its queue, where it has
/// one) and no other job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexSource<'a> {
    /// `queue`'s available jobs.
    Available(&'a str),
    /// Scheduled and retryable jobs, of every queue.
    Due,
    /// Executing jobs, of every queue.
    Executing,
    /// Completed, cancelled and discarded jobs of every queue that finished at or after
    /// `.0` and before `.1` (open where `None`).
    Finished(Option<Micros>, Option<Micros>),
    /// `queue`'s jobs in `state`, one of the failure states (retryable, cancelled,
    /// discarded).
    Failed(&'a str, JobState),
}

/// Reads and writes inside one write transaction.
pub trait WriteTxn {
    /// The job with this id. A record that does not decode is quarantined (moved aside, see
    /// [`WriteTxn::take_quarantined`]) and reads as absent, so one damaged record never fails
    /// a batch.
    fn get(&mut self, id: JobId) -> Result<Option<Job>>;
    /// Why job `id` is not there: [`crate::Error::Corrupted`] if its record was quarantined,
    /// else [`crate::Error::JobNotFound`].
    fn missing(&mut self, id: JobId) -> Result<crate::Error>;
    /// The records this transaction quarantined so far, with the reason, emptied.
    fn take_quarantined(&mut self) -> Vec<(JobId, String)>;
    /// The jobs this transaction moved out of the executing state or deleted while
    /// executing, so far, emptied (the queue limits free their places after the commit).
    fn take_left_executing(&mut self) -> Vec<JobId>;
    /// The jobs this transaction moved into a terminal state or deleted unfinished, so far,
    /// emptied (their waits are woken after the commit: [`crate::Jobs::wait_finished`]).
    fn take_ended(&mut self) -> Vec<JobId>;
    /// The changes of state of batch members this transaction made so far, emptied: each
    /// member's batch, the state it left (`None`: it was stored new) and the state it
    /// entered (`None`: it was deleted). A store records each put and delete of a job with a
    /// batch whose state changed, so the batch's counts follow every verb ([`crate::batch`]).
    fn take_batch_moves(&mut self) -> Vec<BatchMove>;
    /// Reserve `n` consecutive new ids and return the first.
    fn allocate_ids(&mut self, n: u64) -> Result<JobId>;
    /// Store `new`, which was at placement `old` when read in this transaction (`None` for
    /// an insert), and move its index entries and counts to match its new state.
    fn put(&mut self, old: Option<Placement>, new: &Job) -> Result<()>;
    /// Store a job an insert just made: the same as `put(None, new)`, except that the store
    /// may write it to its tables later, as long as it is as durable as the batch when the
    /// batch is, and no read (in this transaction or after it) can miss it. Nothing can name
    /// the job yet, so this saves the caller the filing.
    fn put_new(&mut self, new: &Job) -> Result<()> {
        self.put(None, new)
    }
    /// Delete a job and its index entries.
    fn remove(&mut self, job: &Job) -> Result<()>;
    /// Ids of scheduled or retryable jobs due at or before `until`, earliest first.
    fn due(&mut self, until: Micros, limit: usize) -> Result<Vec<JobId>>;
    /// The earliest due time of any scheduled or retryable job.
    fn next_due(&mut self) -> Result<Option<Micros>>;
    /// Keys `(finished_at, id)` of up to `limit` terminal jobs that finished at or before
    /// `until` and come after the key `after` (from the first when `None`), oldest first.
    fn finished(
        &mut self,
        after: Option<(Micros, JobId)>,
        until: Micros,
        limit: usize,
    ) -> Result<Vec<(Micros, JobId)>>;
    /// Ids of every job in the executing state.
    fn executing(&mut self) -> Result<Vec<JobId>>;
    /// The jobs the insert carrying `request` stored, as `(first id, how many)` (an insert's
    /// ids are consecutive), if the store still remembers that request.
    fn inserted_by(&mut self, request: RequestId) -> Result<Option<(JobId, u64)>>;
    /// Remember that the insert carrying `request` stored `count` jobs from `first`, durably
    /// with them: a crash keeps both or neither.
    fn remember_insert(&mut self, request: RequestId, first: JobId, count: u64) -> Result<()>;
    /// Forget up to `limit` requests made before `before`, oldest first; returns how many.
    fn forget_requests(&mut self, before: Micros, limit: usize) -> Result<u64>;
    /// The entry `(kind, name)`, if stored.
    fn entry(&mut self, kind: EntryKind, name: &str) -> Result<Option<Entry>>;
    /// Store `value` under `(kind, name)`, replacing any entry there, expiring at `expires`.
    fn put_entry(
        &mut self,
        kind: EntryKind,
        name: &str,
        value: &[u8],
        expires: Option<Micros>,
    ) -> Result<()>;
    /// Delete the entry `(kind, name)`, if stored.
    fn remove_entry(&mut self, kind: EntryKind, name: &str) -> Result<()>;
    /// Names of up to `limit` entries of `kind` that expire at or before `until`, earliest
    /// first (from the expiry index, not a scan).
    fn expired_entries(
        &mut self,
        kind: EntryKind,
        until: Micros,
        limit: usize,
    ) -> Result<Vec<String>>;
    /// The earliest expiry time of any entry of `kind`.
    fn next_expiry(&mut self, kind: EntryKind) -> Result<Option<Micros>>;
    /// Every entry of `kind`, by name.
    fn entries(&mut self, kind: EntryKind) -> Result<Vec<Entry>>;
}
