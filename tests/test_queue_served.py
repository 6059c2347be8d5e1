"""A queue that no running process serves is visible: ``app.check_queue`` and ``kathikon
stats`` say "no process runs it" while its jobs wait, and name the worker process once one
claims from it (a client claiming through the owner's socket included)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import WaitUntil

import kathikon

# A worker process for queue "default" only, a client of the test's app (the owner).
WORKER = textwrap.dedent(
    """
    import sys, time
    import kathikon

    app = kathikon.Kathikon(sys.argv[1], queues={"default": 1}, poll_interval=0.2)
    assert app.role == "client", app.role

    @app.worker(name="noop")
    def noop(job):
        pass

    app.start()
    print("worker ready", flush=True)
    while True:
        time.sleep(1)
    """
)


@pytest.fixture
def owner(store_path: Path) -> Iterator[kathikon.Kathikon]:
    """The store's owner, running no worker itself."""
    app = kathikon.Kathikon(store_path, queues={"default": 1, "reports": 1})
    app.worker(name="noop")(lambda job: None)
    app.worker(name="report", queue="reports")(lambda job: None)
    try:
        yield app
    finally:
        app.close(timeout=5)


def test_a_queue_nobody_claims_from_says_no_process_runs_it(
    owner: kathikon.Kathikon,
) -> None:
    owner.insert("report", {"n": 1})
    check = owner.check_queue("reports")
    assert check.available == 1 and check.executing == 0
    assert not check.served and check.claimer_pid is None
    assert "no process runs it" in check.summary and "1 job available" in check.summary
    assert check.oldest_available is not None
    with pytest.raises(kathikon.ConfigurationError, match="queue name"):
        owner.check_queue(3)  # type: ignore[arg-type]


def test_a_worker_process_serves_its_queues_only_and_stops_serving_when_killed(
    owner: kathikon.Kathikon, store_path: Path, wait_until: WaitUntil
) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", WORKER, str(store_path)], stdout=subprocess.PIPE, text=True
    ) as worker:
        _serve_then_kill(owner, worker, wait_until)
    # Its claims stop: after a while without one, the queue is reported unserved again.
    wait_until(lambda: not owner.check_queue("default").served, 30, "the queue to go unserved")
    check = owner.check_queue("default")
    assert check.claimer_pid == worker.pid
    assert check.summary.startswith("no process runs it")
    assert f"pid {worker.pid} last claimed from it" in check.summary


def _serve_then_kill(
    owner: kathikon.Kathikon, worker: subprocess.Popen[str], wait_until: WaitUntil
) -> None:
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "worker ready"
        wait_until(lambda: owner.check_queue("default").served, 20, "the worker's claims")
        served = owner.check_queue("default")
        assert served.claimer_pid == worker.pid and served.summary == f"served by pid {worker.pid}"
        job = owner.insert("noop", {})
        wait_until(lambda: owner.get(job).state is kathikon.JobState.COMPLETED, 20, "the job")
        owner.insert("report", {})
        assert not owner.check_queue("reports").served, "the worker runs only default"
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()


def test_stats_shows_who_serves_each_queue(
    owner: kathikon.Kathikon, store_path: Path, wait_until: WaitUntil
) -> None:
    owner.insert("report", {})
    # `kathikon stats --path` is a client of this owner, which no worker claims from.
    env = {**os.environ, "COLUMNS": "160"}
    text = subprocess.run(
        [sys.executable, "-m", "kathikon.cli", "stats", "--path", str(store_path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "served by" in text and "nobody" in text
    assert "queue reports: no process runs it: 1 job available" in text
    data = json.loads(
        subprocess.run(
            [sys.executable, "-m", "kathikon.cli", "stats", "--path", str(store_path), "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert data["queues"]["reports"]["served"] is False
    assert data["queues"]["reports"]["claimer_pid"] is None
    # A queue claimed from (here by this process's drain) names the claimer.
    owner.insert("noop", {})
    owner.drain("default")
    data = json.loads(
        subprocess.run(
            [sys.executable, "-m", "kathikon.cli", "stats", "--path", str(store_path), "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert data["queues"]["default"]["served"] is True
    assert data["queues"]["default"]["claimer_pid"] == os.getpid()
