"""The ``listing`` workload: ``app.jobs`` and ``app.count`` on a large store (1,000,000 jobs
at scale 1, in 10 queues), timing the questions a dashboard asks: the newest 50 jobs of one
queue in one state, where that state is rare (1 job in 1,000), common, or held by no job
(the walk then reads every record), and the count of one queue's jobs in a state."""

from __future__ import annotations

import time
from typing import Any, Callable

import kathikon

from .workloads import Result, fresh_app, percentiles

QUEUES = [f"q{n}" for n in range(10)]
#: Every this many-th job of queue q0 is cancelled: the rare state.
RARE_EVERY = 100
ASKS = 20


def _timed(ask: Callable[[], Any]) -> dict[str, float]:
    samples = []
    for _ in range(ASKS):
        start = time.perf_counter()
        ask()
        samples.append((time.perf_counter() - start) * 1000)
    return percentiles(samples)


def workload(scale: float) -> list[Result]:
    n = max(len(QUEUES) * RARE_EVERY, int(1_000_000 * scale))
    with fresh_app(queues=dict.fromkeys(QUEUES, 1), durability="none") as app:

        @app.worker(queue=QUEUES[0])
        def noop(job: kathikon.Job) -> None:
            pass

        for offset in range(0, n, 10_000):
            app.insert_all(
                [
                    noop.new(
                        {"n": i, "rare": i // len(QUEUES) % RARE_EVERY == 0},
                        queue=QUEUES[i % len(QUEUES)],
                    )
                    for i in range(offset, min(n, offset + 10_000))
                ]
            )
        rare = app.cancel_jobs(queue="q0", args={"rare": True})

        def newest(state: str) -> Callable[[], Any]:
            return lambda: app.jobs(queue="q0", state=state, order="desc", limit=50)

        assert len(newest("cancelled")()) == min(50, rare)
        return [
            Result(
                "newest 50 of a queue, rare state",
                n,
                durability="none",
                latency_ms=_timed(newest("cancelled")),
                extra={"in_state": rare},
            ),
            Result(
                "newest 50 of a queue, common state",
                n,
                durability="none",
                latency_ms=_timed(newest("available")),
            ),
            # No job is discarded: the walk reads every record, the cost an index would save.
            Result(
                "newest 50 of a queue, empty state",
                n,
                durability="none",
                latency_ms=_timed(newest("discarded")),
            ),
            Result(
                "count of a queue in a state",
                n,
                durability="none",
                latency_ms=_timed(lambda: app.count(queue="q0", state="cancelled")),
            ),
        ]
