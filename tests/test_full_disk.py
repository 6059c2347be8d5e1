"""A full disk under a store's owner: the owner does not stay up doing nothing.

On a real 6 MiB tmpfs (ENOSPC, as on a full disk; mounting needs root, and the tests skip
saying why without it), jobs with big args are inserted until a commit fails. Then:

* a ``kathikon worker`` that owns the store logs an ERROR naming the store's path and the
  cause and exits with status 75, for a supervisor to restart it; the client that filled the
  disk is never told to "close the app", and once space is back and a new worker owns the
  store it carries on through it: every acknowledged job runs, once;
* an app that owns the store in-process stops its workers with one ERROR line, says why in
  ``app.store_failure``, and ``app.run()`` raises instead of waiting for ever; after the app
  is reopened on a disk with space, every acknowledged job is there and runs.
"""

from __future__ import annotations

import logging
import os
import re
import runpy
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from worker_project import TIMEOUT, wait_for

import kathikon
from kathikon import JobState, KathikonError, OwnerGoneError, StorageError

#: The status `kathikon worker` exits with after its store stopped writing (EX_TEMPFAIL).
EX_TEMPFAIL = 75
#: What a full tmpfs says.
ENOSPC = "No space left on device"

APP = textwrap.dedent(
    """
    import os
    import kathikon

    app = kathikon.Kathikon(
        os.environ["FULL_DISK_STORE"],
        queues={"fill": 1, "other": 1},
        poll_interval=0.1,
        scheduler_interval=0.1,
    )

    @app.worker(name="fill", queue="fill", max_attempts=1)
    def fill(job):
        pass
    """
)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs holding a 2 MiB filler file (the space to give back later)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "kathikon-test", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        pytest.skip(f"mount(2) of a tmpfs not permitted here: {out.stderr.strip()}")
    try:
        (mnt / "filler").write_bytes(b"\xa5" * (2 * 1024 * 1024))
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def give_space_back(mnt: Path) -> None:
    """Free the filler and grow the tmpfs: running every job rewrites pages and the log
    (copy-on-write), which can take more than the filler's 2 MiB on a slow machine."""
    (mnt / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)


def big_args(n: int) -> dict[str, Any]:
    """About 8 KiB of args that do not compress, tagged with ``n``."""
    return {"n": n, "pad": os.urandom(4096).hex()}


def fill_until_refused(app: kathikon.Kathikon, fill: Any) -> tuple[list[int], KathikonError]:
    """Insert batches of four big jobs until one is refused; returns the acknowledged ids
    and the error."""
    acknowledged: list[int] = []
    for n in range(0, 4000, 4):
        try:
            jobs = app.insert_all([fill.new(big_args(n + i)) for i in range(4)])
        except KathikonError as e:
            return acknowledged, e
        acknowledged.extend(j.id for j in jobs)
    raise AssertionError("a 6 MiB disk never filled up")


class Worker:
    """``kathikon worker fullapp:app ARGS`` on the store, its stderr in a file."""

    def __init__(self, root: Path, store: Path, *args: str) -> None:
        self.log = root / f"worker-{len(list(root.glob('worker-*.log')))}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "KATHIKON_DEBUG")}
        env["FULL_DISK_STORE"] = str(store)
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kathikon.cli", "worker", "fullapp:app", *args],
                cwd=root,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        wait_for(
            "the worker's start line",
            lambda: "worker started" in self.stderr or self.proc.poll() is not None,
        )
        assert self.proc.poll() is None, self.stderr
        assert "role=owner" in self.stderr, self.stderr

    @property
    def stderr(self) -> str:
        return self.log.read_text()

    def wait(self) -> int:
        return self.proc.wait(TIMEOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)


def load_app(root: Path, store: Path) -> dict[str, Any]:
    os.environ["FULL_DISK_STORE"] = str(store)
    try:
        return runpy.run_path(str(root / "fullapp.py"), run_name="fullapp_in_test")
    finally:
        del os.environ["FULL_DISK_STORE"]


def test_a_worker_owner_exits_75_naming_the_store_and_a_new_owner_runs_every_acknowledged_job(
    tmp_path: Path, disk: Path
) -> None:
    (tmp_path / "fullapp.py").write_text(APP)
    store = disk / "jobs.redb"
    # The first worker runs only "other": the filler jobs wait, so the only writes to the
    # store are the client's inserts (and the owner's own upkeep).
    first = Worker(tmp_path, store, "--queues", "other")
    second = None
    ns = load_app(tmp_path, store)
    app: kathikon.Kathikon = ns["app"]
    try:
        assert app.role == "client"
        acknowledged, error = fill_until_refused(app, ns["fill"])
        # The failed commit (outcome unknown), the owner's refusal naming it, or — when the
        # owner exited first — the owner gone: never advice this process cannot follow.
        assert isinstance(error, (StorageError, OwnerGoneError)), repr(error)
        assert "close the app" not in str(error), error

        # The owner exits for its supervisor, saying why in an ERROR line (its workers may
        # have said so a moment before, in their own).
        assert first.wait() == EX_TEMPFAIL, first.stderr
        (line,) = [line for line in first.stderr.splitlines() if "status 75" in line]
        assert "ERROR kathikon.worker" in line, line
        assert f"the store {store.resolve()} stopped writing" in line, line
        assert ENOSPC in line, line

        # Space comes back; the supervisor's restart owns the store again and runs the jobs.
        give_space_back(disk)
        second = Worker(tmp_path, store)
        # This client's connection was to the first owner: its next call goes to the new one.
        assert app.get(acknowledged[0]).id == acknowledged[0]
        assert (app.role, app.owner_pid) == ("client", second.proc.pid)
        (late,) = app.insert_all([ns["fill"].new({"n": -1})])

        def all_completed() -> bool:
            done = {j.id for j in app.jobs(state=JobState.COMPLETED, limit=10_000)}
            return done.issuperset([*acknowledged, late.id])

        wait_for("every acknowledged job to complete", all_completed)
        for job_id in acknowledged:
            assert app.get(job_id).attempt == 1, job_id  # ran once
        assert second.proc.send_signal(signal.SIGTERM) is None
        assert second.wait() == 0, second.stderr
        assert "ERROR" not in second.stderr, second.stderr
    finally:
        app.close(timeout=5)
        first.kill()
        if second is not None:
            second.kill()


def test_an_app_owning_the_store_stops_its_workers_says_why_and_reopens_with_every_job(
    tmp_path: Path, disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "fullapp.py").write_text(APP)
    store = disk / "jobs.redb"
    ns = load_app(tmp_path, store)
    app: kathikon.Kathikon = ns["app"]
    caplog.set_level(logging.INFO, logger="kathikon")
    try:
        assert app.role == "owner" and app.store_failure is None
        # Its workers run "other" only, so the filler jobs stay until the reopen.
        app.start({"other": 1})
        acknowledged, error = fill_until_refused(app, ns["fill"])
        assert isinstance(error, StorageError) and ENOSPC in str(error), repr(error)
        failure = app.store_failure
        assert failure is not None and ENOSPC in failure, failure
        # This process owns the store: reopening the app is what it can do, and it is told so.
        with pytest.raises(StorageError, match="close the app and open it again"):
            ns["fill"].insert({"n": -1})

        def stopped_lines() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.levelno == logging.ERROR and "stopped writing" in r.getMessage()
            ]

        wait_for("the workers' ERROR line", stopped_lines)
    finally:
        app.close(timeout=5)
    (line,) = stopped_lines()
    assert f"the store {store}" in line and ENOSPC in line, line

    give_space_back(disk)
    ns = load_app(tmp_path, store)
    app = ns["app"]
    try:
        assert app.store_failure is None
        stored = {j.id: j for j in app.jobs(limit=10_000)}
        assert set(acknowledged) <= set(stored), "an acknowledged job was lost"
        counts = app.drain("fill")
        assert counts["completed"] >= len(acknowledged), counts
        for job_id in acknowledged:
            assert app.get(job_id).state == JobState.COMPLETED
    finally:
        app.close(timeout=5)


def test_app_run_raises_once_the_store_it_owns_stops_writing(tmp_path: Path, disk: Path) -> None:
    (tmp_path / "fullapp.py").write_text(APP)
    ns = load_app(tmp_path, disk / "jobs.redb")
    app: kathikon.Kathikon = ns["app"]
    raised: list[BaseException] = []

    def run() -> None:
        try:
            app.run({"other": 1})
        except BaseException as e:  # what run() raised is the result
            raised.append(e)

    runner = threading.Thread(target=run)
    try:
        runner.start()
        wait_for("the app's workers to start", lambda: app._runner is not None)
        fill_until_refused(app, ns["fill"])
        runner.join(TIMEOUT)
        assert not runner.is_alive(), "app.run() went on after the store stopped writing"
        (error,) = raised
        assert isinstance(error, StorageError), repr(error)
        assert re.search(r"the store .*jobs\.redb stopped writing", str(error)), error
        assert ENOSPC in str(error), error
    finally:
        app.close(timeout=5)
        runner.join(TIMEOUT)
