"""The app the queue-limit tests run in worker processes, created at module level.

Its store (a redb path, or a PostgreSQL url in ``KATHIKON_LIMITS_URL``), side file and the
``api`` queue's settings (JSON) come from the environment the test sets. Each job appends
``start``/``end`` lines (pid, id, partition, wall time) to the side file, fsync'd, so the test
knows what ran at once and when.
"""

from __future__ import annotations

import json
import os
import time

import side_file

import kathikon

QUEUES = {"api": json.loads(os.environ["KATHIKON_LIMITS_QUEUE"])}
URL = os.environ.get("KATHIKON_LIMITS_URL")
if URL:
    app = kathikon.Kathikon(url=URL, queues=QUEUES, poll_interval=0.2)
else:
    app = kathikon.Kathikon(
        os.environ["KATHIKON_LIMITS_STORE"],
        queues=QUEUES,
        poll_interval=0.2,
        scheduler_interval=0.2,
    )

SIDE = os.environ["KATHIKON_LIMITS_SIDE"]


def note(what: str, job: kathikon.Job) -> None:
    part = job.args.get("customer", "-")
    side_file.append(SIDE, f"{what} {os.getpid()} {job.id} {part} {time.time():.6f}")


@app.worker(queue="api")
def call(job: kathikon.Job) -> None:
    """Note the start, sleep ``sleep`` seconds, note the end."""
    note("start", job)
    time.sleep(float(job.args.get("sleep", 0)))
    note("end", job)
