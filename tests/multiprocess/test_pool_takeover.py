"""Who takes a store over when its owner is killed while worker-process pools are its
clients: a pool's parent (which runs no jobs), never one of its worker processes, whose
jobs may crash them. Real processes: ``kathikon worker --processes 2`` pools and a plain
owner, each owner in turn SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_processes import Setup, _not_here, setup, started_worker, wait_for, worker_pids

import kathikon
from kathikon import JobState as S

__all__ = ["setup"]  # the fixture, used by name

ROUNDS = 12


def _probe(store: Path) -> kathikon.Kathikon:
    """A client in this test process that never takes the store over itself, so that it
    cannot win the race it watches."""
    app = kathikon.Kathikon(store, queues={"default": 2}, takeover=False)
    app.worker(name="mp_app.record")(_not_here)
    return app


def _ran(app: kathikon.Kathikon, job_id: int) -> bool:
    return app.get(job_id).state is S.COMPLETED


def test_after_each_owner_kill_a_pool_parent_owns_the_store_never_a_worker_process(
    setup: Setup,
) -> None:
    owner = setup.spawn(sys.executable, "owner.py")
    assert owner.stdout is not None and owner.stdout.readline().strip() == "owner ready"
    pools = [started_worker(setup, 2), started_worker(setup, 2)]
    probe = _probe(setup.store)
    try:
        victim = owner.pid
        orphans: list[int] = []
        for round_ in range(ROUNDS):
            parents = {p.pid for p in pools if p.poll() is None}
            children = {c for parent in parents for c in worker_pids(setup, parent)}
            orphans += worker_pids(setup, victim)
            os.kill(victim, signal.SIGKILL)
            for proc in setup.procs:
                if proc.pid == victim:
                    proc.wait()
            # Through whoever owns the store next: the probe waits for an owner to serve.
            job = probe.insert("mp_app.record", {"round": round_}).id
            new_owner = probe.owner_pid
            assert new_owner not in children, f"round {round_}: worker process {new_owner} owns"
            assert new_owner in parents, (
                f"round {round_}: the owner is {new_owner}, not a pool parent {parents}"
            )
            wait_for(f"round {round_}'s job to run", lambda job=job: _ran(probe, job))
            # The next victim is that parent (its pool goes with it): start another pool.
            victim = new_owner
            if round_ + 1 < ROUNDS:
                pools = [p for p in pools if p.pid != victim] + [started_worker(setup, 2)]
        # The worker processes of killed parents stop (without ever owning the store).
        wait_for("orphaned worker processes to stop", lambda: not [p for p in orphans if _alive(p)])
    finally:
        probe.close()
        _kill_pools(setup)


def test_worker_processes_of_a_dead_parent_that_owned_the_store_stop_without_owning_it(
    setup: Setup,
) -> None:
    pool = started_worker(setup, 2)
    children = worker_pids(setup, pool.pid)
    probe = _probe(setup.store)
    try:
        assert probe.owner_pid == pool.pid
        os.kill(pool.pid, signal.SIGKILL)
        pool.wait()
        wait_for(
            "the worker processes to exit",
            lambda: not [c for c in children if Path(f"/proc/{c}").exists() and _alive(c)],
        )
        # Nobody took the store: a new process owns it at once.
        started = time.monotonic()
        check = subprocess.run(
            [sys.executable, "-c", "from mp_app import app; print(app.role)"],
            cwd=Path(__file__).parent,
            env=setup.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.stdout.split() == ["owner"], check.stderr
        assert time.monotonic() - started < 30
    finally:
        probe.close()
        _kill_pools(setup)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _kill_pools(setup: Setup) -> None:
    """Kill every pool's worker processes, then its parent: children whose parent (the
    owner) is gone wait up to 5 s per call for a new owner before they stop, longer than
    the fixture waits for the pipes they share with their parent."""
    for proc in setup.procs:
        if proc.poll() is None:
            for child in worker_pids(setup, proc.pid):
                os.kill(child, signal.SIGKILL)
            proc.kill()
