"""The :class:`Job` users see, and :class:`JobState`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, Optional, TypedDict

from ._native import JobRecord

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def from_micros(us: int) -> datetime:
    """Exact conversion of engine time (µs since the epoch) to an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


def _maybe(us: Optional[int]) -> Optional[datetime]:
    return None if us is None else from_micros(us)


class JobState(str, Enum):
    """Where a job is in its life: waiting (scheduled, available, retryable), executing, or
    finished (completed, cancelled, discarded)."""

    SCHEDULED = "scheduled"
    AVAILABLE = "available"
    EXECUTING = "executing"
    RETRYABLE = "retryable"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    DISCARDED = "discarded"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """Completed, cancelled or discarded: the job will not run again unless retried."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.CANCELLED, JobState.DISCARDED})


class JobErrorEntry(TypedDict):
    """One entry of :attr:`Job.errors` (a plain dict at run time)."""

    at: datetime
    """When the attempt ended (aware, UTC)."""
    attempt: int
    """The attempt it ended (1 = the first run)."""
    error: str
    """The traceback of what was raised, or the ``Cancel`` / ``Discard`` reason."""


class QuarantinedRecord(TypedDict):
    """A job record found damaged on disk and moved aside (``app.quarantined()``; a plain dict
    at run time). The job is gone from claims, lists and stats; ``app.get(id)`` raises
    :class:`~kathikon.CorruptStoreError` naming it."""

    id: int
    """The job's id."""
    quarantined_at: datetime
    """When it was moved aside (aware, UTC)."""
    reason: str
    """What the decoder found, e.g. ``job 7: record checksum mismatch (…)``."""
    data: bytes
    """The record's bytes as found, for forensics."""


class Job:
    """A stored job, as of when it was read. Immutable; read it again with ``app.get(id)``.

    Attributes mirror the store: ``id``, ``state``, ``queue``, ``worker`` (the registered
    name), ``args`` and ``meta`` (dicts decoded from JSON), ``tags``, ``attempt``,
    ``max_attempts``, ``priority`` (0 runs first), ``errors`` (a list of
    ``{"at": datetime, "attempt": int, "error": str}``), and the aware UTC datetimes
    ``inserted_at``, ``scheduled_at``, ``attempted_at``, ``completed_at``, ``cancelled_at``,
    ``discarded_at``.
    """

    __slots__ = ("_args", "_meta", "_record")

    def __init__(self, record: JobRecord) -> None:
        self._record = record
        self._args: Optional[dict[str, Any]] = None
        self._meta: Optional[dict[str, Any]] = None

    @property
    def id(self) -> int:
        return self._record.id

    @property
    def state(self) -> JobState:
        return JobState(self._record.state)

    @property
    def queue(self) -> str:
        return self._record.queue

    @property
    def worker(self) -> str:
        return self._record.worker

    @property
    def args(self) -> dict[str, Any]:
        if self._args is None:
            decoded: dict[str, Any] = json.loads(self._record.args_json)
            self._args = decoded
            return decoded
        return self._args

    @property
    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            decoded: dict[str, Any] = json.loads(self._record.meta_json)
            self._meta = decoded
            return decoded
        return self._meta

    @property
    def tags(self) -> list[str]:
        return self._record.tags

    @property
    def attempt(self) -> int:
        return self._record.attempt

    @property
    def max_attempts(self) -> int:
        return self._record.max_attempts

    @property
    def priority(self) -> int:
        return self._record.priority

    @property
    def errors(self) -> list[JobErrorEntry]:
        return [
            {"at": from_micros(at), "attempt": attempt, "error": error}
            for at, attempt, error in self._record.errors
        ]

    @property
    def inserted_at(self) -> datetime:
        return from_micros(self._record.inserted_at)

    @property
    def scheduled_at(self) -> datetime:
        return from_micros(self._record.scheduled_at)

    @property
    def attempted_at(self) -> Optional[datetime]:
        return _maybe(self._record.attempted_at)

    @property
    def completed_at(self) -> Optional[datetime]:
        return _maybe(self._record.completed_at)

    @property
    def cancelled_at(self) -> Optional[datetime]:
        return _maybe(self._record.cancelled_at)

    @property
    def discarded_at(self) -> Optional[datetime]:
        return _maybe(self._record.discarded_at)

    def __repr__(self) -> str:
        return (
            f"Job(id={self.id}, state={self.state.value!r}, queue={self.queue!r}, "
            f"worker={self.worker!r}, attempt={self.attempt}/{self.max_attempts})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Job):
            return NotImplemented
        r, o = self._record, other._record
        return (r.id, r.state, r.attempt, r.scheduled_at) == (
            o.id,
            o.state,
            o.attempt,
            o.scheduled_at,
        )

    def __hash__(self) -> int:
        return hash((self.id, self._record.state, self._record.attempt))
