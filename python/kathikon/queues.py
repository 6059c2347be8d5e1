"""Queues controlled at runtime: ``app.pause_queue``, ``resume_queue``, ``scale_queue``,
``start_queue`` and ``stop_queue`` (oban-py's names), and what a runner makes of them.

A change is stored in the store (beside the jobs, written by its one writer), so it reaches
every process of the store and outlives restarts and a takeover of the owner:

- **pause** is exact: once ``pause_queue`` returns, no job of the queue starts in any process
  (the owner refuses its claims); running jobs finish. ``resume_queue`` wakes idle workers at
  once.
- **scale**, **start** and **stop** change how each worker runs the queue. Every runner polls
  the stored settings every :data:`SETTINGS_POLL` seconds (a cheap call, answered from the
  owner's memory, skipped when unchanged) and adjusts its threads, so a change reaches every
  worker process within a second. A scaled concurrency replaces the configured one with the
  same meaning: per worker (``app.start()``, ``kathikon worker``), split between the
  processes of a ``processes=N`` pool as configured concurrency is.

``local_only=True`` (as Oban's) changes only this process's runner and stores nothing.

``scale_queue(..., global_limit=, rate_limit=)`` sets the queue's limits (see
:mod:`kathikon.limits`), enforced by the owner for every process; they have no
``local_only`` form.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional, Union

from . import telemetry
from .errors import ConfigurationError, UnknownQueueError
from .limits import (
    UNSET,
    GlobalLimit,
    GlobalLimitSpec,
    LimitUsage,
    RateLimit,
    RateLimitSpec,
    Unset,
    global_from_json,
    global_json,
    parse_global,
    parse_rate,
    rate_from_json,
    rate_json,
)
from .options import shown

if TYPE_CHECKING:
    from ._native import Engine
    from .app import Kathikon

#: Seconds between a runner's looks at the stored settings.
SETTINGS_POLL = 0.25

#: The largest concurrency a change accepts (the store keeps it as a 32-bit number).
MAX_CONCURRENCY = 2**32 - 1

#: The changes, each also the last part of its telemetry event ``("kathikon", "queue", …)``.
CHANGES = ("pause", "resume", "scale", "start", "stop")

#: The telemetry events of queue changes.
EVENTS = tuple(("kathikon", "queue", change) for change in CHANGES)

#: The limit changes (their telemetry event is ``("kathikon", "queue", "scale")``).
LIMIT_CHANGES = ("global_limit", "rate_limit")

#: A stored row as the engine gives it: ``(queue, paused, concurrency, started, stopped,
#: global_limit JSON, rate_limit JSON)``.
Row = tuple[str, bool, Optional[int], Optional[int], bool, Optional[str], Optional[str]]


@dataclass(frozen=True)
class QueueSettings:
    """A queue's settings changed at runtime (all defaults: nobody changed it)."""

    queue: str
    """The queue's name."""
    paused: bool = False
    """No job of it starts until ``resume_queue``."""
    concurrency: Optional[int] = None
    """Set by ``scale_queue``: every worker runs it at this concurrency instead of its
    configured one (``None``: the configured one)."""
    started: Optional[int] = None
    """Started at runtime by ``start_queue`` with this concurrency: every worker runs it and
    it may be inserted into, though the app's constructor does not declare it."""
    stopped: bool = False
    """Stopped by ``stop_queue``: no worker claims from it; its jobs stay stored."""
    global_limit: Optional[GlobalLimit] = None
    """At most this many of its jobs executing at once over the whole store."""
    rate_limit: Optional[RateLimit] = None
    """At most this many of its jobs starting per sliding period over the whole store."""

    @classmethod
    def from_row(cls, row: Row) -> QueueSettings:
        queue, paused, concurrency, started, stopped, global_limit, rate_limit = row
        return cls(
            queue,
            paused,
            concurrency,
            started,
            stopped,
            global_from_json(global_limit),
            rate_from_json(rate_limit),
        )

    def merged(self, local: Optional[QueueSettings]) -> QueueSettings:
        """These stored settings with a ``local_only`` change's on top."""
        if local is None:
            return self
        return QueueSettings(
            self.queue,
            self.paused or local.paused,
            local.concurrency if local.concurrency is not None else self.concurrency,
            local.started if local.started is not None else self.started,
            self.stopped or local.stopped,
            self.global_limit,
            self.rate_limit,
        )

    def concurrency_here(self, configured: Optional[int], paused_here: bool = False) -> int:
        """How many jobs of the queue a worker runs at once: 0 when stopped (or paused by a
        ``local_only`` change: a stored pause is enforced by the owner instead), else the
        scaled concurrency, the configured one, or the one it was started with."""
        if self.stopped or paused_here:
            return 0
        for value in (self.concurrency, configured, self.started):
            if value is not None:
                return value
        return 0


def stored(engine: Engine) -> tuple[int, dict[str, QueueSettings]]:
    """The settings' generation and every queue with stored settings."""
    generation, rows = engine.queue_settings()
    return generation, {row[0]: QueueSettings.from_row(row) for row in rows}


def check_known(app: Kathikon, queue: object, call: str) -> str:
    """``queue`` if it is a queue this app may change: declared in its constructor, or with
    stored settings (started at runtime, or changed by another app of the store)."""
    if not isinstance(queue, str) or not queue:
        raise ConfigurationError(f"{call}({shown(queue)}): pass a queue name (a str)")
    if queue in app.config.queues or queue in stored(app._engine)[1]:
        return queue
    raise UnknownQueueError(
        f"{call}({queue!r}): queue {queue!r} is neither configured in this app nor started "
        f"at runtime; configured queues: {', '.join(app.config.queues)} (start it with "
        f"app.start_queue({queue!r}, concurrency))"
    )


def change(
    app: Kathikon,
    queue: str,
    what: str,
    concurrency: Optional[int] = None,
    local_only: bool = False,
    limit: Optional[str] = None,
) -> QueueSettings:
    """Apply one change (one of :data:`CHANGES`, or of :data:`LIMIT_CHANGES` with ``limit``
    in the engine's JSON form, checked by :mod:`kathikon.limits`) to ``queue``: stored for
    every process, or with ``local_only`` for this process's runner alone. Returns the
    settings as they now are (stored ones, with this process's local changes on top)."""
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise ConfigurationError(
            f"{what}_queue({queue!r}, {shown(concurrency)}): concurrency must be an int of at "
            f"least 1{' (or None: back to the configured one)' if what == 'scale' else ''}; "
            "to run none of its jobs, pause or stop the queue"
        )
    if concurrency is not None and concurrency > MAX_CONCURRENCY:
        raise ConfigurationError(
            f"{what}_queue({queue!r}, {concurrency}): concurrency must be at most {MAX_CONCURRENCY}"
        )
    if local_only:
        settings = app._local_queues.change(queue, what, concurrency)
    else:
        row = app._engine.set_queue(queue, what, concurrency, limit)
        settings = QueueSettings.from_row(row).merged(app._local_queues.get(queue))
    event = ("kathikon", "queue", "scale" if what in LIMIT_CHANGES else what)
    if telemetry.has_handlers(event):
        metadata = {
            "queue": queue,
            "paused": settings.paused,
            "concurrency": settings.concurrency,
            "started": settings.started,
            "stopped": settings.stopped,
            "global_limit": settings.global_limit,
            "rate_limit": settings.rate_limit,
            "local_only": local_only,
        }
        telemetry.execute(event, {}, metadata)
    return settings


def scale(
    app: Kathikon,
    queue: str,
    concurrency: Union[int, None, Unset],
    global_limit: Union[GlobalLimitSpec, Unset],
    rate_limit: Union[RateLimitSpec, Unset],
    local_only: bool,
) -> QueueSettings:
    """``app.scale_queue``: each setting passed is changed (limits are checked first, so a
    bad one changes nothing); none passed is a ``ConfigurationError``."""
    if concurrency is UNSET and global_limit is UNSET and rate_limit is UNSET:
        raise ConfigurationError(
            f"scale_queue({queue!r}): pass a concurrency, global_limit= or rate_limit=, "
            f"e.g. app.scale_queue({queue!r}, 20)"
        )
    limits: list[tuple[str, Optional[str]]] = []
    if global_limit is not UNSET:
        limits.append(("global_limit", global_json(parse_global(queue, global_limit))))
    if rate_limit is not UNSET:
        limits.append(("rate_limit", rate_json(parse_rate(queue, rate_limit))))
    if limits and local_only:
        raise ConfigurationError(
            f"scale_queue({queue!r}, local_only=True): limits hold for every process of the "
            "store and have no local form; leave out local_only to change them"
        )
    settings = None
    for what, limit in limits:
        settings = change(app, queue, what, limit=limit)
    if concurrency is not UNSET:
        settings = change(app, queue, "scale", concurrency, local_only)
    assert settings is not None
    return settings


def usage(engine: Engine, settings: QueueSettings) -> Optional[LimitUsage]:
    """How much of the queue's limits is in use, if it has any (one call to the owner)."""
    if settings.global_limit is None and settings.rate_limit is None:
        return None
    executing, window = engine.limit_usage(settings.queue)
    return {"executing": dict(executing), "window": dict(window)}


def apply_declared(app: Kathikon) -> None:
    """Store the limits the app's queue settings declare (see
    :class:`kathikon.limits.Declared`) where they differ from the stored ones."""
    if not app.config.limits:
        return
    now = stored(app._engine)[1]
    for queue, declared in app.config.limits.items():
        current = now.get(queue, QueueSettings(queue))
        if declared.global_limit is not UNSET and declared.global_limit != current.global_limit:
            app._engine.set_queue(queue, "global_limit", None, global_json(declared.global_limit))
        if declared.rate_limit is not UNSET and declared.rate_limit != current.rate_limit:
            app._engine.set_queue(queue, "rate_limit", None, rate_json(declared.rate_limit))


class LocalQueues:
    """This process's ``local_only`` changes, which its runner applies on top of the stored
    settings; :attr:`generation` moves on with each, so the runner notices."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_queue: dict[str, QueueSettings] = {}
        self.generation = 0

    def get(self, queue: str) -> Optional[QueueSettings]:
        return self._by_queue.get(queue)

    def all(self) -> dict[str, QueueSettings]:
        with self._lock:
            return dict(self._by_queue)

    def change(self, queue: str, what: str, concurrency: Optional[int]) -> QueueSettings:
        with self._lock:
            now = self._by_queue.get(queue, QueueSettings(queue))
            if what == "pause":
                now = replace(now, paused=True)
            elif what == "resume":
                now = replace(now, paused=False)
            elif what == "scale":
                now = replace(now, concurrency=concurrency)
            elif what == "start":
                started = concurrency if concurrency is not None else now.started
                now = replace(now, started=started, stopped=False)
            else:
                now = replace(now, stopped=True)
            self._by_queue[queue] = now
            self.generation += 1
            return now


def plan(
    configured: dict[str, int],
    settings: dict[str, QueueSettings],
    local: dict[str, QueueSettings],
    share: tuple[int, int],
) -> dict[str, int]:
    """How many jobs of each queue a runner runs at once: its configured queues (``configured``:
    its share of them, in a pool) and every queue started at runtime, with the stored
    settings and this process's local changes applied. A runtime concurrency is split as a
    pool splits configured ones: ``share`` is ``(this process's index, processes)``."""
    out: dict[str, int] = {}
    for queue in {*configured, *settings, *local}:
        stored_ = settings.get(queue, QueueSettings(queue))
        mine = local.get(queue)
        merged = stored_.merged(mine)
        if queue not in configured and merged.started is None:
            continue
        runtime = QueueSettings(
            queue,
            concurrency=_share(merged.concurrency, share),
            started=_share(merged.started, share),
            stopped=merged.stopped,
        )
        paused_here = mine is not None and mine.paused
        out[queue] = runtime.concurrency_here(configured.get(queue), paused_here)
    return out


def _share(concurrency: Optional[int], share: tuple[int, int]) -> Optional[int]:
    if concurrency is None:
        return None
    index, processes = share
    base, extra = divmod(concurrency, processes)
    return base + (1 if index < extra else 0)


__all__ = ["CHANGES", "EVENTS", "LIMIT_CHANGES", "SETTINGS_POLL", "LocalQueues", "QueueSettings"]
