"""Batches: jobs inserted as a group, with callback jobs inserted once when the group is done
(``app.insert_batch``, ``app.batch``).

The store counts a batch's members per state in the transaction of every change, and when the
last unfinished member finishes, the same transaction marks the batch finished and inserts
each callback whose condition holds, once, whatever crashes. The conditions are Oban Pro's:

============== ==========================================================
``on_completed`` every member completed
``on_discarded`` every member finished, at least one discarded
``on_cancelled`` every member finished, at least one cancelled
``on_finished``  every member finished, in whatever state
============== ==========================================================

A callback is an ordinary job of its worker, with the batch's ``args``; its ``meta["batch"]``
says which batch and event it is for, with the members' final counts
(:class:`BatchCallback` reads it).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional

from .errors import InvalidJobError
from .job import Job, from_micros

if TYPE_CHECKING:
    from ._native import JobSpec

#: The callback events, in the order callbacks are inserted.
EVENTS = ("completed", "discarded", "cancelled", "finished")


@dataclass(frozen=True)
class Batch:
    """A batch as ``app.insert_batch`` stored it: its id and the jobs this call inserted."""

    id: str
    jobs: list[Job]


@dataclass(frozen=True)
class BatchStatus:
    """A batch as last committed (``app.batch(batch_id)``)."""

    id: str
    #: Members per state, every state named (``"available"``, ``"completed"``, …). A member
    #: pruned after it finished stays counted; one deleted unfinished leaves the batch.
    counts: dict[str, int]
    created_at: datetime
    #: When its last unfinished member finished; None while some member is unfinished.
    finished_at: Optional[datetime]
    #: Per callback event given (``"completed"``, …): the id of the callback job inserted for
    #: it, or None (not finished yet, or its condition did not hold).
    callbacks: dict[str, Optional[int]]

    @property
    def total(self) -> int:
        """Members counted, in every state."""
        return sum(self.counts.values())

    @property
    def pending(self) -> int:
        """Members not finished yet."""
        return self.total - sum(self.counts[s] for s in ("completed", "cancelled", "discarded"))

    @property
    def finished(self) -> bool:
        """Whether every member finished (and the callbacks whose conditions held were
        inserted)."""
        return self.finished_at is not None


@dataclass(frozen=True)
class BatchCallback:
    """What a callback job was inserted for, read from its ``meta["batch"]``."""

    batch_id: str
    #: ``"completed"``, ``"discarded"``, ``"cancelled"`` or ``"finished"``.
    event: str
    #: The members' final counts: ``{"completed": n, "cancelled": n, "discarded": n}``.
    counts: dict[str, int]
    total: int

    @classmethod
    def of(cls, job: Job) -> Optional[BatchCallback]:
        """The batch callback ``job`` is, or None for any other job."""
        info = job.meta.get("batch") if isinstance(job.meta, Mapping) else None
        if not isinstance(info, Mapping):
            return None
        return cls(
            batch_id=str(info["id"]),
            event=str(info["event"]),
            counts={str(k): int(v) for k, v in info["counts"].items()},
            total=int(info["total"]),
        )


def new_batch_id() -> str:
    """A fresh batch id (a random UUID, as text)."""
    return str(uuid.uuid4())


def check_batch_id(batch_id: Any) -> str:
    """``batch_id`` checked to be a string (the store checks its length and characters)."""
    if not isinstance(batch_id, str):
        raise InvalidJobError(
            f"batch_id={batch_id!r} must be a str (or None, for a new batch with a fresh id)"
        )
    return batch_id


def status_of(row: tuple[Any, ...]) -> BatchStatus:
    """A :class:`BatchStatus` from the native engine's row."""
    batch_id, created_at, counts, finished_at, callbacks = row
    return BatchStatus(
        id=batch_id,
        counts=dict(counts),
        created_at=from_micros(created_at),
        finished_at=None if finished_at is None else from_micros(finished_at),
        callbacks={event: job_id for event, _worker, job_id in callbacks},
    )


def callback_specs(given: Mapping[str, Optional[JobSpec]]) -> list[tuple[str, JobSpec]]:
    """The callbacks given, as the native insert takes them: ``[(event, spec), …]``."""
    return [(event, spec) for event, spec in given.items() if spec is not None]
