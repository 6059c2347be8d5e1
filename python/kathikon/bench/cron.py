"""The cron workload: how late a cron entry's slot is fired, and its job started.

One entry fires every second (``* * * * * *``) on a store file at the default durability,
with a worker running. Each firing's lateness is what the owner reports in its
``("kathikon", "cron", "insert")`` event: from the slot to the writer's batch that inserted
the job; the job's start is timed in the worker against the slot in ``job.meta["cron"]``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import kathikon
from kathikon import telemetry

from .workloads import Result, fresh_app, percentiles

EVENT = ("kathikon", "cron", "insert")


def cron_lateness(seconds: float) -> Result:
    """Fire an every-second entry for ``seconds``; lateness percentiles of its firings."""
    fired: list[float] = []
    started: list[float] = []
    done = threading.Event()

    def on_insert(_: Any, measurements: Mapping[str, Any], __: Mapping[str, Any]) -> None:
        fired.append(measurements["lateness"] * 1000)

    handler = f"bench-cron-{id(fired)}"
    telemetry.attach(handler, [EVENT], on_insert)
    try:
        with fresh_app(queues={"default": 2}) as app:

            @app.worker(name="bench.cron_probe")
            def probe(job: kathikon.Job) -> None:
                slot = datetime.fromisoformat(job.meta["cron"]["slot"])
                started.append((datetime.now(timezone.utc) - slot).total_seconds() * 1000)

            app.start()
            app.cron("* * * * * *", probe, name="every-second")
            done.wait(seconds)
            app.stop(timeout=5)
            # The last firing's event may still be on its way to the handler.
            deadline = time.monotonic() + 2
            while len(fired) < len(started) and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        telemetry.detach(handler)
    start = percentiles(started)
    return Result(
        "cron lateness",
        len(fired),
        latency_ms=percentiles(fired),
        extra={"start_p99_ms": start.get("p99", float("nan")), "started": len(started)},
    )
