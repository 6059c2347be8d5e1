"""Typing example: inserting and reading jobs, running an app, handling its errors.

Type-checked by ``make typecheck`` (mypy --strict and pyright in strict mode) and run by
``tests/test_typing_examples.py``.
"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Optional

import kathikon

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type

seen: Counter[str] = Counter()
app = kathikon.Kathikon(
    None,
    {"default": 2, "emails": {"concurrency": 1}},
    max_attempts=5,
    poll_interval=0.5,
    durability="none",
    clock="manual",
)


@app.worker(queue="emails")
def send_email(job: kathikon.Job) -> None:
    seen[job.args["email"]] += 1


@app.register
class Report(kathikon.Worker):
    def perform(self, job: kathikon.Job) -> None:
        seen["report"] += 1


# -- inserting -----------------------------------------------------------------------------

job = send_email.insert({"email": "a@b.c"})
assert_type(job, kathikon.Job)
send_email.insert(
    {"email": "later@b.c"},
    queue="emails",
    priority=9,
    schedule_in=timedelta(minutes=1),
    max_attempts=3,
    tags=["slow"],
    meta={"trace": "abc"},
)
send_email.insert(schedule_at=datetime.now(timezone.utc) + timedelta(hours=1))
scheduled = app.insert(Report, {"name": "weekly"}, schedule_in=60.0, priority=0)
app.insert(send_email.name, {"email": "by-name@b.c"})  # by registered name

# new + insert_all: one commit, all or none
specs = [send_email.new({"email": e}, priority=2) for e in ("p@q.r", "s@t.u")]
specs.append(app.new(Report, {"name": "daily"}, tags=("daily",)))
assert_type(specs, list[kathikon.JobSpec])
assert_type(specs[0].queue, str)
assert_type(specs[0].worker, str)
jobs = app.insert_all(specs)
assert_type(jobs, list[kathikon.Job])
app.insert_all(spec for spec in [send_email.new()])

# -- a job's fields ------------------------------------------------------------------------

assert_type(job.id, int)
assert_type(job.state, kathikon.JobState)
assert_type(job.state.finished, bool)
assert_type(job.queue, str)
assert_type(job.worker, str)
assert_type(job.args, dict[str, Any])
assert_type(job.meta, dict[str, Any])
assert_type(job.tags, list[str])
assert_type(job.attempt, int)
assert_type(job.max_attempts, int)
assert_type(job.priority, int)
assert_type(job.inserted_at, datetime)
assert_type(job.scheduled_at, datetime)
assert_type(job.attempted_at, Optional[datetime])
assert_type(job.completed_at, Optional[datetime])
assert_type(job.cancelled_at, Optional[datetime])
assert_type(job.discarded_at, Optional[datetime])
assert_type(job.errors, list[kathikon.JobErrorEntry])
for error in job.errors:
    assert_type(error["at"], datetime)
    assert_type(error["attempt"], int)
    assert_type(error["error"], str)

# -- running -------------------------------------------------------------------------------

counts = app.drain()
assert_type(counts, dict[str, int])
assert_type(app.drain("emails", with_scheduled=app.now() + timedelta(minutes=2)), dict[str, int])
app.advance_clock(timedelta(hours=2))
app.advance_clock(1)
app.start(queues=["emails"])
assert_type(app.stop(timeout=5), bool)
app.start(queues={"default": 1})
app.stop()

# -- reading and managing ------------------------------------------------------------------

assert_type(app.get(job.id), kathikon.Job)
assert_type(app.get(job), kathikon.Job)
listed = app.jobs(state=kathikon.JobState.SCHEDULED, queue="default", limit=10)
assert_type(listed, kathikon.JobPage)
assert_type(listed.cursor, Optional[str])
app.jobs(state="completed", worker=Report, after=0)
app.jobs(worker=send_email, tags=["vip"], args={"user_id": 7}, order="asc", cursor=listed.cursor)
assert_type(app.count(state=["retryable", kathikon.JobState.DISCARDED], queue="default"), int)
assert_type(app.cancel(scheduled), kathikon.Job)
assert_type(app.retry(scheduled.id), kathikon.Job)
assert_type(app.stats(), dict[str, dict[str, int]])
assert_type(app.queue_depths(), dict[str, int])
assert_type(app.retry_jobs(state="discarded", finished_after=datetime.now(timezone.utc)), int)
assert_type(app.cancel_jobs(queue="default", tags=["no job has this tag"]), int)
assert_type(app.delete_jobs(state="completed", force=False), int)
assert_type(app.metrics(queue="default"), list[kathikon.MetricPoint])
assert_type(app.oldest_available("default"), Optional[datetime])
assert_type(app.prune(older_than=0), int)
assert_type(app.now(), datetime)
assert_type(app.config.queues, dict[str, int])
assert_type(app.config.max_attempts, int)
assert_type(app.path, Optional[str])


# -- a store on disk, errors ---------------------------------------------------------------


def on_disk(directory: Path) -> None:
    store = directory / "jobs.redb"
    try:
        kathikon.Kathikon(store, {"default": 0})
    except kathikon.ConfigurationError as exc:
        assert_type(exc, kathikon.ConfigurationError)
        assert isinstance(exc, ValueError)

    with kathikon.Kathikon(str(store)) as running:  # runs workers for the block
        assert_type(running, kathikon.Kathikon)
        try:
            running.insert(Report)  # Report is registered with `app`, not this one
        except kathikon.UnknownWorkerError as exc:
            assert isinstance(exc, kathikon.InvalidJobError)
        try:
            running.get(10**6)
        except kathikon.JobNotFoundError:
            pass
        try:
            kathikon.Kathikon(store)
        except kathikon.StorageLockedError as exc:
            assert isinstance(exc, kathikon.StorageError)
        except kathikon.KathikonError:
            raise
        role: str = running.role
        owner: int = running.owner_pid
        assert role == "owner" and owner > 0
        assert_type(running.worker_pids, list[int])
    client = kathikon.Kathikon(store, connect=False, lease=5.0)
    try:
        assert_type(client.stats(), dict[str, dict[str, int]])
    except kathikon.OwnerGoneError as exc:
        assert isinstance(exc, kathikon.StorageError)
    finally:
        client.close()


if __name__ == "__main__":
    assert app.drain(with_scheduled=True)
    with TemporaryDirectory() as tmp:
        on_disk(Path(tmp))
    app.close(timeout=5)
    assert_type(app.closed, bool)
    assert seen["a@b.c"] == 1 and seen["report"] >= 1, seen
    print("ok")
