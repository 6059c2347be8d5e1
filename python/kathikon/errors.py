"""Kathikon's exceptions.

The classes are defined in the native module (so the Rust core can raise them directly) and
re-exported here and from :mod:`kathikon`::

    KathikonError
    ├── ConfigurationError (also ValueError)   bad app, queue or worker settings
    ├── InvalidJobError (also ValueError)      a job to insert was rejected; nothing was stored
    │   ├── UnknownQueueError                  the queue is not configured in this app
    │   └── UnknownWorkerError                 the worker is not registered with this app
    ├── JobNotFoundError (also LookupError)    no job has this id
    ├── BatchNotFoundError (also LookupError)  no batch has this id
    ├── JobStateError                          the job's state forbids the change asked for
    ├── JobFailedError                         app.result: the job was discarded (``.job``)
    ├── JobCancelledError                      app.result: the job was cancelled (``.job``)
    ├── ResultTimeoutError (also TimeoutError) app.result: the job had not finished in time
    ├── StorageError                           reading or writing the store failed
    │   ├── StorageLockedError                 another process or app holds the file
    │   ├── NotAStoreError                     the file is not a Kathikon store
    │   ├── CorruptStoreError                  the store file is damaged
    │   ├── StoreVersionError                  written by a newer Kathikon
    │   ├── StoreNotFoundError (also FileNotFoundError)  no file, and create=False
    │   ├── OwnerGoneError                     the process owning the store went away
    │   ├── OwnerNotAnsweringError             the owner holds the store but does not answer
    │   ├── ConnectionLostError                the PostgreSQL connection broke during a call
    │   └── ProtocolError                      could not talk to the store's owner
    └── EngineClosedError                      the app was closed
"""

from ._native import (
    BatchNotFoundError,
    ConfigurationError,
    ConnectionLostError,
    CorruptStoreError,
    EngineClosedError,
    InvalidJobError,
    Job,
    JobNotFoundError,
    JobStateError,
    KathikonError,
    NotAStoreError,
    OwnerGoneError,
    OwnerNotAnsweringError,
    ProtocolError,
    StorageError,
    StorageLockedError,
    StoreVersionError,
    UnknownQueueError,
    UnknownWorkerError,
)


class JobFailedError(KathikonError):
    """``app.result(id)``: the job was discarded (it failed on its last attempt, or was
    discarded on purpose), so it has no result; ``.job`` is the job, its ``errors`` saying
    why."""

    def __init__(self, message: str, job: Job) -> None:
        super().__init__(message)
        self.job = job


class JobCancelledError(KathikonError):
    """``app.result(id)``: the job was cancelled, so it has no result; ``.job`` is the
    job."""

    def __init__(self, message: str, job: Job) -> None:
        super().__init__(message)
        self.job = job


class ResultTimeoutError(KathikonError, TimeoutError):
    """``app.result(id, timeout=...)``: the job had not finished when the time ran out;
    ``.job`` is the job as it then stood."""

    def __init__(self, message: str, job: Job) -> None:
        super().__init__(message)
        self.job = job


class StoreNotFoundError(StorageError, FileNotFoundError):
    """``Kathikon(path, create=False)`` found no file at ``path``; the message names the
    absolute path it looked at."""


__all__ = [
    "ConfigurationError",
    "CorruptStoreError",
    "EngineClosedError",
    "InvalidJobError",
    "JobCancelledError",
    "JobFailedError",
    "JobNotFoundError",
    "BatchNotFoundError",
    "JobStateError",
    "KathikonError",
    "NotAStoreError",
    "OwnerGoneError",
    "ConnectionLostError",
    "OwnerNotAnsweringError",
    "ProtocolError",
    "ResultTimeoutError",
    "StorageError",
    "StorageLockedError",
    "StoreNotFoundError",
    "StoreVersionError",
    "UnknownQueueError",
    "UnknownWorkerError",
]
