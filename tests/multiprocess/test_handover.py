"""Handing the store over between real processes: the owner (a ``kathikon worker``) stops
with SIGTERM, or a plain owner is SIGKILLed, while producers insert continuously. Every insert
a producer saw return is stored exactly once under the id it returned, no producer sees an
error, and one of the remaining processes takes the store over, saying so in one INFO line
and logging no error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest

import kathikon

HERE = Path(__file__).parent
KATHIKON = Path(sys.executable).with_name("kathikon")
TIMEOUT = 60.0


@dataclass
class Proc:
    popen: subprocess.Popen[str]
    out: Path
    err: Path

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines()

    def stderr(self) -> str:
        return self.err.read_text()


@dataclass
class Setup:
    root: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    @property
    def store(self) -> Path:
        return self.root / "jobs.redb"

    def spawn(self, *args: str) -> Proc:
        n = len(self.procs)
        out, err = self.root / f"p{n}.out", self.root / f"p{n}.err"
        with out.open("w") as o, err.open("w") as e:
            popen = subprocess.Popen(
                list(args), cwd=HERE, env=self.env, stdout=o, stderr=e, text=True
            )
        proc = Proc(popen, out, err)
        self.procs.append(proc)
        return proc

    def worker(self) -> Proc:
        """``kathikon worker mp_app:app``, once it has logged its start line."""
        w = self.spawn(str(KATHIKON), "worker", "mp_app:app")
        wait_for("the worker's start line", lambda: "worker started" in w.stderr())
        return w

    def producer(self, first: int) -> Proc:
        """steady_producer.py numbering its jobs from ``first``, once it has inserted some."""
        p = self.spawn(sys.executable, "steady_producer.py", str(self.root / "stop"), str(first))
        wait_for("the producer's first inserts", lambda: len(p.lines()) >= 20, p)
        return p


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    env = dict(os.environ)
    env.update(
        KATHIKON_MP_STORE=str(tmp_path / "jobs.redb"),
        KATHIKON_MP_SIDE=str(tmp_path / "side.log"),
        PYTHONUNBUFFERED="1",
    )
    s = Setup(tmp_path, env)
    try:
        yield s
    finally:
        for proc in s.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
            proc.popen.wait(TIMEOUT)


def wait_for(what: str, predicate: Callable[[], object], proc: Optional[Proc] = None) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if proc is not None and proc.popen.poll() is not None:
            pytest.fail(f"{what}: the process exited: {proc.stderr()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {TIMEOUT} s waiting for {what}")
        time.sleep(0.02)


def inserts_after(producers: list[Proc], count: int) -> None:
    """Wait until each producer has had ``count`` more inserts return."""
    marks = [len(p.lines()) + count for p in producers]
    for p, mark in zip(producers, marks):
        wait_for(f"{count} more inserts", lambda p=p, mark=mark: len(p.lines()) >= mark, p)


def stop_producers(setup: Setup, producers: list[Proc]) -> dict[int, int]:
    """Stop them; every job whose insert returned in them, as ``{n: id}``. Each must exit
    cleanly, with no error on its stderr."""
    (setup.root / "stop").touch()
    acked: dict[int, int] = {}
    for p in producers:
        assert p.popen.wait(TIMEOUT) == 0, p.stderr()
        assert "Error" not in p.stderr() and "Traceback" not in p.stderr(), p.stderr()
        for line in p.lines():
            job_id, n = map(int, line.split())
            assert n not in acked, f"job {n} returned twice"
            acked[n] = job_id
    return acked


def assert_stored_exactly_once(store: Path, acked: dict[int, int]) -> None:
    app = kathikon.Kathikon(store)
    try:
        jobs = app.jobs(limit=1_000_000)
    finally:
        app.close()
    times = Counter(job.args["n"] for job in jobs)
    assert [n for n, k in times.items() if k > 1] == [], "stored more than once"
    assert {job.args["n"]: job.id for job in jobs} == acked


def took_over_from(proc: Proc, pid: int, store: Path) -> bool:
    return f"took over the store {store.resolve()} from pid {pid}" in proc.stderr()


def test_a_worker_stopped_with_sigterm_hands_the_store_over_without_errors(
    setup: Setup,
) -> None:
    owner = setup.worker()
    assert "role=owner" in owner.stderr()
    second = setup.worker()
    assert f"role=client of pid {owner.popen.pid}" in second.stderr()
    producers = [setup.producer(0), setup.producer(1_000_000)]

    owner.popen.send_signal(signal.SIGTERM)
    assert owner.popen.wait(TIMEOUT) == 0, owner.stderr()
    inserts_after(producers, 100)  # through the next owner
    acked = stop_producers(setup, producers)
    assert_stored_exactly_once(setup.store, acked)

    # Exactly one of the others took the store over, and said so once.
    heirs = [p for p in [second, *producers] if took_over_from(p, owner.popen.pid, setup.store)]
    assert len(heirs) == 1, [p.stderr() for p in (second, *producers)]
    assert heirs[0].stderr().count("took over the store") == 1
    # Nothing anywhere was logged as an error: a graceful stop is routine.
    for p in (owner, second):
        assert "ERROR" not in p.stderr() and "Traceback" not in p.stderr(), p.stderr()
    second.popen.send_signal(signal.SIGTERM)
    assert second.popen.wait(TIMEOUT) == 0, second.stderr()
    assert "ERROR" not in second.stderr() and "Traceback" not in second.stderr(), second.stderr()


@pytest.mark.parametrize("round_", range(3))
def test_inserts_in_flight_when_the_owner_is_killed_are_stored_exactly_once(
    setup: Setup, round_: int
) -> None:
    owner = setup.spawn(sys.executable, "owner.py")
    wait_for("the owner", lambda: "owner ready" in owner.out.read_text(), owner)
    producers = [setup.producer(0), setup.producer(1_000_000)]
    # Let each round kill the owner at a different point of the producers' stream.
    inserts_after(producers, 10 + 40 * round_)
    owner.popen.send_signal(signal.SIGKILL)
    owner.popen.wait(TIMEOUT)
    inserts_after(producers, 100)
    acked = stop_producers(setup, producers)
    assert_stored_exactly_once(setup.store, acked)
    heirs = [p for p in producers if took_over_from(p, owner.popen.pid, setup.store)]
    assert len(heirs) == 1, [p.stderr() for p in producers]
