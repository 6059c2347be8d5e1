""":class:`QueueCheck`: whether a running process serves a queue (``app.check_queue``,
``kathikon stats``).

The store's owner sees every claim, its own workers' and its clients' over the socket, and
remembers per queue the process that claimed last and when its claim's wait ended. A worker
lane that is idle asks again at least every ``poll_interval`` (a client every quarter second),
so a queue whose last claim ended longer ago than ``SERVED_WITHIN`` (5 s) and that runs no job
has no running worker: its available jobs wait until one is started for it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Optional

from .limits import GlobalLimit, LimitUsage, RateLimit

#: Seconds after its last claim that a queue still counts as served (claims come at least
#: every ``poll_interval``, 1 s by default; lanes busy with jobs show as executing jobs).
SERVED_WITHIN = 5.0

#: What :attr:`QueueCheck.summary` and ``kathikon stats`` say of a queue nobody serves.
NOT_SERVED = "no process runs it"


@dataclass(frozen=True)
class QueueCheck:
    """One queue as the store sees it now (``app.check_queue(name)``)."""

    queue: str
    """The queue's name."""
    available: int
    """Jobs ready to run now."""
    executing: int
    """Jobs running now."""
    oldest_available: Optional[datetime]
    """When the longest-waiting available job became due (``None`` if none is available)."""
    claimer_pid: Optional[int]
    """The process that claimed from the queue last, since the store's owner opened it
    (``None``: no process has claimed from it since)."""
    idle: Optional[float]
    """Seconds since that claim's wait ended (0.0 while a worker waits on the queue)."""
    paused: bool = False
    """Paused (``app.pause_queue``): no job of it starts until it is resumed."""
    stopped: bool = False
    """Stopped (``app.stop_queue``): no worker claims from it; its jobs stay stored."""
    started: Optional[int] = None
    """Started at runtime (``app.start_queue``) with this concurrency."""
    concurrency: Optional[int] = None
    """How many of its jobs a worker of this app runs at once: the scaled concurrency
    (``app.scale_queue``), else the configured one, else the one it was started with; 0 when
    stopped; ``None`` if no worker of this app runs it."""
    configured_concurrency: Optional[int] = None
    """Its concurrency in this app's constructor (``None``: not declared there)."""
    global_limit: Optional[GlobalLimit] = None
    """At most this many of its jobs executing at once over the whole store
    (``app.scale_queue(queue, global_limit=...)``)."""
    rate_limit: Optional[RateLimit] = None
    """At most this many of its jobs starting per sliding period over the whole store."""
    limit_usage: Optional[LimitUsage] = None
    """How much of those limits is in use now, per partition (``None`` without limits)."""

    @property
    def running(self) -> int:
        """Jobs running now (the same as :attr:`executing`)."""
        return self.executing

    def to_dict(self) -> dict[str, object]:
        """Every field, with ``oldest_available`` as ISO 8601 text, and ``served``."""
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        oldest = self.oldest_available
        out["oldest_available"] = None if oldest is None else oldest.isoformat()
        out["served"] = self.served
        return out

    @property
    def served(self) -> bool:
        """Whether a running process works this queue: it claimed from it within the last
        5 seconds (``SERVED_WITHIN``), or jobs it claimed are still running."""
        if self.idle is None:
            return False
        return self.idle <= SERVED_WITHIN or self.executing > 0

    @property
    def summary(self) -> str:
        """One line for people, e.g. ``served by pid 4121`` or ``no process runs it: 3 jobs
        available``."""
        jobs = f"{self.available} job{'' if self.available == 1 else 's'} available"
        if self.paused:
            return f"paused ({jobs}); resume it with app.resume_queue({self.queue!r})"
        if self.stopped:
            return f"stopped ({jobs}); run it again with app.start_queue({self.queue!r})"
        if self.served:
            return f"served by pid {self.claimer_pid}"
        if self.claimer_pid is None:
            why = "no worker has claimed from it since its owner opened the store"
        else:
            why = f"pid {self.claimer_pid} last claimed from it {self.idle:.0f} s ago"
        waiting = (
            f"{self.available} job{'' if self.available == 1 else 's'} available, "
            if self.available
            else ""
        )
        return f"{NOT_SERVED}: {waiting}{why}; start a worker for queue {self.queue!r}"


__all__ = ["NOT_SERVED", "SERVED_WITHIN", "QueueCheck"]
