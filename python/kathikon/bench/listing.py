"""The ``listing`` workload: ``app.jobs`` and ``app.count`` on a large store (1,000,000 jobs
at scale 1, in 10 queues), timing the questions a dashboard asks: the newest 50 jobs of one
queue in one state, where that state is rare (1 job in 1,000), common, or held by no job of
the queue, the newest 50 failed (discarded, retryable) jobs of one queue, and the count of one
queue's jobs in a state. The failed jobs are spread over the store: each chunk inserted brings
a few to queue q0 at the highest priority, claimed and failed at once."""

from __future__ import annotations

import time
from typing import Any, Callable

import kathikon

from .workloads import Result, fresh_app, percentiles

QUEUES = [f"q{n}" for n in range(10)]
#: Every this many-th job of queue q0 is cancelled: the rare state.
RARE_EVERY = 100
#: Of each chunk of 10,000 jobs, this many more are inserted to q0 and discarded, and as
#: many failed to be retried in an hour: 1,000 of each at scale 1.
FAILED_PER_CHUNK = 10
ASKS = 20
HOUR_US = 3_600_000_000


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

        engine = app._engine  # the bench fails jobs by ack, without running a worker
        for offset in range(0, n, 10_000):
            app.insert_all(
                [
                    noop.new(
                        {"n": i, "rare": i // len(QUEUES) % RARE_EVERY == 0},
                        queue=QUEUES[i % len(QUEUES)],
                        priority=1,
                    )
                    for i in range(offset, min(n, offset + 10_000))
                ]
                + [noop.new({"fail": k}, queue=QUEUES[0]) for k in range(2 * FAILED_PER_CHUNK)]
            )
            claimed = engine.claim(QUEUES[0], 2 * FAILED_PER_CHUNK, 0.0)
            engine.ack(
                [
                    (j.id, j.attempt, "discard", "bench", None, None)
                    if k % 2 == 0
                    else (j.id, j.attempt, "fail", "bench", HOUR_US, None)
                    for k, j in enumerate(claimed)
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
            # No job of the queue is completed: the counts say so without a read.
            Result(
                "newest 50 of a queue, empty state",
                n,
                durability="none",
                latency_ms=_timed(newest("completed")),
            ),
            Result(
                "newest 50 discarded of a queue",
                n,
                durability="none",
                latency_ms=_timed(newest("discarded")),
                extra={"in_state": app.count(queue="q0", state="discarded")},
            ),
            Result(
                "newest 50 retryable of a queue",
                n,
                durability="none",
                latency_ms=_timed(newest("retryable")),
                extra={"in_state": app.count(queue="q0", state="retryable")},
            ),
            Result(
                "count of a queue in a state",
                n,
                durability="none",
                latency_ms=_timed(lambda: app.count(queue="q0", state="cancelled")),
            ),
        ]
