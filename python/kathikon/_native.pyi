"""Type stub for ``kathikon._native``, the PyO3 extension over ``kathikon-core``.

Users import from :mod:`kathikon`; this module is the engine's raw interface.
"""

import builtins
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Optional, Union, final

from typing_extensions import TypeAlias

from .job import JobErrorEntry, JobState

__all__ = [
    "KathikonError",
    "ConfigurationError",
    "InvalidJobError",
    "UnknownQueueError",
    "UnknownWorkerError",
    "JobNotFoundError",
    "BatchNotFoundError",
    "JobStateError",
    "StorageError",
    "StorageLockedError",
    "NotAStoreError",
    "CorruptStoreError",
    "StoreVersionError",
    "EngineClosedError",
    "OwnerGoneError",
    "ConnectionLostError",
    "OwnerNotAnsweringError",
    "ProtocolError",
    "Job",
    "JobSpec",
    "job_spec",
    "unsaved_job",
    "Engine",
    "FORMAT_VERSION",
    "JOB_STATES",
    "OUTCOME_KINDS",
    "ENGINE_EVENTS",
    "DURABILITIES",
    "MAX_PRIORITY",
    "cron_next",
    "CATCH_UP_POLICIES",
    "ListFilter",
]

FORMAT_VERSION: Final[int]
#: Every job state's name, in the core's order (``kathikon.JobState`` holds the same values).
JOB_STATES: Final[tuple[str, ...]]
#: The outcome kinds an ack tuple names: complete, fail, snooze, cancel, discard.
OUTCOME_KINDS: Final[tuple[str, ...]]
#: The names ``Engine.next_events`` reports events by.
ENGINE_EVENTS: Final[tuple[str, ...]]
#: The values of ``Kathikon(durability=...)``, the default first.
DURABILITIES: Final[tuple[str, ...]]
#: The highest priority number (lowest urgency); 0 runs first.
MAX_PRIORITY: Final[int]

class KathikonError(Exception):
    """Base class of every Kathikon error."""

class ConfigurationError(KathikonError, ValueError):
    """The app, a queue or a worker was configured with a value Kathikon cannot use."""

class InvalidJobError(KathikonError, ValueError):
    """A job to insert was rejected before anything was stored."""

class UnknownQueueError(InvalidJobError):
    """The job names a queue the app was not configured with."""

class UnknownWorkerError(InvalidJobError):
    """The worker given is not registered with this app."""

class JobNotFoundError(KathikonError, LookupError):
    """No job has this id (it never existed, or it was pruned)."""

class BatchNotFoundError(KathikonError, LookupError):
    """No batch has this id (it was never created in this store)."""

class JobStateError(KathikonError):
    """The job's current state does not allow the requested change."""

class StorageError(KathikonError):
    """Reading or writing the store failed. For a failed write the outcome is unknown."""

class StorageLockedError(StorageError):
    """Another process, or another app in this process, holds the store file."""

class NotAStoreError(StorageError):
    """The file is not a Kathikon store."""

class CorruptStoreError(StorageError):
    """The store file is damaged."""

class StoreVersionError(StorageError):
    """The store was written by a newer Kathikon."""

class EngineClosedError(KathikonError):
    """The app was closed; create a new one to use the store again."""

class OwnerGoneError(StorageError):
    """The process that owned the store went away during this call; its outcome is unknown."""

class ConnectionLostError(StorageError):
    """The connection to the PostgreSQL database broke during this call; its outcome is
    unknown."""

class OwnerNotAnsweringError(StorageError):
    """The process that owns the store holds it but did not answer in time (stopped or
    overloaded); the message names its pid."""

class ProtocolError(StorageError):
    """This process and the store's owner could not talk (another kathikon version, or a bad
    frame)."""

@final
class Job:
    """A stored job, as of when it was read. Immutable; read it again with ``app.get(id)``.

    Attributes mirror the store: ``id``, ``state``, ``queue``, ``worker`` (the registered
    name), ``args`` and ``meta`` (dicts decoded from JSON), ``tags``, ``attempt``,
    ``max_attempts``, ``priority`` (0 runs first), ``errors`` (a list of
    ``{"at": datetime, "attempt": int, "error": str}``), and the aware UTC datetimes
    ``inserted_at``, ``scheduled_at``, ``attempted_at``, ``completed_at``, ``cancelled_at``,
    ``discarded_at``; ``result``, what the worker returned (decoded from JSON; None when
    nothing was kept); and ``conflict``, set on a job a unique insert returned because it
    already held the key.
    """

    def progress(self, fraction: float, note: Optional[str] = None) -> None:
        """Report how far along this running job is: ``fraction`` from 0.0 to 1.0 and an
        optional short ``note``. Cheap: the latest value is written at most twice a second, and
        the last one before the job's outcome."""
    @property
    def conflict(self) -> bool:
        """Whether the insert that returned this job found it already stored (its unique key
        was held) instead of storing a new one. False on jobs read any other way."""
    @property
    def id(self) -> int: ...
    @property
    def state(self) -> JobState: ...
    @property
    def queue(self) -> str: ...
    @property
    def worker(self) -> str: ...
    @property
    def args(self) -> dict[str, Any]:
        """The job's arguments, decoded from JSON on first read (the same dict after that)."""
    @property
    def meta(self) -> dict[str, Any]:
        """Metadata kept with the job, decoded from JSON on first read."""
    @property
    def result(self) -> Any:
        """What the worker returned, decoded from JSON on first read; None when it returned
        None, kept nothing (``store_result=False``, or a value it could not keep: see
        ``errors``), or the job has not completed."""
    @property
    def batch_id(self) -> Optional[str]:
        """The id of the batch the job belongs to (``app.insert_batch``); None for a job of
        no batch."""
    @property
    def tags(self) -> list[str]: ...
    @property
    def attempt(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def errors(self) -> list[JobErrorEntry]:
        """One ``{"at", "attempt", "error"}`` dict per failed or ended attempt, oldest first."""
    @property
    def inserted_at(self) -> datetime: ...
    @property
    def scheduled_at(self) -> datetime: ...
    @property
    def attempted_at(self) -> Optional[datetime]: ...
    @property
    def completed_at(self) -> Optional[datetime]: ...
    @property
    def cancelled_at(self) -> Optional[datetime]: ...
    @property
    def discarded_at(self) -> Optional[datetime]: ...
    def __eq__(self, value: object, /) -> bool:
        """Two reads of a job are equal when they are the same job at the same point of its
        life: same id, state, attempt and schedule."""
    def __hash__(self) -> int: ...
    def __copy__(self) -> Job:
        """A job is immutable: a shallow copy is the job itself."""
    def __deepcopy__(self, memo: Any, /) -> Job:
        """The same stored job with ``args`` and ``meta`` of its own."""

@final
class JobSpec:
    """An unsaved job, made by :meth:`Kathikon.new` or ``worker.new(...)``, for
    :meth:`Kathikon.insert_all`. Immutable: one spec may be inserted any number of times."""

    @property
    def queue(self) -> str: ...
    @property
    def worker(self) -> str: ...
    @property
    def max_attempts(self) -> int: ...
    def __copy__(self) -> JobSpec: ...
    def __deepcopy__(self, memo: Any, /) -> JobSpec: ...
    def _with_args(self, args: str) -> JobSpec:
        """The same job with other args (JSON text already checked): ``new()``'s cached path."""

def job_spec(
    queue: str,
    worker: str,
    args: str,
    meta: str,
    tags: list[str],
    max_attempts: int,
    priority: int,
    scheduled_at: Optional[int],
    unique: Optional[tuple[list[str], list[str], Optional[int], list[str], list[str]]] = None,
) -> JobSpec:
    """A ``JobSpec`` from values ``kathikon.app`` has checked and encoded."""

def unsaved_job(spec: JobSpec, attempt: int, now: int) -> Job:
    """The job ``perform_job`` runs a worker on, never stored: ``spec`` with id 0, executing
    its ``attempt``, inserted, scheduled and attempted at ``now`` (µs)."""

# Stub-only aliases (private, so stubtest does not look for them at run time).
_AckRow: TypeAlias = tuple[int, int, str, Optional[str], Optional[int], Optional[str]]
"""(id, attempt, kind, text, delay_us, result); kind: complete, fail, snooze, cancel, discard,
interrupt; result: the value a completed job keeps, as JSON text"""

@final
class Engine:
    """The job engine over one store; every blocking call releases the GIL."""

    def __new__(
        cls,
        path: Optional[str],
        *,
        fsync: bool = True,
        scheduler_interval: float = 1.0,
        prune_interval: float = 60.0,
        retention_period: Union[float, Mapping[str, float], None] = None,
        manual_clock: Optional[int] = None,
        connect: bool = True,
        lease: float = 30.0,
        takeover: bool = True,
        url: Optional[str] = None,
        migrate: bool = False,
        poll_interval: float = 1.0,
    ) -> Engine: ...
    @staticmethod
    def migrate(url: str) -> int:
        """Create or upgrade the Kathikon schema of the PostgreSQL database at ``url``; the
        schema version it had before (0: none)."""
    @staticmethod
    def schema_version() -> int:
        """The PostgreSQL schema version this build creates and reads."""
    def keep(self) -> str:
        """Take the store over (or reconnect) if its owner went away; the role then."""
    @property
    def role(self) -> str:
        """``"owner"`` or ``"client"`` (a store file), ``"node"`` (a PostgreSQL database)."""
    @property
    def owner_pid(self) -> int: ...
    @property
    def serve_error(self) -> Optional[str]:
        """Why this owner does not serve the store to other processes, or ``None``."""
    @property
    def failure(self) -> Optional[str]:
        """The storage failure after which this owner's engine stopped writing, or ``None``."""
    def advance_clock(self, seconds: float) -> None:
        """Move a manual clock (µs start given as ``manual_clock``) by ``seconds``."""
    def counts(self) -> builtins.list[tuple[str, str, int]]:
        """``(queue, state, count)`` for every non-empty pair."""
    def quarantined(self) -> builtins.list[tuple[int, int, str, bytes]]:
        """``(id, quarantined_at µs, reason, bytes)`` of every record moved aside."""
    def oldest_available(self, queue: str) -> Optional[int]: ...
    def insert(self, specs: builtins.list[JobSpec]) -> builtins.list[Job]:
        """Insert jobs in one commit (all or none); durable on return with fsync. Raises
        ``InvalidJobError`` naming any item that is not a ``JobSpec``."""
    def insert_batch(
        self,
        batch_id: str,
        callbacks: Optional[builtins.list[tuple[str, JobSpec]]],
        specs: builtins.list[JobSpec],
    ) -> builtins.list[Job]:
        """Insert jobs as members of batch ``batch_id`` in one commit, creating it with
        ``callbacks`` (``(event, spec)``, event one of completed, discarded, cancelled,
        finished) if no batch has the id."""
    def batch(
        self, batch_id: str
    ) -> tuple[
        str,
        int,
        builtins.list[tuple[str, int]],
        Optional[int],
        builtins.list[tuple[str, str, Optional[int]]],
    ]:
        """``(id, created_at µs, [(state, count), …], finished_at µs or None, [(event, worker,
        callback job id or None), …])``; ``BatchNotFoundError`` for an unknown id."""
    def host_insert(
        self, specs: builtins.list[JobSpec]
    ) -> tuple[str, dict[str, Any], builtins.list[Job]]:
        """The insert of ``specs`` for the caller's own PostgreSQL connection: the statement
        (psycopg's ``%(name)s`` style; each returned row's first column an inserted id), its
        parameters, and the jobs to number with :meth:`numbered`. Stores nothing."""
    @staticmethod
    def numbered(jobs: builtins.list[Job], ids: builtins.list[int]) -> builtins.list[Job]:
        """``jobs`` from :meth:`host_insert` with the ids its statement returned, in order."""
    def claim(self, queue: str, max: int, timeout: float) -> list[Job]:
        """Claim up to ``max`` jobs, waiting up to ``timeout`` s; durably marked executing."""
    def wait_ready(
        self, queues: list[str], seen: Optional[int], timeout: float
    ) -> tuple[int, list[str]]:
        """Wait up to ``timeout`` s for the store's ready generation to move past ``seen``
        (``None``: look at once); returns it and which of ``queues`` have jobs ready."""
    def watch(
        self,
        id: int,
        attempt: int,
        *,
        timeout: Optional[float] = None,
        error: str = ...,
        retry_in: Optional[int] = None,
        kill_on_cancel: bool = False,
    ) -> None:
        """Watch attempt ``attempt`` of a sync job in this worker process: past ``timeout`` s,
        store it as failed with ``error`` (retried after ``retry_in`` µs; ``None``: the
        default backoff); with ``kill_on_cancel``, once it is found cancelled. Either way the
        process then ends at once."""
    def unwatch(self, id: int) -> None:
        """Job ``id`` ended by itself."""
    def ack(self, acks: list[_AckRow], wait: bool = True) -> list[Optional[Job]]:
        """Record outcomes; ``None`` where the ack was stale."""
    def cancel(self, id: int) -> tuple[Job, str]:
        """Cancel; returns the job and the state it was in before."""
    def retry(self, id: int) -> Job: ...
    def get(self, id: int) -> Job: ...
    def wait_finished(self, id: int, timeout: Optional[float] = None) -> Job:
        """Wait up to ``timeout`` seconds (None: without end) for job ``id`` to finish, with
        the GIL released; returns the job, finished or, when the time ran out, not yet."""
    def list(
        self,
        state: Optional[str] = None,
        queue: Optional[str] = None,
        worker: Optional[str] = None,
        after: Optional[int] = None,
        limit: int = 0,
    ) -> builtins.list[Job]: ...
    def list_by(self, filter: ListFilter) -> builtins.list[Job]: ...
    def count(self, filter: ListFilter) -> int: ...
    def bulk(self, action: str, filter: ListFilter, force: bool = False) -> int: ...
    def prune(self, older_than: float) -> int: ...
    def sync(self, promote_until: Optional[int] = None) -> None:
        """Wait until everything sent so far is committed and due jobs are promoted (also
        those due before ``promote_until`` µs, when given)."""
    def interrupt(self, queue: str) -> None: ...
    def ready_count(self, queue: str) -> int: ...
    def claimers(self) -> builtins.list[tuple[str, int, float]]:
        """``(queue, pid, idle seconds)`` per queue claimed from since the owner opened the
        store: the latest claimer and how long ago its claim's wait ended (0.0 while one
        waits)."""
    @property
    def recovery(self) -> tuple[int, int]:
        """``(rescued, discarded)`` at open."""
    def now(self) -> int: ...
    def set_events(self, on: bool) -> None: ...
    def next_events(self, timeout: float) -> builtins.list[tuple[str, dict[str, Any]]]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def set_queue(
        self,
        queue: str,
        change: str,
        concurrency: Optional[int] = None,
        limit: Optional[str] = None,
    ) -> tuple[str, bool, Optional[int], Optional[int], bool, Optional[str], Optional[str]]:
        """Change a queue's runtime settings (``change``: pause, resume, scale, start, stop,
        global_limit or rate_limit, the last two with ``limit`` as JSON); returns ``(queue,
        paused, concurrency, started, stopped, global_limit, rate_limit)`` as they now are."""
    def queue_settings(
        self,
    ) -> tuple[
        int,
        builtins.list[
            tuple[str, bool, Optional[int], Optional[int], bool, Optional[str], Optional[str]]
        ],
    ]:
        """``(generation, rows)``: every queue with runtime settings, as ``set_queue``
        returns them; the generation changes whenever any of them does."""
    def limit_usage(
        self, queue: str
    ) -> tuple[builtins.list[tuple[str, int]], builtins.list[tuple[str, int]]]:
        """How much of ``queue``'s limits is in use: ``([(partition, executing)], [(partition,
        starts in the rate window)])``; ``""`` names a whole queue."""
    def set_crontab(self, entries: builtins.list[tuple[str, str, str, str, int, JobSpec]]) -> None:
        """Replace this process's crontab: ``(name, expression, timezone, catch_up,
        catch_up_limit, job)`` each; fired while this process owns the store."""
    def cron_slots(self) -> builtins.list[tuple[str, int, str, str]]:
        """The last slot each cron entry fired: ``(name, slot µs, expression, timezone)``."""
    def progress(self, id: int) -> Optional[tuple[int, float, Optional[str], int]]:
        """Job ``id``'s latest stored progress: ``(attempt, fraction, note, at µs)``."""
    @property
    def progress_writes(self) -> int:
        """How many progress values this engine has written for its jobs."""
    def processes(
        self,
    ) -> builtins.list[
        tuple[int, str, str, int, int, Optional[int], builtins.list[int], builtins.list[str]]
    ]:
        """The processes working on the store, owner first: ``(pid, role, hostname,
        connected µs, last seen µs, lease expiry µs or None, [job ids], [queues])``; role is
        ``"owner"``, ``"client"`` or, on a database shared by peers, ``"node"``."""
    def metrics(
        self, since: Optional[int] = None, queue: Optional[str] = None
    ) -> builtins.list[
        tuple[str, int, int, int, int, int, Optional[int], Optional[int], Optional[int]]
    ]:
        """Per queue and minute: ``(queue, minute µs, completed, failed, discarded, cancelled,
        p50 µs, p95 µs, p99 µs)``, oldest first."""

def cron_next(expression: str, timezone: str, after: int) -> Optional[int]:
    """The first slot of ``expression`` in ``timezone`` strictly after ``after`` (µs);
    ``None`` for ``@reboot``. Raises ``ConfigurationError`` naming a bad value."""

#: The values of ``catch_up=`` for a cron entry, the default first.
CATCH_UP_POLICIES: Final[tuple[str, ...]]

@final
class ListFilter:
    """Which jobs a listing, count or bulk action selects (checked by ``kathikon.listing``).
    Times are µs since the epoch; ``*_after`` inclusive, ``*_before`` exclusive."""

    def __new__(
        cls,
        *,
        states: builtins.list[str] = ...,
        queue: Optional[str] = None,
        worker: Optional[str] = None,
        tags: builtins.list[str] = ...,
        args: Optional[str] = None,
        meta: Optional[str] = None,
        inserted_after: Optional[int] = None,
        inserted_before: Optional[int] = None,
        scheduled_after: Optional[int] = None,
        scheduled_before: Optional[int] = None,
        finished_after: Optional[int] = None,
        finished_before: Optional[int] = None,
        after: Optional[int] = None,
        before: Optional[int] = None,
        descending: bool = False,
        limit: int = 0,
    ) -> ListFilter: ...
