"""Carrying what the engine's own threads report (scheduler and pruner ticks, quarantined
records) to :mod:`kathikon.telemetry` handlers.

The engine keeps its event channel switched off while no handler listens to one of
``telemetry.ENGINE_EVENTS`` (emitting then costs it one atomic load); the pump switches it on,
and starts the thread that drains it, when the first such handler attaches.
"""

from __future__ import annotations

import threading
from typing import Optional

from . import telemetry
from ._native import Engine
from .errors import KathikonError
from .job import from_micros
from .vocabulary import CRON_INSERT, JOB_QUARANTINE, PRUNER_TICK, SCHEDULER_TICK

QUARANTINE = ("kathikon", "job", "quarantine")
PRUNE = ("kathikon", "job", "prune")
CRON = ("kathikon", "cron", "insert")
# Engine event names → the telemetry event each one is reported as.
TICKS = {
    SCHEDULER_TICK: ("kathikon", "scheduler", "tick"),
    PRUNER_TICK: ("kathikon", "pruner", "tick"),
}


class EventPump:
    """One app's engine events, delivered to telemetry on a daemon thread until ``closed`` is
    set. Register :meth:`telemetry_changed` with :func:`telemetry.watch`."""

    def __init__(self, engine: Engine, closed: threading.Event) -> None:
        self._engine = engine
        self._closed = closed
        self._thread: Optional[threading.Thread] = None

    def telemetry_changed(self) -> None:
        """Switch the engine's channel on or off to match the handlers now attached."""
        wanted = telemetry.wants_engine_events()
        if self._closed.is_set():
            return
        self._engine.set_events(wanted)
        if wanted and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="kathikon-telemetry", daemon=True
            )
            self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the thread to see ``closed`` (when it runs and
        is not the calling thread)."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout)

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                events = self._engine.next_events(0.2)
            except KathikonError:
                return
            for name, measurements in events:
                event = TICKS.get(name)
                if event is not None:
                    telemetry.execute(event, measurements, {})
                if name == PRUNER_TICK:
                    telemetry.execute(PRUNE, {"count": measurements["pruned"]}, {})
                elif name == JOB_QUARANTINE:
                    telemetry.execute(
                        QUARANTINE,
                        {"count": 1},
                        {"id": measurements["id"], "reason": measurements["reason"]},
                    )
                elif name == CRON_INSERT:
                    telemetry.execute(
                        CRON,
                        {"lateness": measurements["lateness"]},
                        {
                            "name": measurements["name"],
                            "slot": from_micros(measurements["slot"]),
                            "job_id": measurements["id"],
                        },
                    )
