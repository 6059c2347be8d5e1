"""Sync jobs' timeouts in worker processes (``kathikon worker --processes N``, real
processes): a job sleeping past its timeout, or looping without sleeping, is recorded as
failed with a ``timeout:`` error within about a second of it, its worker process is replaced,
and a job that ran beside it in that process is rescued and completes once. Each runs on a
store file and on PostgreSQL (every process a node, the beside job rescued once the stopped
process's lease ran out). A process without worker processes refuses to run such a worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import WaitUntil
from sync_stops import Stops, stops_on

import kathikon
from kathikon import JobState

stops = stops_on  # the fixture: each test on a store file, then on PostgreSQL


def test_a_sleeping_sync_job_past_its_timeout_fails_and_its_process_is_replaced(
    stops: Stops, wait_until: WaitUntil
) -> None:
    app = stops.client()
    job_id = app.insert("timeout_app.hang", {}).id
    stops.worker(1)
    wait_until(lambda: app.get(job_id).state is JobState.DISCARDED, 60, "both attempts to end")
    job = app.get(job_id)
    assert [e["error"].split(":")[0] for e in job.errors] == ["timeout", "timeout"], job.errors
    assert f"job {job_id} (timeout_app.hang) ran past its timeout of 1 s" in job.errors[0]["error"]
    starts = [(pid, attempt) for what, pid, _, attempt in stops.runs() if what == "start"]
    assert [attempt for _, attempt in starts] == [1, 2]
    assert starts[0][0] != starts[1][0], "the second attempt ran in a new worker process"
    # Each attempt failed about a second after it started, not after its 60 s sleep.
    for error, started in zip(job.errors, (job.inserted_at, job.errors[0]["at"])):
        assert (error["at"] - started).total_seconds() < 5, job.errors
    assert "exited with status 70" in stops.log()
    assert not any(what == "end" for what, *_ in stops.runs())


def test_a_busy_loop_holding_the_interpreter_is_stopped_too(
    stops: Stops, wait_until: WaitUntil
) -> None:
    app = stops.client()
    job_id = app.insert("timeout_app.spin", {}).id
    stops.worker(1)
    wait_until(lambda: app.get(job_id).state is JobState.DISCARDED, 60, "the attempt to end")
    job = app.get(job_id)
    assert job.errors[-1]["error"].startswith("timeout:"), job.errors


def test_a_job_running_beside_it_is_rescued_and_completes_once(
    stops: Stops, wait_until: WaitUntil
) -> None:
    app = stops.client()
    steady = app.insert("timeout_app.steady", {"seconds": 3}).id
    hang = app.insert("timeout_app.hang", {}).id
    stops.worker(1)  # one process, concurrency 2: both jobs run in it at once
    wait_until(
        lambda: app.get(steady).state is JobState.COMPLETED, 60, "the steady job to complete"
    )
    runs = stops.runs()
    steady_runs = [(what, pid) for what, pid, job, _ in runs if job == steady]
    first_pid = next(pid for what, pid, job, _ in runs if job == hang and what == "start")
    assert ("start", first_pid) in steady_runs, "it ran beside the job that timed out"
    assert steady_runs.count(("end", first_pid)) == 0, "that process ended before it finished"
    assert [what for what, _ in steady_runs].count("end") == 1, "completed once"
    assert app.get(steady).errors[0]["error"].startswith("rescued:"), app.get(steady).errors
    assert app.get(hang).errors[0]["error"].startswith("timeout:")


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
