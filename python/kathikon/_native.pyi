"""Type stub for ``kathikon._native``, the PyO3 extension over ``kathikon-core``.

Users import from :mod:`kathikon`; this module is the engine's raw interface.
"""

import builtins
from typing import Any, Final, Optional, final

from typing_extensions import TypeAlias

__all__ = [
    "KathikonError",
    "ConfigurationError",
    "InvalidJobError",
    "UnknownQueueError",
    "UnknownWorkerError",
    "JobNotFoundError",
    "JobStateError",
    "StorageError",
    "StorageLockedError",
    "NotAStoreError",
    "CorruptStoreError",
    "StoreVersionError",
    "EngineClosedError",
    "OwnerGoneError",
    "ProtocolError",
    "JobRecord",
    "Engine",
    "FORMAT_VERSION",
]

FORMAT_VERSION: Final[int]

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

class ProtocolError(StorageError):
    """This process and the store's owner could not talk (another kathikon version, or a bad
    frame)."""

@final
class JobRecord:
    """A job as stored; times are microseconds since the Unix epoch (UTC)."""

    @property
    def id(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def worker(self) -> str: ...
    @property
    def args_json(self) -> str: ...
    @property
    def meta_json(self) -> str: ...
    @property
    def tags(self) -> list[str]: ...
    @property
    def attempt(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def errors(self) -> list[tuple[int, int, str]]:
        """``(at, attempt, error)`` per entry, oldest first."""
    @property
    def inserted_at(self) -> int: ...
    @property
    def scheduled_at(self) -> int: ...
    @property
    def attempted_at(self) -> Optional[int]: ...
    @property
    def completed_at(self) -> Optional[int]: ...
    @property
    def cancelled_at(self) -> Optional[int]: ...
    @property
    def discarded_at(self) -> Optional[int]: ...

# Stub-only aliases (private, so stubtest does not look for them at run time).
_NewJobRow: TypeAlias = tuple[str, str, str, str, list[str], int, int, Optional[int]]
"""(queue, worker, args_json, meta_json, tags, max_attempts, priority, scheduled_at_us)"""

_AckRow: TypeAlias = tuple[int, int, str, Optional[str], Optional[int]]
"""(id, attempt, kind, text, delay_us); kind: complete, fail, snooze, cancel, discard"""

@final
class Engine:
    """The job engine over one store; every blocking call releases the GIL."""

    def __new__(
        cls,
        path: Optional[str],
        *,
        fsync: bool = True,
        scheduler_interval: float = 1.0,
        prune_interval: float = 30.0,
        retention_period: float = 86400.0,
        manual_clock: Optional[int] = None,
        connect: bool = True,
        lease: float = 30.0,
    ) -> Engine: ...
    @property
    def role(self) -> str:
        """``"owner"`` or ``"client"``."""
    @property
    def owner_pid(self) -> int: ...
    @property
    def serve_error(self) -> Optional[str]:
        """Why this owner does not serve the store to other processes, or ``None``."""
    def advance_clock(self, seconds: float) -> None:
        """Move a manual clock (µs start given as ``manual_clock``) by ``seconds``."""
    def counts(self) -> builtins.list[tuple[str, str, int]]:
        """``(queue, state, count)`` for every non-empty pair."""
    def quarantined(self) -> builtins.list[tuple[int, int, str, bytes]]:
        """``(id, quarantined_at µs, reason, bytes)`` of every record moved aside."""
    def oldest_available(self, queue: str) -> Optional[int]: ...
    def insert(self, jobs: list[_NewJobRow]) -> list[JobRecord]:
        """Insert jobs in one commit (all or none); durable on return with fsync."""
    def claim(self, queue: str, max: int, timeout: float) -> list[JobRecord]:
        """Claim up to ``max`` jobs, waiting up to ``timeout`` s; durably marked executing."""
    def ack(self, acks: list[_AckRow], wait: bool = True) -> list[Optional[JobRecord]]:
        """Record outcomes; ``None`` where the ack was stale."""
    def cancel(self, id: int) -> tuple[JobRecord, str]:
        """Cancel; returns the job and the state it was in before."""
    def retry(self, id: int) -> JobRecord: ...
    def get(self, id: int) -> JobRecord: ...
    def list(
        self,
        state: Optional[str] = None,
        queue: Optional[str] = None,
        worker: Optional[str] = None,
        after: Optional[int] = None,
        limit: int = 0,
    ) -> builtins.list[JobRecord]: ...
    def prune(self, older_than: float) -> int: ...
    def sync(self, promote_until: Optional[int] = None) -> None:
        """Wait until everything sent so far is committed and due jobs are promoted (also
        those due before ``promote_until`` µs, when given)."""
    def interrupt(self, queue: str) -> None: ...
    def ready_count(self, queue: str) -> int: ...
    @property
    def recovery(self) -> tuple[int, int]:
        """``(rescued, discarded)`` at open."""
    def now(self) -> int: ...
    def set_events(self, on: bool) -> None: ...
    def next_events(self, timeout: float) -> builtins.list[tuple[str, dict[str, Any]]]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
