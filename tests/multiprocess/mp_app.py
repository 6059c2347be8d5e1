"""The app the multi-process tests run, created at module level (as worker processes need).

Its store path, lease and side file come from the environment the test sets. Each job appends
``start``/``end`` lines (pid, id, attempt, monotonic time) to the side file, fsync'd, so the
test knows what ran where and when.
"""

from __future__ import annotations

import os
import time

import side_file

import kathikon

STORE = os.environ["KATHIKON_MP_STORE"]
SIDE = os.environ["KATHIKON_MP_SIDE"]

app = kathikon.Kathikon(
    STORE,
    queues={"default": int(os.environ.get("KATHIKON_MP_CONCURRENCY", "2"))},
    poll_interval=0.2,
    scheduler_interval=0.2,
    lease=float(os.environ.get("KATHIKON_MP_LEASE", "30")),
)


def note(what: str, job: kathikon.Job) -> None:
    side_file.append(SIDE, f"{what} {os.getpid()} {job.id} {job.attempt} {time.monotonic():.6f}")


@app.worker
def record(job: kathikon.Job) -> None:
    """Note the run; sleep ``sleep`` s first on attempt 1 only (``sleep_all``: every attempt);
    fail after sleeping when ``fail_first`` and this is attempt 1."""
    note("start", job)
    seconds = float(job.args.get("sleep", 0))
    if seconds and (job.attempt == 1 or job.args.get("sleep_all")):
        time.sleep(seconds)
    if job.args.get("fail_first") and job.attempt == 1:
        note("fail", job)
        raise RuntimeError("attempt 1 fails")
    note("end", job)


@app.worker
def spin(job: kathikon.Job) -> None:
    """About ``ms`` milliseconds of pure-Python work."""
    deadline = time.perf_counter() + float(job.args.get("ms", 1)) / 1000
    n = 0
    while time.perf_counter() < deadline:
        n += 1
