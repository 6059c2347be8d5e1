"""Sync jobs' timeouts in worker processes (``kathikon worker --processes N``, real
processes): a job sleeping past its timeout, or looping without sleeping, is recorded as
failed with a ``timeout:`` error within about a second of it, its worker process is replaced,
and a job that ran beside it in that process is rescued and completes once. A process
without worker processes refuses to run such a worker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import WaitUntil

import kathikon
from kathikon import JobState

HERE = Path(__file__).parent
KATHIKON = Path(sys.executable).with_name("kathikon")

Side = list[tuple[str, int, int, int]]


class Timeouts:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = tmp / "jobs.redb"
        self.side = tmp / "side.log"
        self.env = dict(
            os.environ,
            KATHIKON_TIMEOUT_STORE=str(self.store),
            KATHIKON_TIMEOUT_SIDE=str(self.side),
            PYTHONUNBUFFERED="1",
        )
        self.procs: list[subprocess.Popen[str]] = []

    def worker(self, processes: int) -> subprocess.Popen[str]:
        with open(self.tmp / "worker.log", "w") as log:
            proc = subprocess.Popen(
                [str(KATHIKON), "worker", "timeout_app:app", "--processes", str(processes)],
                cwd=HERE,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.procs.append(proc)
        return proc

    def log(self) -> str:
        return (self.tmp / "worker.log").read_text()

    def runs(self) -> Side:
        if not self.side.exists():
            return []
        out = []
        for line in self.side.read_text().splitlines():
            what, pid, job, attempt = line.split()
            out.append((what, int(pid), int(job), int(attempt)))
        return out

    def client(self) -> kathikon.Kathikon:
        """An app in the test process that inserts ``timeout_app``'s jobs (never runs them)."""
        app = kathikon.Kathikon(self.store, queues={"default": 2})
        # An insert takes its job's settings from the inserting app's registration.
        app.worker(name="timeout_app.hang", max_attempts=2)(_not_here)
        app.worker(name="timeout_app.spin", max_attempts=1)(_not_here)
        app.worker(name="timeout_app.steady")(_not_here)
        return app


def _not_here(job: kathikon.Job) -> None:
    raise AssertionError("timeout_app's jobs run in worker processes")


@pytest.fixture
def timeouts(tmp_path: Path) -> Iterator[Timeouts]:
    t = Timeouts(tmp_path)
    yield t
    for proc in t.procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    subprocess.run(["pkill", "-KILL", "-f", "timeout_app:app"], check=False)


def test_a_sleeping_sync_job_past_its_timeout_fails_and_its_process_is_replaced(
    timeouts: Timeouts, wait_until: WaitUntil
) -> None:
    app = timeouts.client()
    job_id = app.insert("timeout_app.hang", {}).id
    timeouts.worker(1)
    wait_until(lambda: app.get(job_id).state is JobState.DISCARDED, 60, "both attempts to end")
    job = app.get(job_id)
    assert [e["error"].split(":")[0] for e in job.errors] == ["timeout", "timeout"], job.errors
    assert f"job {job_id} (timeout_app.hang) ran past its timeout of 1 s" in job.errors[0]["error"]
    starts = [(pid, attempt) for what, pid, _, attempt in timeouts.runs() if what == "start"]
    assert [attempt for _, attempt in starts] == [1, 2]
    assert starts[0][0] != starts[1][0], "the second attempt ran in a new worker process"
    # Each attempt failed about a second after it started, not after its 60 s sleep.
    for error, started in zip(job.errors, (job.inserted_at, job.errors[0]["at"])):
        assert (error["at"] - started).total_seconds() < 5, job.errors
    assert "exited with status 70" in timeouts.log()
    assert not any(what == "end" for what, *_ in timeouts.runs())
    app.close()


def test_a_busy_loop_holding_the_interpreter_is_stopped_too(
    timeouts: Timeouts, wait_until: WaitUntil
) -> None:
    app = timeouts.client()
    job_id = app.insert("timeout_app.spin", {}).id
    timeouts.worker(1)
    wait_until(lambda: app.get(job_id).state is JobState.DISCARDED, 60, "the attempt to end")
    job = app.get(job_id)
    assert job.errors[-1]["error"].startswith("timeout:"), job.errors
    app.close()


def test_a_job_running_beside_it_is_rescued_and_completes_once(
    timeouts: Timeouts, wait_until: WaitUntil
) -> None:
    app = timeouts.client()
    steady = app.insert("timeout_app.steady", {"seconds": 3}).id
    hang = app.insert("timeout_app.hang", {}).id
    timeouts.worker(1)  # one process, concurrency 2: both jobs run in it at once
    wait_until(
        lambda: app.get(steady).state is JobState.COMPLETED, 60, "the steady job to complete"
    )
    runs = timeouts.runs()
    steady_runs = [(what, pid) for what, pid, job, _ in runs if job == steady]
    first_pid = next(pid for what, pid, job, _ in runs if job == hang and what == "start")
    assert ("start", first_pid) in steady_runs, "it ran beside the job that timed out"
    assert steady_runs.count(("end", first_pid)) == 0, "that process ended before it finished"
    assert [what for what, _ in steady_runs].count("end") == 1, "completed once"
    assert app.get(steady).errors[0]["error"].startswith("rescued:"), app.get(steady).errors
    assert app.get(hang).errors[0]["error"].startswith("timeout:")
    app.close()


def test_without_worker_processes_a_sync_timeout_is_refused(tmp_path: Path) -> None:
    app = kathikon.Kathikon(tmp_path / "jobs.redb")

    @app.worker(timeout=2)
    def slow(job: kathikon.Job) -> None:
        pass

    @app.worker(timeout=2)
    async def fine(job: kathikon.Job) -> None:
        pass

    with pytest.raises(kathikon.ConfigurationError, match="processes=N") as refused:
        app.start()
    assert "slow" in str(refused.value) and "fine" not in str(refused.value)
    app.insert(slow.name, {})
    assert app.drain() == {"completed": 1}, "drain runs it, unbounded"
    app.close()
