"""The ``unique`` workload: unique insert throughput beside plain inserts of the same jobs, in
the same run (each on a fresh store), so the cost of the key check reads off one table."""

from __future__ import annotations

import time
from typing import Optional

import kathikon

from .workloads import Result, fresh_app

#: Unique over worker and args, held while the job exists (the check's full path: a key
#: lookup, the job's read and the key's write).
UNIQUE = kathikon.Unique(period=None, fields=("worker", "args"))


def single(n: int, unique: Optional[kathikon.Unique], same_key: bool = False) -> Result:
    """``n`` single inserts, each waiting for its fsync: plain, unique with a new key each
    (every insert stores a job), or unique with one key (every insert after the first is a
    conflict and stores nothing)."""
    with fresh_app(queues={"default": 10}) as app:

        @app.worker(unique=unique)
        def noop(job: kathikon.Job) -> None:
            pass

        start = time.perf_counter()
        for i in range(n):
            noop.insert({"n": 0 if same_key else i})
        elapsed = time.perf_counter() - start
    kind = "plain" if unique is None else "same key" if same_key else "new keys"
    return Result(f"insert {kind}", n, jobs_per_s=n / elapsed, extra={"unique": unique is not None})


def batches(n: int, unique: Optional[kathikon.Unique], batch: int = 1000) -> Result:
    """``insert_all`` in batches of ``batch`` jobs with distinct args, plain or unique."""
    with fresh_app(queues={"default": 10}) as app:

        @app.worker(unique=unique)
        def noop(job: kathikon.Job) -> None:
            pass

        start = time.perf_counter()
        for offset in range(0, n, batch):
            app.insert_all([noop.new({"n": i}) for i in range(offset, min(offset + batch, n))])
        elapsed = time.perf_counter() - start
    kind = "plain" if unique is None else "unique"
    return Result(f"insert_all /{batch} {kind}", n, jobs_per_s=n / elapsed)


def workload(scale: float) -> list[Result]:
    n, bulk = int(5_000 * scale), int(100_000 * scale)
    return [
        single(n, None),
        single(n, UNIQUE),
        single(n, UNIQUE, same_key=True),
        batches(bulk, None),
        batches(bulk, UNIQUE),
    ]
