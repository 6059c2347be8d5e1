"""The :class:`Job` users see (a Rust class, ``kathikon._native.Job``: see
``rust/kathikon-py/src/job.rs`` for why), and :class:`JobState`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import TypedDict

from ._native import Job
from .vocabulary import JOB_STATES

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


_LATEST = datetime.max.replace(tzinfo=timezone.utc)
_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


def from_micros(us: int) -> datetime:
    """Exact conversion of engine time (µs since the epoch) to an aware UTC datetime.

    Inserts refuse times outside ``datetime``'s range (years 1 to 9999), but a store written
    by an earlier version may hold one: it reads as the nearest representable time, so that
    listing or showing such a job never fails."""
    try:
        return _EPOCH + timedelta(microseconds=us)
    except OverflowError:
        return _LATEST if us > 0 else _EARLIEST


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

# The members are spelled here so that type checkers and docs see them; the core defines the
# names (`JobState::ALL`), and a mismatch would turn stored states into the wrong members.
if tuple(state.value for state in JobState) != JOB_STATES:  # pragma: no cover
    raise ImportError(
        f"kathikon.JobState {tuple(state.value for state in JobState)} does not match the "
        f"engine's job states {JOB_STATES}; the installed kathikon is inconsistent, reinstall it"
    )


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


__all__ = ["Job", "JobErrorEntry", "JobState", "QuarantinedRecord", "from_micros"]
