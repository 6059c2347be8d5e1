"""The app each node of the PostgreSQL multi-node tests runs, created at module level (as
``kathikon worker`` and the node script import it).

Its database url, lease and side file come from the environment the test sets. Each job
appends ``start``/``end`` lines (pid, id, attempt, monotonic time) to the side file, fsync'd,
so the test knows what ran where and when. With ``KATHIKON_PG_CRON`` set, the app declares an
every-second cron entry (``every-second``, a job of ``tick`` per slot).
"""

from __future__ import annotations

import os
import time

import side_file

import kathikon

URL = os.environ["KATHIKON_PG_URL"]
SIDE = os.environ["KATHIKON_PG_SIDE"]

app = kathikon.Kathikon(
    url=URL,
    queues={"default": int(os.environ.get("KATHIKON_PG_CONCURRENCY", "2"))},
    poll_interval=0.2,
    # On PostgreSQL, the node's upkeep tick: it renews the lease (every lease / 3, at a tick),
    # tries to lead and, while it leads, promotes, rescues and fires cron.
    scheduler_interval=0.2,
    lease=float(os.environ.get("KATHIKON_PG_LEASE", "30")),
)


def note(what: str, job_id: int = 0, attempt: int = 0) -> None:
    """Append ``what pid job attempt time`` to the side file, fsync'd."""
    side_file.append(SIDE, f"{what} {os.getpid()} {job_id} {attempt} {time.monotonic():.6f}")


@app.worker
def record(job: kathikon.Job) -> None:
    """Note the run; on attempt 1 only, sleep ``sleep`` s first."""
    note("start", job.id, job.attempt)
    seconds = float(job.args.get("sleep", 0))
    if seconds and job.attempt == 1:
        time.sleep(seconds)
    note("end", job.id, job.attempt)


@app.worker
def tick(job: kathikon.Job) -> None:
    """The cron entry's job: note the run."""
    note("tick", job.id, job.attempt)


if os.environ.get("KATHIKON_PG_CRON"):
    app.cron("* * * * * *", tick, name="every-second")
