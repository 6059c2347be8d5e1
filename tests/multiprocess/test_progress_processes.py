"""Job progress and the processes list with real processes: a ``kathikon worker`` that owns
the store, and a ``kathikon worker --processes 2`` whose worker processes are clients of it;
the test process is a client in both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

import kathikon

HERE = Path(__file__).parent
KATHIKON = Path(sys.executable).with_name("kathikon")


class Run:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = tmp / "jobs.redb"
        self.side = tmp / "side.log"
        self.env = dict(
            os.environ,
            KATHIKON_MP_STORE=str(self.store),
            KATHIKON_MP_SIDE=str(self.side),
            PYTHONUNBUFFERED="1",
        )
        self.procs: list[subprocess.Popen[str]] = []

    def worker(self, *extra: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [str(KATHIKON), "worker", "progress_app:app", "--log-level", "warning", *extra],
            cwd=HERE,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        wait_for("the worker's socket", lambda: Path(f"{self.store}.sock").exists())
        return proc

    def client(self) -> kathikon.Kathikon:
        app = kathikon.Kathikon(self.store, queues={"default": 2})
        for name in ("progress_app.report", "progress_app.areport"):
            app.worker(name=name)(_not_here)
        return app

    def started(self) -> dict[int, int]:
        """job id → pid of the process that reached the gate."""
        if not self.side.exists():
            return {}
        lines = [line.split() for line in self.side.read_text().splitlines()]
        return {int(job): int(pid) for pid, job in lines}

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [str(KATHIKON), *args, "--path", str(self.store), "--json"],
            cwd=HERE,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def _not_here(job: kathikon.Job) -> None:
    raise AssertionError("these jobs run in the worker processes")


def wait_for(what: str, predicate: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path)
    try:
        yield r
    finally:
        for proc in r.procs:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=10)


def children(parent: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    # multiprocessing's resource tracker is a child too; the worker processes are the others.
    return [p for p in pids if b"resource_tracker" not in _cmdline(p)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _progress_is(app: kathikon.Kathikon, job_id: int, fraction: float, note: str) -> bool:
    p = app.progress(job_id)
    return p is not None and (p.fraction, p.note) == (fraction, note)


@pytest.mark.parametrize("processes", [0, 2], ids=["owner", "worker-processes"])
@pytest.mark.parametrize("worker", ["progress_app.report", "progress_app.areport"])
def test_progress_is_seen_while_running_and_the_last_report_is_kept(
    run: Run, processes: int, worker: str
) -> None:
    w = run.worker(*(["--processes", str(processes)] if processes else []))
    app = run.client()
    try:
        gate = run.tmp / f"gate-{worker}"
        job = app.insert(worker, {"n": 5000, "gate": str(gate)})
        wait_for("the job at its gate", lambda: job.id in run.started())
        runner = run.started()[job.id]
        assert (runner == w.pid) == (processes == 0), "owner runs it, or a worker process"
        # No ack has happened: the value reached the store through the rate-limited writer.
        wait_for("progress 0.5 stored", lambda: _progress_is(app, job.id, 0.5, "half"))
        shown = json.loads(run.cli("job", str(job.id)))
        assert shown["state"] == "executing"
        assert shown["progress"]["fraction"] == 0.5 and shown["progress"]["note"] == "half"
        gate.touch()
        wait_for("the job completed", lambda: app.get(job).state is kathikon.JobState.COMPLETED)
        # Reported just before the job returned: written before the ack.
        last = app.progress(job)
        assert last is not None
        assert (last.fraction, last.note, last.attempt) == (1.0, "done", 1)
        assert last.at.tzinfo is not None
    finally:
        app.close()


def test_processes_lists_the_owner_the_worker_processes_and_who_runs_what(run: Run) -> None:
    w = run.worker("--processes", "2")
    wait_for("two worker processes", lambda: len(children(w.pid)) == 2)
    app = run.client()
    try:
        pool = set(children(w.pid))
        wait_for(
            "the worker processes connected",
            lambda: pool <= {p.pid for p in app.processes() if p.role == "client"},
        )
        gate = run.tmp / "gate"
        job = app.insert("progress_app.report", {"n": 1, "gate": str(gate)})
        wait_for("the job at its gate", lambda: job.id in run.started())
        runner = run.started()[job.id]
        assert runner in pool

        found = app.processes()
        owner = found[0]
        assert (owner.pid, owner.role, owner.lease_expires, owner.jobs) == (
            w.pid,
            "owner",
            None,
            (),
        )
        clients = {p.pid: p for p in found[1:]}
        assert all(p.role == "client" for p in clients.values())
        assert set(clients) == pool | {os.getpid()}, found
        assert clients[runner].jobs == (job.id,), "the sleeping job shows under its process"
        assert all(p.jobs == () for pid, p in clients.items() if pid != runner)
        for pid in pool:
            p = clients[pid]
            assert p.queues == ("default",)
            assert p.lease_expires is not None and p.lease_expires > p.last_seen
            assert p.connected_at <= p.last_seen
            assert p.hostname == owner.hostname

        listed = json.loads(run.cli("processes"))
        assert listed[0]["pid"] == w.pid and listed[0]["role"] == "owner"
        assert pool <= {p["pid"] for p in listed[1:]}
        assert [p["jobs"] for p in listed if p["pid"] == runner] == [[job.id]]

        gate.touch()
        wait_for("the job completed", lambda: app.get(job).state is kathikon.JobState.COMPLETED)
        assert all(p.jobs == () for p in app.processes())
    finally:
        app.close()
