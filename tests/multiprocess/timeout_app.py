"""The app the tests of sync jobs stopped in worker processes run there (``sync_stops.py``),
created at module level: timeouts and ``cancel="kill"``.

Its store (a redb path, or a PostgreSQL url in ``KATHIKON_TIMEOUT_URL``) and side file come
from the environment the test sets. Each job appends ``start``/``end`` lines (pid, id,
attempt) to the side file, fsync'd, so the test knows which process ran which attempt and
what it finished. Retries come at once (``backoff`` 0).
"""

from __future__ import annotations

import os
import time

import side_file

import kathikon

QUEUES = {"default": 2, "solo": 1}
URL = os.environ.get("KATHIKON_TIMEOUT_URL")
if URL:
    # Every process a node, with the test's short lease, renewed at an upkeep tick of 0.2 s.
    app = kathikon.Kathikon(
        url=URL,
        queues=QUEUES,
        poll_interval=0.2,
        scheduler_interval=0.2,
        lease=float(os.environ["KATHIKON_TIMEOUT_LEASE"]),
    )
else:
    app = kathikon.Kathikon(os.environ["KATHIKON_TIMEOUT_STORE"], queues=QUEUES, poll_interval=0.2)
SIDE = os.environ["KATHIKON_TIMEOUT_SIDE"]


def note(what: str, job: kathikon.Job) -> None:
    side_file.append(SIDE, f"{what} {os.getpid()} {job.id} {job.attempt}")


def at_once(job: kathikon.Job) -> float:
    return 0.0


@app.worker(name="timeout_app.hang", timeout=1, max_attempts=2, backoff=at_once)
def hang(job: kathikon.Job) -> None:
    """Sleeps far past its timeout of 1 s."""
    note("start", job)
    time.sleep(60)
    note("end", job)


@app.worker(name="timeout_app.spin", timeout=1, max_attempts=1)
def spin(job: kathikon.Job) -> None:
    """Loops in Python without sleeping, past its timeout of 1 s."""
    note("start", job)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pass
    note("end", job)


@app.worker(name="timeout_app.steady")
def steady(job: kathikon.Job) -> None:
    """No timeout: sleeps ``seconds``."""
    note("start", job)
    time.sleep(float(job.args.get("seconds", 0)))
    note("end", job)


@app.worker(name="timeout_app.hang_kill", cancel="kill")
def hang_kill(job: kathikon.Job) -> None:
    """No timeout, but a cancel ends its process: sleeps 60 s."""
    note("start", job)
    time.sleep(60)
    note("end", job)


@app.worker(name="timeout_app.solo", queue="solo")
def solo(job: kathikon.Job) -> None:
    """A queue of concurrency 1, and no cancel="kill": sleeps ``seconds``."""
    note("start", job)
    time.sleep(float(job.args.get("seconds", 0)))
    note("end", job)
