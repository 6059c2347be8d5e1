"""Several nodes on one PostgreSQL database, with real processes (issue #26's proofs): each
process is its own app (pg_app.py, run by pg_node.py) on the same database. Three nodes insert
and run 3,000 jobs, each exactly once; a node SIGKILLed mid-job has its job rescued by the
others once its lease ran out; a node frozen (SIGSTOP) past its lease has its job rescued and
its late ack fenced; the leader SIGKILLed is replaced by another node and cron fires each slot
at most once.

The test process inserts and reads through an app of its own that never leads and never runs a
job (see :meth:`Cluster.observer`), and asks PostgreSQL which node holds the leader's advisory
lock (:meth:`Cluster.leader`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import psycopg  # a test dependency (make test-env), for what no app says: who leads
import pytest

import kathikon
from kathikon import JobState as S

HERE = Path(__file__).parent
# The leader's advisory lock key, `pg::leader::LEADER_LOCK` (the ASCII of "kathlead"). A bigint
# key shows in pg_locks as classid (high 32 bits) and objid (low 32 bits), objsubid 1.
LEADER_LOCK = 0x6B61_7468_6C65_6164

Run = tuple[str, int, int, int, float]


@dataclass
class Cluster:
    url: str
    tmp: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    apps: list[kathikon.Kathikon] = field(default_factory=list)

    @property
    def side(self) -> Path:
        return self.tmp / "side.log"

    def node(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """Start ``pg_node.py ARGS`` with ``env`` added to the cluster's environment; return
        it once it noted ``ready`` (its app open, its workers running)."""
        stderr = open(self.tmp / f"node-{len(self.procs)}.err", "w")
        try:
            proc = subprocess.Popen(
                [sys.executable, "pg_node.py", *args],
                cwd=HERE,
                env={**self.env, **env},
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        finally:
            stderr.close()
        self.procs.append(proc)
        wait_for(
            f"node {proc.pid} to be ready",
            lambda: proc.poll() is not None or any(self.runs("ready", pid=proc.pid)),
        )
        assert proc.poll() is None, self.stderr_of(proc)
        return proc

    def stderr_of(self, proc: subprocess.Popen[str]) -> str:
        return (self.tmp / f"node-{self.procs.index(proc)}.err").read_text()

    def runs(self, what: Optional[str] = None, pid: Optional[int] = None) -> list[Run]:
        """The side file: (what, pid, job id, attempt, time) per line, those of ``what`` and
        ``pid`` when given."""
        if not self.side.exists():
            return []
        out = []
        for line in self.side.read_text().splitlines():
            w, p, job, attempt, at = line.split()
            if (what is None or w == what) and (pid is None or int(p) == pid):
                out.append((w, int(p), int(job), int(attempt), float(at)))
        return out

    def observer(self) -> kathikon.Kathikon:
        """An app in this test process, to insert pg_app's jobs and read them. It is a node of
        the database too, but one that must not change what the test watches: its upkeep
        ticks once an hour, so it never takes the lead (the nodes under test rescue and fire
        cron), and it never starts workers."""
        app = kathikon.Kathikon(url=self.url, scheduler_interval=3600)
        for name in ("pg_app.record", "pg_app.tick"):
            app.worker(name=name)(_not_here)
        self.apps.append(app)
        return app

    def leader(self) -> Optional[int]:
        """The process id of the node whose connection holds the leader's advisory lock (the
        client end of that backend's TCP connection, found among the nodes' sockets), or
        ``None`` while no connection holds it."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
                " AND l.classid::bigint = %s AND l.objid::bigint = %s",
                (LEADER_LOCK >> 32, LEADER_LOCK & 0xFFFF_FFFF),
            ).fetchone()
        if row is None:
            return None
        inode = _socket_inode(int(row[0]))
        for proc in self.procs:
            if inode is not None and proc.poll() is None and _holds_socket(proc.pid, inode):
                return proc.pid
        return None


def lease_of(app: kathikon.Kathikon, pid: int, job: kathikon.Job) -> datetime:
    """When the lease of the node in process ``pid``, which holds ``job``, runs out as its
    latest renewal set it."""
    node = next(p for p in app.processes() if p.pid == pid)
    assert node.role == "node" and job.id in node.jobs, node
    assert node.lease_expires is not None
    return node.lease_expires


def _not_here(job: kathikon.Job) -> None:
    raise AssertionError("pg_app's jobs run in the node processes, not in the test process")


def _socket_inode(local_port: int) -> Optional[str]:
    """The inode of this machine's TCP socket bound to 127.0.0.1:``local_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{local_port:04X}":
            return fields[9]
    return None


def _holds_socket(pid: int, inode: str) -> bool:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) == f"socket:[{inode}]":
                return True
        except OSError:
            pass
    return False


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[Cluster]:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("kathikon")), "migrate", "--url", pg_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    env = dict(os.environ)
    env.update(
        KATHIKON_PG_URL=pg_url,
        KATHIKON_PG_SIDE=str(tmp_path / "side.log"),
        PYTHONUNBUFFERED="1",
    )
    c = Cluster(pg_url, tmp_path, env)
    try:
        yield c
    finally:
        for app in c.apps:
            app.close(timeout=5)
        for proc in c.procs:
            if proc.poll() is None:
                proc.kill()  # SIGKILL ends a stopped process too
            proc.communicate(timeout=30)


def wait_for(what: str, predicate: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def stop(cluster: Cluster, proc: subprocess.Popen[str]) -> str:
    """SIGTERM a node and wait for it to exit cleanly; its stdout."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, cluster.stderr_of(proc)
    return out


def test_three_nodes_insert_and_run_3000_jobs_each_exactly_once(cluster: Cluster) -> None:
    nodes = [cluster.node("--insert", "1000", KATHIKON_PG_CONCURRENCY="4") for _ in range(3)]
    wait_for("the three nodes' inserts", lambda: len(cluster.runs("inserted")) == 3, 90)
    app = cluster.observer()
    wait_for(
        "every job to complete",
        lambda: app.count(state="completed") == 3000,
        timeout=90,
    )
    inserted = [[int(i) for i in stop(cluster, node).split()] for node in nodes]
    assert [len(ids) for ids in inserted] == [1000] * 3
    acknowledged = {i for ids in inserted for i in ids}
    assert len(acknowledged) == 3000, "two inserts returned the same id"
    jobs = app.jobs(limit=10_000)
    assert {j.id for j in jobs} == acknowledged
    assert all(j.state is S.COMPLETED and j.attempt == 1 and not j.errors for j in jobs)
    starts = Counter(job for _, _, job, _, _ in cluster.runs("start"))
    ends = Counter(job for _, _, job, _, _ in cluster.runs("end"))
    assert set(starts) == acknowledged and set(starts.values()) == {1}, "each ran exactly once"
    assert ends == starts
    # Every node ran jobs, not only the ones it inserted.
    ran_by = {pid for _, pid, _, _, _ in cluster.runs("end")}
    assert ran_by == {node.pid for node in nodes}


def test_a_node_killed_mid_job_has_it_rescued_by_another_after_its_lease(
    cluster: Cluster,
) -> None:
    lease = 2.0
    nodes = [cluster.node(KATHIKON_PG_LEASE=str(lease)) for _ in range(2)]
    app = cluster.observer()
    long = app.insert("pg_app.record", {"sleep": 60})
    wait_for("the long job to start", lambda: any(cluster.runs("start")))
    _, victim, job_id, attempt, _ = cluster.runs("start")[0]
    assert (job_id, attempt) == (long.id, 1)
    short = [app.insert("pg_app.record", {"n": n}).id for n in range(20)]
    # The victim may renew once more before the signal lands: its lease runs out at this
    # time or later.
    expires = lease_of(app, victim, long)
    os.kill(victim, signal.SIGKILL)
    # Whether the victim led or not: if it did, the other node takes the lead once PostgreSQL
    # drops the dead connection; either way the leader rescues once the lease ran out.
    wait_for("the long job to complete", lambda: app.get(long).state is S.COMPLETED)
    done = app.get(long)
    assert done.attempt == 2
    rescued = [e for e in done.errors if e["error"].startswith("rescued:")]
    assert len(rescued) == 1 and rescued[0]["attempt"] == 1, done.errors
    assert f"(process {victim} on " in rescued[0]["error"], rescued
    assert f"stopped renewing its lease ({lease:.1f} s) during attempt 1" in rescued[0]["error"]
    # After the lease, not when the connection dropped (as a store file's owner rescues).
    assert rescued[0]["at"] >= expires, (rescued[0]["at"], expires)
    rescuer = next(pid for _, pid, j, n, _ in cluster.runs("start") if (j, n) == (long.id, 2))
    assert rescuer != victim and rescuer in {n.pid for n in nodes}
    assert not any(job == long.id for _, _, job, _, _ in cluster.runs("end", pid=victim))
    # No job lost: the short ones inserted beside it (some perhaps claimed by the victim's
    # other lane) all complete.
    wait_for(
        "the short jobs to complete",
        lambda: all(app.get(i).state is S.COMPLETED for i in short),
    )
    survivor = next(n for n in nodes if n.pid == rescuer)
    stop(cluster, survivor)


def test_a_node_frozen_past_its_lease_loses_its_job_and_its_late_ack_is_fenced(
    cluster: Cluster,
) -> None:
    lease = 2.0
    # A web node that runs no job leads (it is alone when it takes the lead), so the frozen
    # node is not the leader (a frozen leader is the next test's).
    leader = cluster.node("--idle", KATHIKON_PG_LEASE=str(lease))
    wait_for("the idle node to lead", lambda: cluster.leader() == leader.pid)
    workers = [cluster.node(KATHIKON_PG_LEASE=str(lease)) for _ in range(2)]
    app = cluster.observer()
    # Attempt 1 sleeps 5 s (the clock runs on while the process is stopped); attempt 2 does not.
    job = app.insert("pg_app.record", {"sleep": 5})
    wait_for("attempt 1 to start", lambda: any(cluster.runs("start")))
    _, frozen, job_id, attempt, _ = cluster.runs("start")[0]
    assert (job_id, attempt) == (job.id, 1)
    os.kill(frozen, signal.SIGSTOP)
    # Frozen, it renews no more: its lease runs out at this time.
    expires = lease_of(app, frozen, job)
    try:
        wait_for("the rescuer to complete the job", lambda: app.get(job).state is S.COMPLETED)
        completed = app.get(job)
        assert not any(cluster.runs("end", pid=frozen)), "the frozen node ran on"
    finally:
        os.kill(frozen, signal.SIGCONT)
    # Thawed, the node finishes attempt 1 and reports it: refused.
    wait_for("attempt 1's late end", lambda: any(cluster.runs("end", pid=frozen)))
    wait_for(
        "the refusal to be recorded",
        lambda: any(e["error"].startswith("fenced:") for e in app.get(job).errors),
    )
    done = app.get(job)
    # The rescuer's outcome stands: completed by attempt 2, the late ack not applied over it.
    assert done.state is S.COMPLETED and done.attempt == 2
    assert done.completed_at == completed.completed_at
    kinds = [(e["attempt"], e["error"].split(":")[0]) for e in done.errors]
    assert kinds == [(1, "rescued"), (1, "fenced")], done.errors
    assert done.errors[0]["at"] >= expires, (done.errors[0]["at"], expires)
    fenced = done.errors[1]["error"]
    assert f"(process {frozen})" in fenced and "'completed'" in fenced, fenced
    # What ran where: attempt 1 on the frozen node (its end noted only once thawed), attempt 2
    # on the other worker node.
    runs = [(what, pid, attempt) for what, pid, j, attempt, _ in cluster.runs() if j == job.id]
    rescuer = next(w.pid for w in workers if w.pid != frozen)
    assert sorted(runs) == sorted(
        [("start", frozen, 1), ("start", rescuer, 2), ("end", rescuer, 2), ("end", frozen, 1)]
    ), runs
    assert cluster.leader() == leader.pid
    for node in [leader, *workers]:
        stop(cluster, node)


def test_the_leader_killed_is_replaced_and_cron_fires_each_slot_once(cluster: Cluster) -> None:
    app = cluster.observer()

    def slots() -> list[str]:
        return [j.meta["cron"]["slot"] for j in app.jobs(worker="pg_app.tick", limit=10_000)]

    first = cluster.node(KATHIKON_PG_CRON="1")
    wait_for("the only node to lead", lambda: cluster.leader() == first.pid)
    wait_for("three slots fired", lambda: len(slots()) >= 3)
    second = cluster.node(KATHIKON_PG_CRON="1")
    assert cluster.leader() == first.pid
    before = len(slots())
    os.kill(first.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    first.wait(timeout=30)
    # PostgreSQL ends the dead node's session when its connection drops, releasing the lock;
    # the second node takes it at its next tick.
    wait_for("the second node to lead", lambda: cluster.leader() == second.pid)
    assert time.monotonic() - killed_at < 10, "the takeover waited for something"
    after_kill = slots()
    wait_for("three more slots fired", lambda: len(slots()) >= len(after_kill) + 3)
    fired = slots()
    # Each slot at most once over the whole run, across the handover. Slots that came while
    # nobody led are skipped, not fired late (the default catch-up policy, "skip"): a gap in
    # the seconds is allowed, a repeat is not.
    assert len(fired) == len(set(fired)), Counter(s for s in fired if fired.count(s) > 1)
    assert fired == sorted(fired), "slots fired out of order"
    assert len(fired) > before
    # The jobs of the slots fired after the kill run on the node left.
    later = {j.id for j in app.jobs(worker="pg_app.tick", limit=10_000)[len(after_kill) :]}
    wait_for(
        "the later slots' jobs to run on the second node",
        lambda: later <= {job for _, _, job, _, _ in cluster.runs("tick", pid=second.pid)},
    )
    stop(cluster, second)


def test_a_frozen_leader_loses_the_lead_and_cron_fires_each_slot_once(cluster: Cluster) -> None:
    lease = 2.0
    app = cluster.observer()

    def slots() -> list[str]:
        return [j.meta["cron"]["slot"] for j in app.jobs(worker="pg_app.tick", limit=10_000)]

    first = cluster.node(KATHIKON_PG_CRON="1", KATHIKON_PG_LEASE=str(lease))
    wait_for("the only node to lead", lambda: cluster.leader() == first.pid)
    wait_for("two slots fired", lambda: len(slots()) >= 2)
    second = cluster.node(KATHIKON_PG_CRON="1", KATHIKON_PG_LEASE=str(lease))
    os.kill(first.pid, signal.SIGSTOP)
    try:
        # Frozen, the leader keeps its connection and so the lock; once its lease ran out,
        # the other node rescues it and ends its connections, and the lock is free.
        wait_for("the second node to lead", lambda: cluster.leader() == second.pid)
        during = len(slots())
        wait_for("slots fired by the new leader", lambda: len(slots()) >= during + 2)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    # Thawed, the old leader finds its connections gone, connects again and carries on as a
    # node; it does not take the lead back while the other holds it.
    after = len(slots())
    wait_for("more slots", lambda: len(slots()) >= after + 2)
    assert cluster.leader() == second.pid
    fired = slots()
    assert len(fired) == len(set(fired)), Counter(s for s in fired if fired.count(s) > 1)
    assert fired == sorted(fired), "slots fired out of order"
    for node in (first, second):
        stop(cluster, node)
