//! The Python exception tree, mirroring `kathikon_core::Error`. Every class lives in the
//! `kathikon` namespace so tracebacks read `kathikon.JobNotFoundError`.

use kathikon_core::Error;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyLookupError, PyValueError};
use pyo3::prelude::*;

create_exception!(kathikon, KathikonError, PyException, "Base class of every Kathikon error.");
create_exception!(
    kathikon,
    ConfigurationError,
    KathikonError,
    "The app, a queue or a worker was configured with a value Kathikon cannot use."
);
create_exception!(
    kathikon,
    InvalidJobError,
    KathikonError,
    "A job to insert was rejected before anything was stored."
);
create_exception!(
    kathikon,
    UnknownQueueError,
    InvalidJobError,
    "The job names a queue the app was not configured with."
);
create_exception!(
    kathikon,
    UnknownWorkerError,
    InvalidJobError,
    "The worker given is not registered with this app."
);
create_exception!(
    kathikon,
    JobNotFoundError,
    KathikonError,
    "No job has this id (it never existed, or it was pruned)."
);
create_exception!(
    kathikon,
    BatchNotFoundError,
    KathikonError,
    "No batch has this id (it was never created in this store)."
);
create_exception!(
    kathikon,
    JobStateError,
    KathikonError,
    "The job's current state does not allow the requested change."
);
create_exception!(
    kathikon,
    StorageError,
    KathikonError,
    "Reading or writing the store failed. For a failed write the outcome is unknown."
);
create_exception!(
    kathikon,
    StorageLockedError,
    StorageError,
    "Another process, or another app in this process, holds the store file."
);
create_exception!(kathikon, NotAStoreError, StorageError, "The file is not a Kathikon store.");
create_exception!(kathikon, CorruptStoreError, StorageError, "The store file is damaged.");
create_exception!(
    kathikon,
    StoreVersionError,
    StorageError,
    "The store was written by a newer Kathikon."
);
create_exception!(
    kathikon,
    OwnerGoneError,
    StorageError,
    "The process that owned the store went away during this call; its outcome is unknown."
);
create_exception!(
    kathikon,
    ConnectionLostError,
    StorageError,
    "The connection to the PostgreSQL database broke during this call; its outcome is unknown."
);
create_exception!(
    kathikon,
    OwnerNotAnsweringError,
    StorageError,
    "The process that owns the store holds it but did not answer in time (stopped or overloaded)."
);
create_exception!(
    kathikon,
    ProtocolError,
    StorageError,
    "This process and the store's owner could not talk (another kathikon version, or a bad frame)."
);
create_exception!(
    kathikon,
    EngineClosedError,
    KathikonError,
    "The app was closed; create a new one to use the store again."
);

/// A core error as the matching Python exception.
#[allow(clippy::needless_pass_by_value)] // used as `map_err(map_error)`
pub(crate) fn map_error(error: Error) -> PyErr {
    let text = error.to_string();
    match error {
        Error::InvalidJob(_) => InvalidJobError::new_err(text),
        Error::JobNotFound(_) => JobNotFoundError::new_err(text),
        Error::BatchNotFound(_) => BatchNotFoundError::new_err(text),
        Error::IllegalTransition { .. } => JobStateError::new_err(text),
        Error::StorageLocked { .. } => StorageLockedError::new_err(text),
        Error::NotAStore { .. } => NotAStoreError::new_err(text),
        Error::Corrupted { .. } => CorruptStoreError::new_err(text),
        Error::FormatTooNew { .. } | Error::SchemaTooNew { .. } | Error::SchemaTooOld { .. } => {
            StoreVersionError::new_err(text)
        }
        Error::Closed => EngineClosedError::new_err(text),
        Error::OwnerGone { .. } => OwnerGoneError::new_err(text),
        Error::ConnectionLost { .. } => ConnectionLostError::new_err(text),
        Error::OwnerNotAnswering { .. } => OwnerNotAnsweringError::new_err(text),
        Error::Protocol(_) => ProtocolError::new_err(text),
        // A failed commit (outcome unknown) and a call refused by a stopped writer, this
        // process's or its owner's, are storage errors; their messages say which.
        Error::CommitFailed { .. } | Error::WriterStopped { .. } | Error::OwnerStopped { .. } => {
            StorageError::new_err(text)
        }
        // Storage, and any variant added later: the general storage error.
        _ => StorageError::new_err(text),
    }
}

/// Extension for `Result<T, kathikon_core::Error>`.
pub(crate) trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, Error> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(map_error)
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("KathikonError", py.get_type::<KathikonError>())?;
    m.add("ConfigurationError", py.get_type::<ConfigurationError>())?;
    m.add("InvalidJobError", py.get_type::<InvalidJobError>())?;
    m.add("UnknownQueueError", py.get_type::<UnknownQueueError>())?;
    m.add("UnknownWorkerError", py.get_type::<UnknownWorkerError>())?;
    m.add("JobNotFoundError", py.get_type::<JobNotFoundError>())?;
    m.add("BatchNotFoundError", py.get_type::<BatchNotFoundError>())?;
    m.add("JobStateError", py.get_type::<JobStateError>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("StorageLockedError", py.get_type::<StorageLockedError>())?;
    m.add("NotAStoreError", py.get_type::<NotAStoreError>())?;
    m.add("CorruptStoreError", py.get_type::<CorruptStoreError>())?;
    m.add("StoreVersionError", py.get_type::<StoreVersionError>())?;
    m.add("EngineClosedError", py.get_type::<EngineClosedError>())?;
    m.add("OwnerGoneError", py.get_type::<OwnerGoneError>())?;
    m.add("ConnectionLostError", py.get_type::<ConnectionLostError>())?;
    m.add("OwnerNotAnsweringError", py.get_type::<OwnerNotAnsweringError>())?;
    m.add("ProtocolError", py.get_type::<ProtocolError>())?;
    // ValueError / LookupError as second bases, so `except ValueError` works as users expect.
    // create_exception! allows one base only; patch __bases__ here, before any instance exists.
    for (name, extra) in [
        ("ConfigurationError", py.get_type::<PyValueError>()),
        ("InvalidJobError", py.get_type::<PyValueError>()),
        ("JobNotFoundError", py.get_type::<PyLookupError>()),
        ("BatchNotFoundError", py.get_type::<PyLookupError>()),
    ] {
        let cls = m.getattr(name)?;
        let bases = cls.getattr("__bases__")?;
        let mut list: Vec<Bound<'_, PyAny>> = bases.extract()?;
        list.push(extra.into_any());
        cls.setattr("__bases__", pyo3::types::PyTuple::new(py, list)?)?;
    }
    Ok(())
}
