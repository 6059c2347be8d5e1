"""Kathikon: a durable job queue for Python with a Rust core.

>>> import kathikon
>>> app = kathikon.Kathikon(path=None, queues={"default": 2})
>>> @app.worker
... def hello(job: kathikon.Job) -> None:
...     print("hello", job.args["name"])
>>> job = hello.insert({"name": "world"})
>>> app.drain()
hello world
{'completed': 1}
>>> app.close()
"""

from . import telemetry
from ._native import FORMAT_VERSION, JobSpec
from .app import Kathikon
from .batches import Batch, BatchCallback, BatchStatus
from .cron import CronEntry
from .errors import (
    BatchNotFoundError,
    ConfigurationError,
    ConnectionLostError,
    CorruptStoreError,
    EngineClosedError,
    InvalidJobError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    JobStateError,
    KathikonError,
    NotAStoreError,
    OwnerGoneError,
    OwnerNotAnsweringError,
    ProtocolError,
    ResultTimeoutError,
    StorageError,
    StorageLockedError,
    StoreNotFoundError,
    StoreVersionError,
    UnknownQueueError,
    UnknownWorkerError,
)
from .job import Job, JobErrorEntry, JobState, QuarantinedRecord
from .limits import GlobalLimit, Partition, RateLimit
from .listing import JobFilter, JobPage
from .metrics import MetricPoint
from .outcomes import Cancel, Discard, JobOutcome, Snooze
from .process_info import ProcessInfo
from .progress import Progress
from .queue_check import QueueCheck
from .queues import QueueSettings
from .unique import Unique
from .worker import Worker, WorkerFunction

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "Batch",
    "BatchCallback",
    "BatchNotFoundError",
    "BatchStatus",
    "Cancel",
    "GlobalLimit",
    "Partition",
    "RateLimit",
    "ConfigurationError",
    "CorruptStoreError",
    "CronEntry",
    "Discard",
    "EngineClosedError",
    "InvalidJobError",
    "JobCancelledError",
    "JobFailedError",
    "Job",
    "JobErrorEntry",
    "JobFilter",
    "JobNotFoundError",
    "JobOutcome",
    "JobPage",
    "JobSpec",
    "JobState",
    "JobStateError",
    "Kathikon",
    "KathikonError",
    "NotAStoreError",
    "MetricPoint",
    "OwnerGoneError",
    "ConnectionLostError",
    "OwnerNotAnsweringError",
    "ProcessInfo",
    "Progress",
    "ProtocolError",
    "ResultTimeoutError",
    "QuarantinedRecord",
    "QueueCheck",
    "QueueSettings",
    "Snooze",
    "StorageError",
    "StorageLockedError",
    "StoreNotFoundError",
    "StoreVersionError",
    "UnknownQueueError",
    "UnknownWorkerError",
    "Unique",
    "Worker",
    "WorkerFunction",
    "__version__",
    "telemetry",
]
