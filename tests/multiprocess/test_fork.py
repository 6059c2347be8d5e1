"""A job that forks a child process (``os.fork``, or multiprocessing's default ``fork`` start
method) which uses the app: the child gets a session of its own, its inserts land, and the
worker it came from keeps running jobs, none left executing. With the worker as the store's
owner (the child then is a client of its parent) and with worker processes (clients of the
owner themselves). Also: a process opening a store whose owner is stopped (SIGSTOP) gets an
``OwnerNotAnsweringError`` naming it, within the connect timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

import kathikon
from kathikon import JobState as S

HERE = Path(__file__).parent
KATHIKON = Path(sys.executable).with_name("kathikon")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "jobs.redb"
    subprocess.run(["pkill", "-KILL", "-f", f"{tmp_path}"], check=False)


def env(store: Path) -> dict[str, str]:
    return {**os.environ, "KATHIKON_MP_STORE": str(store), "PYTHONUNBUFFERED": "1"}


def worker(store: Path, processes: Optional[int]) -> subprocess.Popen[str]:
    extra = ["--processes", str(processes)] if processes else []
    proc = subprocess.Popen(
        [str(KATHIKON), "worker", "fork_app:app", "--log-level", "warning", *extra],
        cwd=HERE,
        env=env(store),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # Its own process group, so the test can stop it with every process it made.
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not Path(f"{store}.sock").exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.02)
    return proc


def client(store: Path) -> kathikon.Kathikon:
    """An app in the test process, a client of the worker; knows fork_app's workers by name
    (to insert and read their jobs) but never runs them."""
    app = kathikon.Kathikon(store, queues={"default": 1}, lease=30)
    for name in ("fork_app.forks", "fork_app.child", "fork_app.plain"):
        app.worker(name=name)(_not_here)
    return app


def wait_until_stopped(pid: int) -> None:
    """Until ``pid`` is stopped (state T): a signal is delivered asynchronously."""
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        time.sleep(0.001)


def _not_here(job: kathikon.Job) -> None:
    raise AssertionError("fork_app's jobs run in the worker, not in the test process")


@pytest.mark.parametrize("processes", [None, 2], ids=["worker-owns", "worker-processes"])
def test_a_job_that_forks_and_uses_the_app_in_the_child(store: Path, processes: int) -> None:
    proc = worker(store, processes)
    app = client(store)
    try:
        forking = [
            app.insert("fork_app.forks", {"how": how})
            for _ in range(6)
            for how in ("os.fork", "multiprocessing")
        ]
        plain = [app.insert("fork_app.plain", {"n": n}).id for n in range(40)]
        deadline = time.monotonic() + 90
        while True:
            stats = app.stats()["default"]
            if stats["completed"] == len(forking) * 2 + len(plain):
                break
            assert time.monotonic() < deadline, f"not every job completed: {stats}"
            time.sleep(0.1)
        assert all(app.get(j.id).state is S.COMPLETED for j in forking)
        assert all(app.get(j).attempt == 1 for j in plain)
        children = app.jobs(worker="fork_app.child")
        assert sorted(j.args["parent"] for j in children) == sorted(j.id for j in forking)
        assert stats["executing"] == 0 and stats["retryable"] == 0
    finally:
        app.close()
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_an_owner_stopped_by_sigstop_is_named_within_the_connect_timeout(store: Path) -> None:
    proc = worker(store, None)
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        wait_until_stopped(proc.pid)
        started = time.monotonic()
        with pytest.raises(kathikon.OwnerNotAnsweringError) as raised:
            client(store)
        waited = time.monotonic() - started
        assert f"pid {proc.pid}" in str(raised.value), raised.value
        assert "SIGSTOP" in str(raised.value)
        # The connect timeout (5 s), plus the time to get here on a busy machine.
        assert waited < 30, waited
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
