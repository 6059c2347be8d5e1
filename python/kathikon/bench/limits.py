"""The ``limits`` workload: how exact a rate limit is, and what limits cost a claim (on a
store file, or with ``--url`` on PostgreSQL, where each run removes its limits after).

- **accuracy**: a queue limited to ``allowed`` starts per second drains no-op jobs for a few
  seconds; the jobs' stored claim times give the rate reached (over whole periods after the
  first) and the most claims in any one-second window (must not exceed ``allowed``).
- **overhead**: the same no-op drain on one queue, unlimited, with a global limit too high to
  bind, and with that limit partitioned over 1,000 customers (jobs spread over them): the
  jobs/s of each, so the limiter's own cost per claim reads off one table.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import kathikon

from .workloads import Result, bench_queue, durability, fresh_app, wait_completed

PARTITION = {"fields": ["args"], "keys": ["customer"]}
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)
SECOND = 1_000_000


def accuracy(allowed: int, seconds: float) -> Result:
    """Rate-limited no-op jobs for ``seconds``; the claim rate and the busiest second."""
    n = int(allowed * (seconds + 2))
    queue: dict[str, Any] = {"concurrency": 20, "rate_limit": {"allowed": allowed, "period": 1}}
    name = bench_queue()
    with fresh_app(queues={name: queue}) as app:

        @app.worker(queue=name)
        def noop(job: kathikon.Job) -> None:
            pass

        try:
            app.insert_all([noop.new() for _ in range(n)])
            app.start()
            time.sleep(seconds + 0.5)
            app.stop(timeout=5)
            # Whole µs, as stored and counted: float seconds since 1970 blur the µs.
            claimed = sorted(
                (j.attempted_at - EPOCH) // MICROSECOND
                for j in app.jobs(queue=name, limit=n)
                if j.attempted_at is not None
            )
        finally:
            app.scale_queue(name, rate_limit=None)
    first = claimed[0]
    whole = int(seconds)
    in_whole = sum(1 for t in claimed if first <= t < first + whole * SECOND)
    busiest, start = 0, 0
    for end, t in enumerate(claimed):
        while claimed[start] <= t - SECOND:
            start += 1
        busiest = max(busiest, end - start + 1)
    return Result(
        f"rate limit {allowed}/s",
        len(claimed),
        durability(),
        jobs_per_s=in_whole / whole,
        extra={"rate_vs_allowed": in_whole / whole / allowed, "busiest_second": busiest},
    )


def overhead(n: int, kind: str, partitions: int = 1_000) -> Result:
    """``n`` no-op jobs drained at concurrency 10 by a queue with limits of ``kind``:
    ``none``, ``global`` (a limit that never binds) or ``partitioned`` (that limit per
    customer, the jobs spread over ``partitions`` customers)."""
    queue: dict[str, Any] = {"concurrency": 10}
    if kind == "global":
        queue["global_limit"] = 1_000_000
    elif kind == "partitioned":
        queue["global_limit"] = {"allowed": 1_000_000, "partition": PARTITION}
    name = bench_queue()
    with fresh_app(queues={name: queue}) as app:

        @app.worker(queue=name)
        def noop(job: kathikon.Job) -> None:
            pass

        try:
            for offset in range(0, n, 10_000):
                count = min(10_000, n - offset)
                app.insert_all(
                    [noop.new({"customer": (offset + i) % partitions}) for i in range(count)]
                )
            start = time.perf_counter()
            app.start()
            wait_completed(app, name, n, 120.0)
            elapsed = time.perf_counter() - start
            app.stop(timeout=5)
        finally:
            app.scale_queue(name, global_limit=None)
    return Result(f"drain limits={kind}", n, durability(), jobs_per_s=n / elapsed)


def workload(scale: float) -> list[Result]:
    n = int(50_000 * scale)
    return [
        accuracy(200, max(2.0, 5 * scale)),
        overhead(n, "none"),
        overhead(n, "global"),
        overhead(n, "partitioned"),
    ]
