"""Job progress in one process: ``job.progress`` rate-limited with real threads (the worker
thread reporting, the writing thread, the ack), the last report kept, bad values refused with
typed errors, and the stored value on ``app.progress``, the CLI and the dashboard's job page.
The same with worker processes as clients: tests/multiprocess/test_progress_processes.py."""

from __future__ import annotations

import math
import os
import time
from typing import Any

import pytest

import kathikon
from kathikon.testing import perform_job


def test_a_tight_loop_of_reports_writes_at_most_twice_a_second_and_keeps_the_last(
    app: kathikon.Kathikon,
) -> None:
    timing: dict[str, float] = {}

    @app.worker
    def busy(job: kathikon.Job) -> None:
        timing["start"] = time.monotonic()
        for i in range(20_000):
            job.progress(i / 20_000, f"item {i}")
        job.progress(1.0, "all done")

    job = busy.insert()
    assert app.drain() == {"completed": 1}
    elapsed = time.monotonic() - timing["start"]
    writes = app._engine.progress_writes
    # One write when the window opens, then one per 500 ms, and the last one before the ack.
    assert 1 <= writes <= 2 + elapsed / 0.5, (writes, elapsed)
    stored = app.progress(job)
    assert stored is not None
    assert (stored.fraction, stored.note, stored.attempt) == (1.0, "all done", 1)
    assert stored == app.progress(job.id), "a job or its id"


def test_a_job_that_never_reports_has_no_progress(app: kathikon.Kathikon) -> None:
    quiet = app.worker(name="quiet")(lambda job: None)
    job = quiet.insert()
    app.drain()
    assert app.progress(job) is None
    assert app._engine.progress_writes == 0


@pytest.mark.parametrize(
    ("fraction", "note", "named"),
    [
        (1.5, None, "1.5"),
        (-0.1, None, "-0.1"),
        (math.nan, None, "NaN"),
        (math.inf, None, "inf"),
        ("half", None, "'half'"),
        (True, None, "True"),
        (None, None, "None"),
        (0.5, 3, "3"),
        (0.5, "x" * 201, "201 bytes"),
    ],
)
def test_bad_values_are_refused_naming_them_and_fail_the_attempt(
    app: kathikon.Kathikon, fraction: Any, note: Any, named: str
) -> None:
    caught: list[BaseException] = []

    @app.worker(name="bad", max_attempts=1)
    def bad(job: kathikon.Job) -> None:
        try:
            job.progress(fraction, note)
        except kathikon.InvalidJobError as e:
            caught.append(e)
            raise

    job = bad.insert()
    assert app.drain() == {"discarded": 1}
    assert len(caught) == 1 and named in str(caught[0]), caught
    assert isinstance(caught[0], ValueError)
    assert app.progress(job) is None


def test_an_async_job_reports_without_blocking_its_loop(app: kathikon.Kathikon) -> None:
    @app.worker
    async def fetch(job: kathikon.Job) -> None:
        for i in range(1000):
            job.progress(i / 1000)
        job.progress(0.75, "parsing")

    job = fetch.insert()
    assert app.drain() == {"completed": 1}
    stored = app.progress(job)
    assert stored is not None and (stored.fraction, stored.note) == (0.75, "parsing")


def test_a_job_not_running_here_refuses_progress(app: kathikon.Kathikon) -> None:
    noop = app.worker(name="noop")(lambda job: None)
    job = noop.insert()
    with pytest.raises(kathikon.JobStateError, match=f"job {job.id} .*not running"):
        app.get(job).progress(0.5)
    with pytest.raises(kathikon.InvalidJobError, match="2.5"):
        app.get(job).progress(2.5)


def test_perform_job_accepts_progress_and_checks_it(app: kathikon.Kathikon) -> None:
    @app.worker(name="steps")
    def steps(job: kathikon.Job) -> None:
        job.progress(0.5, "half")
        job.progress(job.args["last"])

    perform_job(steps, {"last": 1.0})
    with pytest.raises(kathikon.InvalidJobError, match="7"):
        perform_job(steps, {"last": 7})


def test_the_dashboard_job_page_shows_the_progress(app: kathikon.Kathikon) -> None:
    from starlette.testclient import TestClient

    from kathikon.web import asgi_app

    @app.worker
    def shown(job: kathikon.Job) -> None:
        job.progress(0.4, "<b>resizing</b>")

    job = shown.insert()
    app.drain()
    page = TestClient(asgi_app(app)).get(f"/jobs/{job.id}")  # type: ignore[arg-type]
    assert page.status_code == 200
    assert '<progress max="1" value="0.4">' in page.text
    assert "40%" in page.text
    assert "&lt;b&gt;resizing&lt;/b&gt;" in page.text and "<b>resizing" not in page.text


def test_processes_of_an_app_alone_is_itself_running_its_jobs(app: kathikon.Kathikon) -> None:
    inside: list[list[kathikon.ProcessInfo]] = []

    @app.worker
    def look(job: kathikon.Job) -> None:
        inside.append(app.processes())

    job = look.insert()
    app.drain()
    (me,) = inside[0]
    assert (me.pid, me.role, me.lease_expires) == (os.getpid(), "owner", None)
    assert me.jobs == (job.id,), "the job running in this very call"
    assert "default" in me.queues
    assert me.connected_at <= me.last_seen
    (after,) = app.processes()
    assert after.jobs == ()
