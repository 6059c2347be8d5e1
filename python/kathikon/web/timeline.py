"""A job's timeline on its page: the state changes its record tells, in time order.

Built from what the store keeps: when it was inserted and scheduled, each failed attempt's
end with its error (``job.errors``), when its latest attempt started (``attempted_at``), and
when it completed, was cancelled or discarded. The store keeps no start time for earlier
attempts, so those show when they ended, with their error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from ..job import Job, JobState


@dataclass(frozen=True)
class Event:
    at: datetime
    kind: str
    """``inserted``, ``scheduled``, ``started``, ``failed``, ``completed``, ``cancelled``,
    ``discarded`` or ``retry`` (the next attempt's due time); a CSS class and a test hook."""
    text: str
    error: Optional[str] = None
    """The attempt's traceback (or Cancel/Discard reason), for ``failed`` events."""
    attempt: Optional[int] = None

    @property
    def summary(self) -> str:
        """The error's last line (a traceback's exception and message)."""
        lines = [line for line in (self.error or "").splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""


def timeline(job: Job) -> list[Event]:
    """``job``'s events, oldest first (ties keep their causal order)."""
    events = [Event(job.inserted_at, "inserted", f"inserted into queue {job.queue}")]
    waiting = job.state in (JobState.SCHEDULED, JobState.RETRYABLE)
    # `scheduled_at` is the next attempt's due time: before any attempt, the insert's
    # schedule; after one, the retry's (the first schedule is then no longer kept).
    if job.attempt == 0 and job.scheduled_at > job.inserted_at:
        events.append(Event(job.scheduled_at, "scheduled", "due to run (scheduled)"))
    for entry in job.errors:
        events.append(
            Event(
                entry["at"],
                "failed",
                f"attempt {entry['attempt']} of {job.max_attempts} ended with an error",
                entry["error"],
                entry["attempt"],
            )
        )
    if job.attempted_at is not None and job.attempt > 0:
        events.append(
            Event(
                job.attempted_at,
                "started",
                f"attempt {job.attempt} of {job.max_attempts} started",
                attempt=job.attempt,
            )
        )
    if waiting and job.attempt > 0:
        events.append(Event(job.scheduled_at, "retry", "next attempt due"))
    for kind, at in (
        ("completed", job.completed_at),
        ("cancelled", job.cancelled_at),
        ("discarded", job.discarded_at),
    ):
        if at is not None:
            events.append(Event(at, kind, kind))
    order = {"inserted": 0, "scheduled": 1, "started": 2, "failed": 3, "retry": 4}
    return sorted(events, key=lambda e: (e.at, order.get(e.kind, 5)))
