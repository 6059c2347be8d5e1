"""The app the queue-limit tests run in worker processes, created at module level.

Its store, side file and the ``api`` queue's settings (JSON) come from the environment the
test sets. Each job appends ``start``/``end`` lines (pid, id, partition, wall time) to the
side file, fsync'd, so the test knows what ran at once and when.
"""

from __future__ import annotations

import json
import os
import time

import kathikon

app = kathikon.Kathikon(
    os.environ["KATHIKON_LIMITS_STORE"],
    queues={"api": json.loads(os.environ["KATHIKON_LIMITS_QUEUE"])},
    poll_interval=0.2,
    scheduler_interval=0.2,
)

SIDE = os.environ["KATHIKON_LIMITS_SIDE"]


def note(what: str, job: kathikon.Job) -> None:
    part = job.args.get("customer", "-")
    line = f"{what} {os.getpid()} {job.id} {part} {time.time():.6f}\n"
    fd = os.open(SIDE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@app.worker(queue="api")
def call(job: kathikon.Job) -> None:
    """Note the start, sleep ``sleep`` seconds, note the end."""
    note("start", job)
    time.sleep(float(job.args.get("sleep", 0)))
    note("end", job)
