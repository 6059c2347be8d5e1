"""Typing example: defining workers, as user code does.

Type-checked by ``make typecheck`` (mypy --strict and pyright in strict mode) and run by
``tests/test_typing_examples.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Callable, ClassVar, Optional

import kathikon
from kathikon.worker import Registration

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type

app = kathikon.Kathikon(path=None, queues={"default": 10, "emails": 5})


# -- decorated functions -------------------------------------------------------------------


@app.worker
def bare(job: kathikon.Job) -> None:
    """Bare decorator on a sync function."""
    print(job.args["name"])


@app.worker()
def empty_parens(job: kathikon.Job) -> int:
    return job.attempt


@app.worker(
    queue="emails",
    max_attempts=10,
    priority=3,
    tags=["mail", "outbound"],
    backoff=lambda job: 2.0**job.attempt,
    name="mail.send",
)
def send_email(job: kathikon.Job) -> None:
    email: str = job.args["email"]
    if not email:
        raise kathikon.Discard("no address")


def linear_backoff(job: kathikon.Job) -> Optional[float]:
    return 10 * job.attempt if job.attempt < 5 else None


@app.worker(backoff=linear_backoff, tags=("a", "b"))
async def fetch(job: kathikon.Job) -> None:
    """Bare async functions, and async functions with options, are workers too."""


@app.worker(timeout=30, queue="default")
async def slow(job: kathikon.Job) -> kathikon.Snooze | None:
    if job.attempt == 1:
        return kathikon.Snooze(timedelta(seconds=5))
    return None


@app.worker(cancel="kill", timeout=3600)
def render(job: kathikon.Job) -> None:
    """A sync worker whose running job's worker process ends when the job is cancelled."""


@app.worker(max_attempts=1)
def outcomes(job: kathikon.Job) -> kathikon.Cancel | kathikon.Discard | kathikon.Snooze | None:
    """Outcomes are returned or raised."""
    kind = job.args.get("kind")
    if kind == "cancel":
        return kathikon.Cancel("not needed any more")
    if kind == "discard":
        raise kathikon.Discard()
    if kind == "snooze":
        return kathikon.Snooze(1.5)
    return None


assert_type(bare, kathikon.WorkerFunction)
assert_type(send_email, kathikon.WorkerFunction)
assert_type(fetch, kathikon.WorkerFunction)
assert_type(send_email.name, str)
assert_type(send_email.queue, str)
assert_type(send_email.registration, Registration)

# The decorator used as a plain call.
decorate = app.worker(queue="emails")
assert_type(decorate, Callable[[Callable[[kathikon.Job], Any]], kathikon.WorkerFunction])


def plain(job: kathikon.Job) -> None: ...


plain_worker = decorate(plain)
assert_type(plain_worker, kathikon.WorkerFunction)

# -- Worker classes ------------------------------------------------------------------------


class Report(kathikon.Worker):
    queue = "default"
    max_attempts = 5
    priority = 1
    tags: ClassVar[Sequence[str]] = ("reports",)

    def perform(self, job: kathikon.Job) -> None:
        print("report", job.args["name"])

    def backoff(self, job: kathikon.Job) -> float:
        return 60.0


class Render(kathikon.Worker):
    cancel = "kill"

    def perform(self, job: kathikon.Job) -> None: ...


class AsyncReport(kathikon.Worker):
    queue = "emails"
    timeout = 10.0
    name = "reports.async"

    async def perform(self, job: kathikon.Job) -> kathikon.Snooze | None:
        return kathikon.Snooze(30) if job.attempt < 2 else None


registered = app.register(Report)
assert_type(registered, type[Report])
assert_type(app.register(AsyncReport()), AsyncReport)
assert_type(app.register(Render), type[Render])


@app.register
class Decorated(kathikon.Worker):
    """``register`` also works as a class decorator and keeps the class's type."""

    def perform(self, job: kathikon.Job) -> None:
        if job.attempt > 3:
            raise kathikon.Cancel("gave up")


assert_type(Decorated, type[Decorated])
assert_type(Decorated.queue, str)
assert_type(Decorated.max_attempts, Optional[int])

assert_type(app.workers, dict[str, Registration])
assert_type(app.workers["mail.send"].queue, str)

# -- outcome objects -----------------------------------------------------------------------

snooze = kathikon.Snooze(timedelta(minutes=1))
assert_type(snooze.seconds, float)
assert_type(kathikon.Cancel().reason, str)
assert_type(kathikon.Discard("bad").reason, str)
outcome: kathikon.JobOutcome = snooze

if __name__ == "__main__":
    bare.insert({"name": "x"})
    print(app.drain())
    app.close()
