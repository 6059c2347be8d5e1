"""A worker whose grace period runs out hands its running jobs back as *interrupted by
shutdown*: due again, the attempt not counted, the reason in the history, the jobs named in
the stop log line. Real `kathikon worker` processes stopped with SIGTERM, and an app stopped
in-process while its job's thread runs on."""

from __future__ import annotations

import logging
import re
import signal
import threading
from pathlib import Path

import pytest
from worker_project import Project, wait_for, worker

import kathikon
from kathikon import JobState

S = JobState
WAITING = (S.SCHEDULED, S.AVAILABLE)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def deploy_once(project: Project, job_id: int, attempt: int) -> str:
    """Start a worker, wait for the job's attempt to start, SIGTERM it (grace 0.5 s); returns
    the worker's log."""
    with worker(project, "--grace", "0.5") as w:
        wait_for(f"attempt {attempt} to start", lambda: project.marked(job_id, attempt, "start"))
        assert w.stop(signal.SIGTERM) == 0, w.stderr
        return w.stderr


@pytest.mark.parametrize("name", ["sleeper", "async_sleeper"])
def test_deploys_never_use_up_a_job_that_outlives_the_grace_period(
    project: Project, name: str
) -> None:
    with project.app() as ns:
        job = ns[name].insert({"seconds": 60})
    assert job.max_attempts == 1
    for attempt in (1, 2, 3):
        log = deploy_once(project, job.id, attempt)
        # The stop line names the job, its worker and attempt.
        lines = [line for line in log.splitlines() if "interrupted by shutdown and handed" in line]
        assert len(lines) == 1, log
        assert "WARNING" in lines[0]
        assert f"{job.id} ({name}, attempt {attempt})" in lines[0], lines[0]
        assert "Traceback" not in log and "ERROR" not in log, log
        stored = project.jobs()[job.id]
        assert stored.state in WAITING, (stored.state, stored.errors)
        assert stored.attempt == attempt
        # The attempt was not counted: as many remain as before the first run.
        assert stored.max_attempts - stored.attempt == job.max_attempts - job.attempt
        assert not project.marked(job.id, attempt, "done")
        if name == "async_sleeper":
            assert project.marked(job.id, attempt, "cancelled")
    history = project.jobs()[job.id].errors
    assert [e["attempt"] for e in history] == [1, 2, 3]
    for entry in history:
        assert entry["error"].startswith("interrupted by shutdown"), entry["error"]
        assert "grace period of 0.5 s" in entry["error"]
    assert not any("orphaned" in e["error"] for e in history)


def test_an_interrupted_job_on_its_last_attempt_runs_again_and_completes(
    project: Project,
) -> None:
    with project.app() as ns:
        job = ns["slow_once"].insert()
    assert job.max_attempts == 1
    deploy_once(project, job.id, 1)
    with worker(project, "--grace", "5") as w:
        wait_for("attempt 2 to finish", lambda: project.marked(job.id, 2, "done"))
        assert w.stop() == 0
    stored = project.jobs()[job.id]
    assert (stored.state, stored.attempt) == (S.COMPLETED, 2)
    assert [e["error"].split(":")[0] for e in stored.errors] == ["interrupted by shutdown"]


def test_jobs_that_finish_within_the_grace_period_are_not_interrupted(project: Project) -> None:
    with project.app() as ns:
        job = ns["sleeper"].insert({"seconds": 0.5})
    with worker(project, "--grace", "20") as w:
        wait_for("the job to start", lambda: project.marked(job.id, 1, "start"))
        assert w.stop() == 0
        log = w.stderr
    assert "every running job finished" in log
    assert "interrupted" not in log
    stored = project.jobs()[job.id]
    assert stored.state is S.COMPLETED and stored.errors == []


def test_a_late_result_after_the_hand_back_is_refused(
    store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In-process: app.stop() returns once the grace period runs out while the job's thread
    runs on; when the job then returns, its outcome is not recorded."""
    caplog.set_level(logging.WARNING, logger="kathikon")
    app = kathikon.Kathikon(store_path, queues={"default": 1}, poll_interval=0.1)
    started, release, returned = threading.Event(), threading.Event(), threading.Event()

    @app.worker(max_attempts=1)
    def holds(job: kathikon.Job) -> None:
        started.set()
        release.wait(30)
        returned.set()

    try:
        job = holds.insert()
        app.start()
        assert started.wait(10)
        assert app.stop(timeout=0.2) is False
        handed = [r.getMessage() for r in caplog.records if "handed back" in r.getMessage()]
        assert len(handed) == 1 and re.search(rf"\b{job.id} \(\S*holds, attempt 1\)", handed[0])
        release.set()
        assert returned.wait(10)
        # The lane thread sends an outcome (if it sent one) right after the job returns.
        for thread in threading.enumerate():
            if thread.name.startswith("kathikon-default-"):
                thread.join(10)
        app._engine.sync()
        stored = app.get(job)
        assert stored.state in WAITING
        assert stored.completed_at is None
        assert [e["error"].split(":")[0] for e in stored.errors] == ["interrupted by shutdown"]
    finally:
        release.set()
        app.close(timeout=5)


def test_a_lane_past_the_grace_period_hands_back_what_it_holds_and_reports_what_finished(
    store_path: Path,
) -> None:
    """One lane; the jobs behind the stuck one may have been claimed with it (the lane sizes
    its claims by its pace) or not: either way none stays executing, none runs after the
    hand-back, none loses an attempt, and each finished job is reported once."""
    app = kathikon.Kathikon(store_path, queues={"default": 1}, poll_interval=0.1)
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []
    stops: list[tuple[int, str]] = []

    @app.worker
    def quick(job: kathikon.Job) -> None:
        ran.append(job.args["name"])

    @app.worker
    def stuck(job: kathikon.Job) -> None:
        ran.append("stuck")
        started.set()
        release.wait(30)

    kathikon.telemetry.attach(
        "stops",
        [("kathikon", "job", "stop")],
        lambda e, m, md: stops.append((md["job"].id, md["outcome"])),
    )
    try:
        before = [quick.insert({"name": f"before{i}"}) for i in range(3)]
        blocker = stuck.insert({})
        after = [quick.insert({"name": f"after{i}"}) for i in range(3)]
        app.start()
        assert started.wait(10)
        assert app.stop(timeout=0.2) is False
        release.set()
        for thread in threading.enumerate():
            if thread.name.startswith("kathikon-default-"):
                thread.join(10)
        app._engine.sync()
        assert ran == ["before0", "before1", "before2", "stuck"]
        for job in before:
            assert app.get(job).state is S.COMPLETED
            assert stops.count((job.id, "complete")) == 1
        assert stops.count((blocker.id, "interrupt")) == 1
        for job in [blocker, *after]:
            stored = app.get(job)
            assert stored.state in WAITING, stored
            assert stored.max_attempts - stored.attempt == job.max_attempts, stored
            claimed = stored.attempt == 1
            assert [e["error"].split(":")[0] for e in stored.errors] == (
                ["interrupted by shutdown"] if claimed else []
            )
        assert app.get(blocker).attempt == 1
    finally:
        release.set()
        kathikon.telemetry.detach("stops")
        app.close(timeout=5)
