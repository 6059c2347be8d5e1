"""The ``batches`` workload: what being in a batch costs a job, beside the same jobs inserted
and drained plain in the same run (each on a fresh store), and how soon a batch's callback
runs once its last job finished.

- ``insert``: ``n`` jobs stored in chunks of 1,000, plain (``insert_all``) or as one batch
  (``insert_batch``, the first chunk creating it, the rest joining it);
- ``drain``: those jobs run with concurrency 10, until the last one completed (plain) or the
  batch's ``on_finished`` callback ran;
- ``callback``: per batch of 10 jobs (200 of them, drained with the workers running), the time
  from its last member's completion to its callback's start: the store inserts the callback in
  the commit that finishes the last member, so this is one claim's wait.
"""

from __future__ import annotations

import statistics
import threading
import time

import kathikon

from .workloads import Result, fresh_app, wait_completed

CHUNK = 1_000


def insert_and_drain(n: int, batched: bool, timeout: float = 120.0) -> list[Result]:
    """``n`` no-op jobs inserted (plain or as one batch), then drained by 10 workers."""
    done = threading.Event()
    with fresh_app(queues={"default": 10}) as app:

        @app.worker
        def noop(job: kathikon.Job) -> None:
            pass

        @app.worker
        def finished(job: kathikon.Job) -> None:
            done.set()

        start = time.perf_counter()
        for offset in range(0, n, CHUNK):
            specs = [noop.new() for _ in range(min(CHUNK, n - offset))]
            if not batched:
                app.insert_all(specs)
            elif offset == 0:
                app.insert_batch(specs, batch_id="bench", on_finished=finished)
            else:
                app.insert_batch(specs, batch_id="bench")
        inserted = time.perf_counter() - start
        start = time.perf_counter()
        app.start()
        if batched:
            if not done.wait(timeout):
                raise TimeoutError(f"the batch's callback did not run in {timeout} s")
        else:
            wait_completed(app, "default", n, timeout)
        drained = time.perf_counter() - start
        app.stop(timeout=5)
    kind = "batch" if batched else "plain"
    return [
        Result(f"insert /{CHUNK} {kind}", n, jobs_per_s=n / inserted),
        Result(f"drain c=10 {kind}", n, jobs_per_s=n / drained),
    ]


def callback_latency(batches: int, members: int = 10, timeout: float = 120.0) -> Result:
    """Per batch, the time from its last member's completion to its callback's start."""
    last_done: dict[str, float] = {}
    delays: list[float] = []
    lock = threading.Lock()
    all_ran = threading.Event()
    with fresh_app(queues={"default": 10}) as app:

        @app.worker
        def member(job: kathikon.Job) -> None:
            with lock:
                last_done[job.args["b"]] = time.perf_counter()  # the last one's ack follows

        @app.worker
        def finished(job: kathikon.Job) -> None:
            info = kathikon.BatchCallback.of(job)
            assert info is not None
            with lock:
                delays.append(time.perf_counter() - last_done[info.batch_id])
                if len(delays) == batches:
                    all_ran.set()

        app.start()
        for b in range(batches):
            specs = [member.new({"b": str(b)}) for _ in range(members)]
            app.insert_batch(specs, batch_id=str(b), on_finished=finished)
            time.sleep(0.002)
        if not all_ran.wait(timeout):
            raise TimeoutError(f"{len(delays)} of {batches} callbacks ran in {timeout} s")
        app.stop(timeout=5)
    cuts = statistics.quantiles(delays, n=100)
    return Result(
        f"callback after last member ({members} per batch)",
        batches,
        latency_ms={"p50": cuts[49] * 1e3, "p99": cuts[98] * 1e3},
    )


def workload(scale: float) -> list[Result]:
    n = int(10_000 * scale)
    return [
        *insert_and_drain(n, batched=False),
        *insert_and_drain(n, batched=True),
        callback_latency(max(20, int(200 * scale))),
    ]
