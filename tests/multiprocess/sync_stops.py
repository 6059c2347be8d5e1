"""The harness of the tests of sync jobs stopped in worker processes (a timeout, a cancel of a
``cancel="kill"`` worker): ``kathikon worker timeout_app:app --processes N`` on a store file
or a PostgreSQL database, the side file its jobs write, and an app in the test process that
inserts and reads the jobs (and never runs one)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

import kathikon

HERE = Path(__file__).parent
KATHIKON = Path(sys.executable).with_name("kathikon")

#: The lease of every process of ``timeout_app`` on PostgreSQL (each is a node), seconds: the
#: other jobs of a process that was stopped are rescued once it ran out.
PG_LEASE = 3.0

Side = list[tuple[str, int, int, int]]


class Stops:
    """One test's worker commands and files; ``url``: the PostgreSQL database's, else the
    store file in ``tmp``."""

    def __init__(self, tmp: Path, url: Optional[str] = None) -> None:
        self.tmp = tmp
        self.url = url
        self.store = tmp / "jobs.redb"
        self.side = tmp / "side.log"
        self.env = dict(
            os.environ,
            KATHIKON_TIMEOUT_STORE=str(self.store),
            KATHIKON_TIMEOUT_SIDE=str(self.side),
            PYTHONUNBUFFERED="1",
        )
        if url is not None:
            self.env.update(KATHIKON_TIMEOUT_URL=url, KATHIKON_TIMEOUT_LEASE=str(PG_LEASE))
        self.procs: list[subprocess.Popen[str]] = []
        self.apps: list[kathikon.Kathikon] = []

    def worker(self, processes: int) -> subprocess.Popen[str]:
        """Start ``kathikon worker`` with ``processes`` worker processes, in a process group
        of its own (which :meth:`close` ends, worker processes included)."""
        with open(self.tmp / "worker.log", "w") as log:
            proc = subprocess.Popen(
                [str(KATHIKON), "worker", "timeout_app:app", "--processes", str(processes)],
                cwd=HERE,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def log(self) -> str:
        return (self.tmp / "worker.log").read_text()

    def runs(self) -> Side:
        """The side file: (what, pid, job id, attempt) per line."""
        if not self.side.exists():
            return []
        out = []
        for line in self.side.read_text().splitlines():
            what, pid, job, attempt = line.split()
            out.append((what, int(pid), int(job), int(attempt)))
        return out

    def pids(self, what: str, job_id: int) -> list[int]:
        """The processes that noted ``what`` ("start" or "end") for job ``job_id``, in order."""
        return [pid for w, pid, job, _ in self.runs() if w == what and job == job_id]

    def client(self) -> kathikon.Kathikon:
        """An app in the test process that inserts ``timeout_app``'s jobs (never runs them).
        On PostgreSQL it is a node too, one whose upkeep ticks once an hour, so it never
        leads: the worker command's processes rescue and promote."""
        queues = {"default": 2, "solo": 1}
        if self.url is not None:
            app = kathikon.Kathikon(url=self.url, queues=queues, scheduler_interval=3600)
        else:
            app = kathikon.Kathikon(self.store, queues=queues)
        # An insert takes its job's settings from the inserting app's registration.
        app.worker(name="timeout_app.hang", max_attempts=2)(_not_here)
        app.worker(name="timeout_app.spin", max_attempts=1)(_not_here)
        app.worker(name="timeout_app.steady")(_not_here)
        app.worker(name="timeout_app.hang_kill")(_not_here)
        app.worker(name="timeout_app.solo", queue="solo")(_not_here)
        self.apps.append(app)
        return app

    def close(self) -> None:
        """Stop the worker commands (SIGTERM, then SIGKILL to their whole process group) and
        close the apps."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        for app in self.apps:
            app.close()


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited and not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _not_here(job: kathikon.Job) -> None:
    raise AssertionError("timeout_app's jobs run in worker processes")


@pytest.fixture(name="stops", params=["embedded", "postgres"])
def stops_on(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stops]:
    """The fixture ``stops``: a :class:`Stops` on a store file, then on a PostgreSQL
    database (a test module imports it and binds it to ``stops``)."""
    url = request.getfixturevalue("pg_db") if request.param == "postgres" else None
    s = Stops(tmp_path, url)
    try:
        yield s
    finally:
        s.close()
