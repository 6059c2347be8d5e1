"""Telemetry: named events with measurements and metadata, as Oban and ``:telemetry`` do it.

Events are tuples. Handlers receive ``(event, measurements, metadata)``:

===========================================  ==============================  ======================
event                                        measurements                    metadata
===========================================  ==============================  ======================
``("kathikon", "job", "insert")``            ``count``, ``duration``         ``jobs``, ``conflict``
``("kathikon", "job", "start")``             ``queue_time``                  ``job``
``("kathikon", "job", "stop")``              ``duration``, ``queue_time``    ``job``, ``outcome``, …
``("kathikon", "job", "retry")``             ``duration``, ``delay``         ``job``, ``error``
``("kathikon", "job", "discard")``           ``duration``                    ``job``, ``reason``
``("kathikon", "job", "cancel")``            ``duration``                    ``job``, ``reason``
``("kathikon", "job", "snooze")``            ``duration``, ``delay``         ``job``
``("kathikon", "job", "sleep")``             ``duration``, ``delay``         ``job``
``("kathikon", "job", "prune")``             ``count``                       (none)
``("kathikon", "job", "quarantine")``        ``count``                       ``id``, ``reason``
``("kathikon", "scheduler", "tick")``        ``promoted``, ``duration``      (none)
``("kathikon", "pruner", "tick")``           ``pruned``, ``duration``        (none)
``("kathikon", "dispatcher", "poll")``       ``claimed``, ``demand``         ``queue``
``("kathikon", "queue", "pause")``           (none)                          ``queue``, settings
``("kathikon", "queue", "resume")``          (none)                          ``queue``, settings
``("kathikon", "queue", "scale")``           (none)                          ``queue``, settings
``("kathikon", "queue", "start")``           (none)                          ``queue``, settings
``("kathikon", "queue", "stop")``            (none)                          ``queue``, settings
``("kathikon", "cron", "insert")``           ``lateness``                    ``name``, ``slot``, …
===========================================  ==============================  ======================

``job.insert``'s ``conflict`` is true when a unique insert returned an existing job (each such
job has ``job.conflict`` set).

``job.stop``'s ``outcome`` is ``complete``, ``fail``, ``snooze``, ``cancel``, ``discard``,
``interrupt`` (handed back by a shutdown whose grace period ran out) or ``ignored`` (the store
refused the result: the job had been cancelled or rescued meanwhile). Its metadata also
holds ``error``, the failure's traceback, the ``Cancel``/``Discard`` reason, or for a
``complete`` why the value returned was not kept as its result (else None), and
``registered``, whether this process has the job's worker.

``job`` is the :class:`~kathikon.Job` as claimed (``retry``/``discard``/… carry the job as it
stands after the outcome was stored). Durations are seconds. ``dispatcher.poll`` is one claim by
one of a queue's lanes: ``demand`` is how many jobs it asked for, ``claimed`` how many it got.
``queue.*`` is a change by ``app.pause_queue`` and its siblings (or the CLI), emitted by
the process that made it; its metadata holds the queue's settings as they now are
(``paused``, ``concurrency``, ``started``, ``stopped``) and ``local_only``.
``job.quarantine`` is a job record found damaged on disk and moved aside (``app.quarantined()``).
``job.sleep`` is the seed's name for a snooze: it comes with every ``job.snooze``, with the same
measurements and metadata, so attach to one of the two.
``cron.insert`` is one job a cron entry's slot inserted, reported by the process that owns the
store (it fires the crontab): ``lateness`` is the seconds from the slot to the insert, the
metadata ``name`` (the entry's), ``slot`` (an aware UTC datetime) and ``job_id``.

Emitting costs one dict lookup when nobody is attached. A handler that raises (anything,
``KeyboardInterrupt`` and ``SystemExit`` included) is detached and the error logged; it never
reaches the job or the worker.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional

from .errors import ConfigurationError

Event = tuple[str, ...]
# What a handler returns is ignored, so any return type is accepted.
Handler = Callable[[Event, Mapping[str, Any], Mapping[str, Any]], object]

EVENTS: tuple[Event, ...] = (
    ("kathikon", "job", "insert"),
    ("kathikon", "job", "start"),
    ("kathikon", "job", "stop"),
    ("kathikon", "job", "retry"),
    ("kathikon", "job", "discard"),
    ("kathikon", "job", "cancel"),
    ("kathikon", "job", "snooze"),
    ("kathikon", "job", "prune"),
    ("kathikon", "job", "quarantine"),
    ("kathikon", "scheduler", "tick"),
    ("kathikon", "pruner", "tick"),
    ("kathikon", "dispatcher", "poll"),
    ("kathikon", "job", "sleep"),
    ("kathikon", "queue", "pause"),
    ("kathikon", "queue", "resume"),
    ("kathikon", "queue", "scale"),
    ("kathikon", "queue", "start"),
    ("kathikon", "queue", "stop"),
    ("kathikon", "cron", "insert"),
)

# Events produced by the engine's own threads; the app collects them only while someone
# listens to one of these.
ENGINE_EVENTS = frozenset(
    {
        ("kathikon", "scheduler", "tick"),
        ("kathikon", "pruner", "tick"),
        ("kathikon", "job", "prune"),
        ("kathikon", "job", "quarantine"),
        ("kathikon", "cron", "insert"),
    }
)

POLL_EVENT: Event = ("kathikon", "dispatcher", "poll")

#: The seed's name for a snooze, emitted with every ``("kathikon", "job", "snooze")``.
SLEEP_EVENT: Event = ("kathikon", "job", "sleep")

_log = logging.getLogger("kathikon.telemetry")
_lock = threading.Lock()
# event → {handler_id: handler}; replaced wholesale on change so emitters never need the lock.
_handlers: dict[Event, dict[str, Handler]] = {}
_watchers: list[Callable[[], None]] = []


def attach(handler_id: str, events: Iterable[Event], handler: Handler) -> None:
    """Call ``handler(event, measurements, metadata)`` for each of ``events``.

    Raises:
        ConfigurationError: ``handler_id`` is already attached, an event is unknown, or the
            handler is not callable.
    """
    if isinstance(events, (str, tuple)) and events and isinstance(next(iter(events)), str):
        raise ConfigurationError(
            f"events={events!r} looks like a single event; pass a list of event tuples, "
            'e.g. [("kathikon", "job", "stop")]'
        )
    events = [tuple(e) for e in events]
    if not callable(handler):
        raise ConfigurationError(f"handler {handler!r} is not callable")
    for event in events:
        if event not in EVENTS:
            raise ConfigurationError(
                f"unknown telemetry event {event!r}; known events: {', '.join(map(str, EVENTS))}"
            )
    global _handlers
    with _lock:
        if any(handler_id in hs for hs in _handlers.values()):
            raise ConfigurationError(
                f"a telemetry handler with id {handler_id!r} is already attached; "
                "detach it first or pick another id"
            )
        new = {e: dict(hs) for e, hs in _handlers.items()}
        for event in events:
            new.setdefault(event, {})[handler_id] = handler
        _handlers = new
    _notify_watchers()


def detach(handler_id: str) -> bool:
    """Remove a handler from every event; returns whether it was attached."""
    global _handlers
    with _lock:
        found = any(handler_id in hs for hs in _handlers.values())
        _handlers = {
            e: {k: h for k, h in hs.items() if k != handler_id} for e, hs in _handlers.items()
        }
        _handlers = {e: hs for e, hs in _handlers.items() if hs}
    if found:
        _notify_watchers()
    return found


def list_handlers() -> dict[str, list[Event]]:
    """Attached handler ids and the events each listens to."""
    out: dict[str, list[Event]] = {}
    for event, hs in _handlers.items():
        for hid in hs:
            out.setdefault(hid, []).append(event)
    return out


def has_handlers(event: Event) -> bool:
    return event in _handlers


def wants_engine_events() -> bool:
    return any(e in _handlers for e in ENGINE_EVENTS)


def watch(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` whenever handlers change; returns a function that stops watching."""
    with _lock:
        _watchers.append(callback)

    def unwatch() -> None:
        with _lock:
            if callback in _watchers:
                _watchers.remove(callback)

    return unwatch


def _notify_watchers() -> None:
    for callback in list(_watchers):
        callback()


def execute(event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    """Deliver an event to its handlers."""
    handlers = _handlers.get(event)
    if not handlers:
        return
    for handler_id, handler in list(handlers.items()):
        try:
            handler(event, measurements, metadata)
        except BaseException:
            # BaseException too: a KeyboardInterrupt or SystemExit raised by a handler would
            # otherwise kill a runner lane, or leave a drained job executing in the store.
            _log.exception("telemetry handler %r raised on %s and was detached", handler_id, event)
            detach(handler_id)


def _plain(value: Any) -> Any:
    from .job import Job

    if isinstance(value, Job):
        return {
            "id": value.id,
            "worker": value.worker,
            "queue": value.queue,
            "attempt": value.attempt,
            "state": value.state.value,
        }
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value[:20]]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def attach_default_logger(
    level: int = logging.INFO,
    *,
    format: str = "logfmt",
    handler_id: str = "kathikon-default-logger",
    logger: Optional[logging.Logger] = None,
) -> None:
    """Log one line per event through :mod:`logging` (logger ``kathikon``); a snooze is
    logged once, as ``job.snooze`` (not again as ``job.sleep``).

    Args:
        level: the log level of each line.
        format: ``"logfmt"`` (``event=job.stop job.id=3 duration=0.001``) or ``"json"``.
        handler_id: the id to detach it with.
        logger: where to log; defaults to ``logging.getLogger("kathikon")``.
    """
    if format not in ("logfmt", "json"):
        raise ConfigurationError(f'format={format!r}: use "logfmt" or "json"')
    out = logger or logging.getLogger("kathikon")

    def log(event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        if not out.isEnabledFor(level):
            return
        if event == POLL_EVENT and not measurements.get("claimed"):
            return  # an idle lane polls every poll_interval; those lines would drown the rest
        record: dict[str, Any] = {"event": ".".join(event[1:])}
        for key, value in metadata.items():
            plain = _plain(value)
            if isinstance(plain, dict):
                for k, v in plain.items():
                    record[f"{key}.{k}"] = v
            else:
                record[key] = plain
        record.update(measurements)
        if format == "json":
            out.log(level, json.dumps(record, default=str))
        else:
            out.log(level, " ".join(f"{k}={_logfmt(v)}" for k, v in record.items()))

    # Every event but sleep, which would log each snooze a second time.
    attach(handler_id, [e for e in EVENTS if e != SLEEP_EVENT], log)


def attach_job_logger(
    *, handler_id: str = "kathikon-job-logger", logger: Optional[logging.Logger] = None
) -> None:
    """Log one line per job outcome through :mod:`logging` (logger ``kathikon``), as
    ``kathikon worker`` does by default: INFO when a job completed, snoozed or cancelled
    itself; WARNING when it will be retried, was handed back at shutdown, or its late result
    was refused; ERROR when it was discarded or its worker is not registered here. Each line
    names the job's id, worker, queue, attempt, outcome, state and duration, and the first
    line of its error (see :mod:`kathikon.joblog`). Nothing is formatted for a level the
    logger does not log.

    Args:
        handler_id: the id to detach it with.
        logger: where to log; defaults to ``logging.getLogger("kathikon")``.
    """
    from . import joblog

    attach(handler_id, [("kathikon", "job", "stop")], joblog.handler(logger or _kathikon_log))


_kathikon_log = logging.getLogger("kathikon")


def _logfmt(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    if any(c in text for c in ' ="\n') or not text:
        return json.dumps(text)
    return text
