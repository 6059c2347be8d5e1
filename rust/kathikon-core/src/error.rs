//! The core's one error type. Every variant says what went wrong with which value; the Python
//! bindings map each variant to a typed `kathikon` exception. What code decides on (a commit's
//! outcome is unknown, the writer stopped, which job's record is damaged) is a variant or a
//! field, never words to parse back out of a message.

use std::fmt;
use std::path::PathBuf;

use crate::job::JobId;
use crate::state::JobState;

/// Result alias used throughout the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the engine can refuse or fail at.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A job description was rejected before anything was written. The message names the
    /// offending value and how to fix it.
    #[error("{0}")]
    InvalidJob(String),
    /// No job has this id (it never existed or was pruned).
    #[error("no job with id {0}; it never existed or was pruned after its retention period")]
    JobNotFound(JobId),
    /// No batch has this id (it was never created, or this store does not hold it).
    #[error(
        "no batch with id {0:?}; a batch id is one an insert_batch created (given or returned)"
    )]
    BatchNotFound(String),
    /// The requested change is not allowed from the job's current state.
    #[error("job {id} is {from}; it cannot be {action} from that state")]
    IllegalTransition {
        /// The job.
        id: JobId,
        /// Its state when the change was asked for.
        from: JobState,
        /// What was asked (past participle: "retried", "claimed", …).
        action: &'static str,
    },
    /// Another process (or another app in this process) holds the store.
    #[error("{}", locked_message(path, *holder, *same_process))]
    StorageLocked {
        /// The store file.
        path: PathBuf,
        /// PID of the holding process, when the OS tells us.
        holder: Option<u32>,
        /// The holder is this very process (a second app on the same path).
        same_process: bool,
    },
    /// The file exists but is not a Kathikon store.
    #[error("{path} is not a Kathikon store ({detail}); point `path` at a new file or at a store Kathikon created")]
    NotAStore {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        detail: String,
    },
    /// The file is a store but is damaged.
    #[error("the store {path} is damaged ({detail}); restore it from a backup or move it aside")]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// What redb or the decoder said (naming the job, when one record is the damage).
        detail: String,
        /// The job whose record, still in the jobs table, does not decode: the engine moves it
        /// to the quarantine table. `None` when the damage is elsewhere (a table, the header,
        /// the log) or the record was moved aside already (`detail` then names the job).
        job: Option<JobId>,
    },
    /// The store was written by a newer Kathikon whose format this one cannot read.
    #[error("the store {path} has format version {found}, newer than this Kathikon reads ({supported}); upgrade kathikon")]
    FormatTooNew {
        /// The file.
        path: PathBuf,
        /// Version found in the file.
        found: u64,
        /// Newest version this build reads.
        supported: u64,
    },
    /// An I/O failure (opening, reading, a socket, a thread) that is neither a failed commit
    /// nor a refusal by a stopped writer. A write that fails this way stops the writer, as a
    /// failed commit does.
    #[error("storage error: {}", StorageWords(self))]
    Storage(String),
    /// The process that owns the store went away (or stopped answering) while this process
    /// was using it through its socket. The call's outcome is unknown; the next call connects
    /// to a new owner or takes the store over.
    #[error("the process that owned the store {path} (pid {owner}) is gone ({detail}); this call's outcome is unknown: check or retry it, the next call reconnects or takes the store over")]
    OwnerGone {
        /// The store file.
        path: PathBuf,
        /// PID of the owner that went away.
        owner: u32,
        /// What the socket said.
        detail: String,
    },
    /// The connection to the `PostgreSQL` database broke during this call (the server
    /// restarted, the network dropped): its outcome is unknown, as a write may or may not have
    /// committed. The next call connects again.
    #[error("the connection to PostgreSQL broke during this call ({detail}); its outcome is unknown (a write may or may not have been committed): check or retry it, the next call connects again")]
    ConnectionLost {
        /// What the client said.
        detail: String,
    },
    /// The process that owns the store holds it but did not answer within `waited`: it is
    /// stopped (SIGSTOP), or too overloaded to answer. Nothing is switched: the owner still
    /// holds the file. The call's outcome is unknown (the owner may act on it when it runs
    /// again).
    #[error("the process that owns the store {path} ({}) did not answer within {:.1} s; is it stopped (SIGSTOP) or overloaded? resume it (kill -CONT), or stop it so another process takes the store over, then retry; this call's outcome is unknown", match owner { Some(pid) => format!("pid {pid}"), None => "pid unknown".to_string() }, waited.as_secs_f64())]
    OwnerNotAnswering {
        /// The store file.
        path: PathBuf,
        /// PID of the owner, when known.
        owner: Option<u32>,
        /// How long this process waited.
        waited: std::time::Duration,
    },
    /// The owner of a store and this process could not talk: a malformed or oversized frame,
    /// or protocol versions that differ (the message says which).
    #[error("{0}")]
    Protocol(String),
    /// The engine was closed; open a new one.
    #[error("the Kathikon engine is closed; create a new app to use this store again")]
    Closed,
    /// A commit to the store failed and its outcome is unknown: the batch may or may not be
    /// durable (redb's contract; for the write-ahead log, its record may be on disk whole,
    /// torn or absent). The engine writes nothing more until the store is reopened, and every
    /// later write is refused with [`Error::WriterStopped`].
    #[error("storage error: {}", StorageWords(self))]
    CommitFailed {
        /// The store file.
        path: PathBuf,
        /// What failed (redb's words, or the log's I/O error, with advice where there is some).
        detail: String,
    },
    /// The engine stopped writing after the storage failure `cause` and refused this write
    /// without trying it: nothing of it was written. Only reopening the store (the app) lets
    /// it write again.
    #[error("storage error: {}", StorageWords(self))]
    WriterStopped {
        /// The failure that stopped the writer.
        cause: Box<Error>,
    },
    /// The `PostgreSQL` database holds a Kathikon schema newer than this build knows: another
    /// machine runs a newer Kathikon and migrated it. Nothing was changed.
    #[error("the PostgreSQL database has Kathikon schema version {found}, newer than this Kathikon knows ({supported}); upgrade kathikon here to the version the other machines run (a schema is never downgraded)")]
    SchemaTooNew {
        /// The version the database's `kathikon.meta` holds.
        found: i64,
        /// The newest version this build creates and reads.
        supported: i64,
    },
    /// The `PostgreSQL` database holds no Kathikon schema, or an older one than this build
    /// uses, and the store was opened without migrating. Nothing was changed.
    #[error("the PostgreSQL database has Kathikon schema version {found} (0: none), older than this Kathikon's ({supported}); run `kathikon migrate --url ...`, or open the store with migration allowed (Python: `Kathikon(url=..., migrate=True)`)")]
    SchemaTooOld {
        /// The version the database holds (0: no Kathikon schema).
        found: i64,
        /// The version this build uses.
        supported: i64,
    },
    /// The process that owns the store, which this process uses through its socket, stopped
    /// writing after the storage failure `cause`: this call was refused or failed there, and
    /// nothing of it was written (a failed commit is [`Error::CommitFailed`] instead). This
    /// process cannot reopen the store while that owner holds it; once the owner exits or
    /// closes its app, the next call reconnects or takes the store over (replaying its log).
    #[error(
        "storage error: the process that owns the store {path} (pid {owner}) stopped writing \
         after a storage failure ({}); nothing of this call was written. Once that process \
         exits or closes its app (a `kathikon worker` exits by itself, with status 75, for its \
         supervisor to restart it), the next call reconnects or takes the store over",
        StorageWords(cause)
    )]
    OwnerStopped {
        /// The store file.
        path: PathBuf,
        /// PID of the owner that stopped writing.
        owner: u32,
        /// The failure that stopped the owner's writer.
        cause: Box<Error>,
    },
}

/// A storage failure's words without the "storage error: " prefix, so one failure can be named
/// inside another's message without the prefix doubling; any other error's whole message.
struct StorageWords<'a>(&'a Error);

impl fmt::Display for StorageWords<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Error::Storage(words) => f.write_str(words),
            Error::CommitFailed { path, detail } => {
                write!(f, "commit to {} failed, outcome unknown: {detail}", path.display())
            }
            Error::WriterStopped { cause } => write!(
                f,
                "the engine stopped writing after a storage failure ({}); close the app and \
                 open it again",
                StorageWords(cause)
            ),
            other => fmt::Display::fmt(other, f),
        }
    }
}

impl Error {
    /// Whether a write that fails with this stops the writer: a storage failure
    /// ([`Error::Storage`], [`Error::CommitFailed`], [`Error::WriterStopped`]), after which
    /// redb refuses writes until reopened and the batch's outcome may be unknown. A damaged
    /// record fails its batch alone.
    pub(crate) fn stops_writer(&self) -> bool {
        matches!(self, Error::Storage(_) | Error::CommitFailed { .. } | Error::WriterStopped { .. })
    }

    /// What the store's owner, whose writer stopped after `cause`, tells its client instead of
    /// a storage error: a failed read's "reopen the app" words (redb refusing every access
    /// after an I/O error) and the refusal of a write are both [`Error::WriterStopped`]; a
    /// failed commit stays [`Error::CommitFailed`] (its outcome is unknown) and any other
    /// error is this call's own.
    pub(crate) fn reported_by_stopped_owner(self, cause: &Error) -> Error {
        match self {
            Error::Storage(_) | Error::WriterStopped { .. } => {
                Error::WriterStopped { cause: Box::new(cause.clone()) }
            }
            other => other,
        }
    }
}

fn locked_message(path: &std::path::Path, holder: Option<u32>, same_process: bool) -> String {
    let path = path.display();
    if same_process {
        return format!(
            "the store {path} is already open in this process by another Kathikon app; \
             use one app per store per process: share that app object, or close it before \
             opening the store again"
        );
    }
    match holder {
        Some(pid) => format!(
            "the store {path} is held by another process (pid {pid}); \
             stop that process or use another path"
        ),
        None => format!(
            "the store {path} is held by another process; stop that process or use another path"
        ),
    }
}

/// redb's words for a storage failure, with Kathikon's advice where it has some: after any
/// I/O error redb refuses every later access (`PreviousIo`) until the database is reopened,
/// which for a user means reopening the app; a full disk is said to be one.
fn storage_text(e: &redb::StorageError) -> String {
    match e {
        redb::StorageError::PreviousIo => "an earlier I/O error left the store unusable; \
             close the app and open it again"
            .into(),
        redb::StorageError::Io(io) => format!("{e}{}", io_advice(io)),
        other => other.to_string(),
    }
}

/// What to do about an I/O error, when its kind says (empty otherwise).
pub(crate) fn io_advice(io: &std::io::Error) -> &'static str {
    match io.kind() {
        std::io::ErrorKind::StorageFull => " (the disk is full: free some space)",
        std::io::ErrorKind::QuotaExceeded => {
            " (the disk quota is exceeded: free some space or raise the quota)"
        }
        _ => "",
    }
}

impl From<redb::StorageError> for Error {
    fn from(e: redb::StorageError) -> Self {
        match e {
            // The store fills in its path (`RedbStore::with_path`).
            redb::StorageError::Corrupted(detail) => Error::Corrupted {
                path: "<store>".into(),
                detail: format!("redb: {detail}"),
                job: None,
            },
            other => Error::Storage(storage_text(&other)),
        }
    }
}

impl From<redb::TransactionError> for Error {
    fn from(e: redb::TransactionError) -> Self {
        match e {
            redb::TransactionError::Storage(e) => e.into(),
            other => Error::Storage(other.to_string()),
        }
    }
}

impl From<redb::TableError> for Error {
    fn from(e: redb::TableError) -> Self {
        match e {
            redb::TableError::Storage(e) => e.into(),
            // Kathikon opens only its own tables, with the types it created them with: a
            // mismatch or a missing table means the file is damaged. The store fills in its
            // path (`RedbStore::with_path`).
            redb::TableError::TableTypeMismatch { .. }
            | redb::TableError::TypeDefinitionChanged { .. }
            | redb::TableError::TableIsMultimap(_)
            | redb::TableError::TableIsNotMultimap(_)
            | redb::TableError::TableDoesNotExist(_) => {
                Error::Corrupted { path: "<store>".into(), detail: format!("redb: {e}"), job: None }
            }
            other => Error::Storage(other.to_string()),
        }
    }
}

impl From<redb::CommitError> for Error {
    fn from(e: redb::CommitError) -> Self {
        commit_failed(std::path::Path::new("<store>"), &e)
    }
}

/// A failed commit of the store at `path`: always [`Error::CommitFailed`], even when redb
/// found the file damaged, because the outcome is unknown and the store must be reopened
/// before it is written again.
pub(crate) fn commit_failed(path: &std::path::Path, e: &redb::CommitError) -> Error {
    let detail = match e {
        redb::CommitError::Storage(e) => storage_text(e),
        other => other.to_string(),
    };
    Error::CommitFailed { path: path.to_path_buf(), detail }
}

impl From<redb::SetDurabilityError> for Error {
    fn from(e: redb::SetDurabilityError) -> Self {
        Error::Storage(e.to_string())
    }
}
