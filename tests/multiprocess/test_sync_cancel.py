"""Cancelling a running sync job in a worker process (``kathikon worker --processes N``, real
processes, ``timeout_app.py``): with ``cancel="kill"`` its process ends within a few seconds
of the cancel, the job stays cancelled, the job that ran beside it is rescued and completes
once, and the process that replaced it serves new jobs; without it the job runs on to its
end in the same process and its outcome is refused. Each runs on a store file and on
PostgreSQL (every process a node, the beside job rescued once the stopped process's lease ran
out)."""

from __future__ import annotations

import time

from conftest import WaitUntil
from sync_stops import Stops, alive, stops_on

from kathikon import JobState

stops = stops_on  # the fixture: each test on a store file, then on PostgreSQL


def test_cancelling_a_running_job_of_a_cancel_kill_worker_ends_its_process(
    stops: Stops, wait_until: WaitUntil
) -> None:
    app = stops.client()
    beside = app.insert("timeout_app.steady", {"seconds": 8}).id
    doomed = app.insert("timeout_app.hang_kill", {}).id
    stops.worker(1)  # one process, concurrency 2: both jobs run in it at once
    wait_until(
        lambda: stops.pids("start", doomed) and stops.pids("start", beside), 60, "both to start"
    )
    [pid] = stops.pids("start", doomed)
    assert stops.pids("start", beside) == [pid], "they run in one process"
    cancelled_at = time.monotonic()
    app.cancel(doomed)
    wait_until(lambda: not alive(pid), 30, f"worker process {pid} to end")
    took = time.monotonic() - cancelled_at
    assert took < 5, f"the process ended {took:.1f} s after the cancel"
    assert app.get(doomed).state is JobState.CANCELLED
    assert stops.pids("end", doomed) == []
    wait_until(lambda: f"{pid} exited with status 70" in stops.log(), 30, "the pool to see it")
    assert f"job {doomed} was cancelled while it ran" in stops.log()

    # The job beside it is rescued and completes once, in the process that replaced it.
    wait_until(lambda: app.get(beside).state is JobState.COMPLETED, 60, "it to complete")
    [again] = stops.pids("end", beside)
    assert again != pid
    assert app.get(beside).errors[0]["error"].startswith("rescued:"), app.get(beside).errors
    later = app.insert("timeout_app.steady", {}).id
    wait_until(lambda: app.get(later).state is JobState.COMPLETED, 60, "a new job to complete")
    assert stops.pids("end", later) and pid not in stops.pids("end", later)


def test_without_cancel_kill_a_cancelled_job_runs_on_and_its_outcome_is_refused(
    stops: Stops, wait_until: WaitUntil
) -> None:
    app = stops.client()
    running = app.insert("timeout_app.solo", {"seconds": 3}).id
    stops.worker(1)
    wait_until(lambda: stops.pids("start", running), 60, "the job to start")
    [pid] = stops.pids("start", running)
    app.cancel(running)
    wait_until(lambda: stops.pids("end", running), 30, "the job to run on to its end")
    assert stops.pids("end", running) == [pid]
    # The lane sends that outcome before it claims again: once the next job of its queue
    # (concurrency 1) completed, the outcome has been refused or not at all.
    after = app.insert("timeout_app.solo", {}).id
    wait_until(lambda: app.get(after).state is JobState.COMPLETED, 30, "the next job")
    assert stops.pids("end", after) == [pid], "the same process ran it"
    job = app.get(running)
    assert job.state is JobState.CANCELLED, job
    assert alive(pid)
    assert "exited with status" not in stops.log()
