"""Kathikon's exceptions.

The classes are defined in the native module (so the Rust core can raise them directly) and
re-exported here and from :mod:`kathikon`::

    KathikonError
    ├── ConfigurationError (also ValueError)   bad app, queue or worker settings
    ├── InvalidJobError (also ValueError)      a job to insert was rejected; nothing was stored
    │   ├── UnknownQueueError                  the queue is not configured in this app
    │   └── UnknownWorkerError                 the worker is not registered with this app
    ├── JobNotFoundError (also LookupError)    no job has this id
    ├── JobStateError                          the job's state forbids the change asked for
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
    ConfigurationError,
    ConnectionLostError,
    CorruptStoreError,
    EngineClosedError,
    InvalidJobError,
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


class StoreNotFoundError(StorageError, FileNotFoundError):
    """``Kathikon(path, create=False)`` found no file at ``path``; the message names the
    absolute path it looked at."""


__all__ = [
    "ConfigurationError",
    "CorruptStoreError",
    "EngineClosedError",
    "InvalidJobError",
    "JobNotFoundError",
    "JobStateError",
    "KathikonError",
    "NotAStoreError",
    "OwnerGoneError",
    "ConnectionLostError",
    "OwnerNotAnsweringError",
    "ProtocolError",
    "StorageError",
    "StorageLockedError",
    "StoreNotFoundError",
    "StoreVersionError",
    "UnknownQueueError",
    "UnknownWorkerError",
]
