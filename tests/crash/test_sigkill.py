"""A process running jobs is killed with SIGKILL; the store is reopened and every job is
accounted for.

Each child process opens the store (rescuing what the previous one left executing), runs
workers in the background and inserts jobs in a loop. Its worker appends ``"<id> <attempt>"``
to an execution log, fsync'd, before it sleeps, so a kill lands mid-job; the insert loop
appends ``"<id> <child> <i>"`` to an acknowledgement log, fsync'd, once ``insert`` returned.
The parent kills the child at a random moment, reopens the store, checks what it finds against
both logs, and starts the next child on the same file. After the last kill it drains the rest.

Set ``KATHIKON_CRASH_SEED`` to replay a run; the seed is in every assertion message.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Optional

import kathikon
from kathikon import Job, JobState

WORKER = "crash.work"
CONCURRENCY = 4
MAX_ATTEMPTS = 25
KILLS = 8
INSERTS_PER_CHILD = 200
CHILD_START_TIMEOUT = 20.0

CHILD = r"""
import json, os, sys, time
import kathikon

cfg = json.loads(sys.argv[1])
app = kathikon.Kathikon(
    cfg["store"],
    queues={"default": cfg["concurrency"]},
    poll_interval=0.05,
    scheduler_interval=0.05,
)
flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
exec_fd = os.open(cfg["exec_log"], flags, 0o600)
ack_fd = os.open(cfg["ack_log"], flags, 0o600)


def record(fd, line):
    os.write(fd, line.encode())
    os.fsync(fd)


@app.worker(name=cfg["worker"], max_attempts=cfg["max_attempts"])
def work(job):
    record(exec_fd, f"{job.id} {job.attempt}\n")
    time.sleep(job.args.get("sleep", cfg["sleep"]))


for spec in cfg.get("jobs", []):
    job = work.insert(spec["args"], max_attempts=spec["max_attempts"])
    record(ack_fd, f"{job.id} {spec['args']['key']}\n")
app.start()
for i in range(cfg.get("inserts", 0)):
    job = work.insert({"child": cfg["child"], "i": i})
    record(ack_fd, f"{job.id} {cfg['child']} {i}\n")
while True:
    time.sleep(1)
"""


def seed() -> int:
    return int(os.environ.get("KATHIKON_CRASH_SEED") or int.from_bytes(os.urandom(4), "big"))


def read_lines(path: Path) -> list[list[str]]:
    """Complete lines of a log, split into fields. A write cut short by the kill has no
    newline yet and was never fsync'd, so the child never went past it: it is ignored."""
    if not path.exists():
        return []
    text = path.read_text()
    return [line.split() for line in text.split("\n")[:-1]]


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def all_jobs(app: kathikon.Kathikon) -> dict[int, Job]:
    out: dict[int, Job] = {}
    after: Optional[int] = None
    while True:
        page = app.jobs(limit=500, after=after)
        if not page:
            return out
        for job in page:
            out[job.id] = job
        after = page[-1].id


def open_store(path: Path) -> kathikon.Kathikon:
    """Open the store in this process without running anything (opening rescues)."""
    return kathikon.Kathikon(path, queues={"default": CONCURRENCY}, poll_interval=0.05)


def snapshot(path: Path) -> dict[int, Job]:
    app = open_store(path)
    try:
        return all_jobs(app)
    finally:
        app.close()


def is_orphan(error: dict[str, Any]) -> bool:
    return str(error["error"]).startswith("orphaned")


class Child:
    """One child process running the CHILD script with ``cfg``; stderr goes to a file."""

    def __init__(self, tmp_path: Path, name: str, cfg: dict[str, Any]) -> None:
        script = tmp_path / "child.py"
        if not script.exists():
            script.write_text(CHILD)
        self.stderr_path = tmp_path / f"{name}.stderr"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), json.dumps(cfg)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, "RUST_BACKTRACE": "0"},
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_until(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        """Poll ``ready()`` until true; fail if the child exits or the deadline passes."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"child exited ({self.proc.returncode}) before {what}:\n{self.stderr()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.stderr()}")
            time.sleep(0.002)

    def kill(self) -> None:
        assert self.proc.poll() is None, f"child already exited:\n{self.stderr()}"
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL

    def reap(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def check_job_history(job: Job, kills: int, why: str) -> None:
    """A job of the crash worker never fails, so its only errors are rescues: one per attempt
    that was running when a process died, attempts 1, 2, … in order."""
    errors = job.errors
    assert all(is_orphan(e) for e in errors), f"{why}: {job!r} {errors}"
    assert [e["attempt"] for e in errors] == list(range(1, len(errors) + 1)), f"{why}: {errors}"
    assert len(errors) <= kills, f"{why}: {job!r} orphaned more often than processes died"
    if job.state is JobState.COMPLETED:
        assert job.attempt == len(errors) + 1, f"{why}: {job!r} {errors}"
        assert job.completed_at is not None
    elif job.state is JobState.AVAILABLE:
        assert job.attempt == len(errors), f"{why}: {job!r} {errors}"
    else:
        raise AssertionError(f"{why}: {job!r} is {job.state.value} after a reopen")


class CrashRun:
    """Kill/reopen cycles on one store, with everything learnt so far for the checks."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.seed = seed()
        self.rng = random.Random(self.seed)
        self.store = tmp_path / "jobs.redb"
        self.acked: dict[int, tuple[int, int]] = {}  # id → (child, i) of acknowledged inserts
        self.exec_logs: list[Path] = []
        self.previous: dict[int, Job] = {}  # the store as the last reopen found it
        self.orphaned = 0  # jobs rescued over all reopens

    def kill_one_child(self, child_no: int) -> list[tuple[int, int]]:
        """Run a child until a random number of its jobs started or of its inserts returned,
        kill it a random instant later (inserts and jobs are both in flight then), and read
        its logs. Returns the (id, attempt) of each run it started."""
        exec_log = self.tmp_path / f"exec-{child_no}.log"
        ack_log = self.tmp_path / f"ack-{child_no}.log"
        self.exec_logs.append(exec_log)
        cfg = {
            "store": str(self.store),
            "exec_log": str(exec_log),
            "ack_log": str(ack_log),
            "child": child_no,
            "worker": WORKER,
            "concurrency": CONCURRENCY,
            "max_attempts": MAX_ATTEMPTS,
            "sleep": 0.01,
            "inserts": INSERTS_PER_CHILD,
        }
        # Kill once a random number of jobs started or of inserts returned.
        if self.rng.random() < 0.5:
            log, threshold = exec_log, self.rng.randint(3, 80)
        else:
            log, threshold = ack_log, self.rng.randint(1, INSERTS_PER_CHILD - 1)
        child = Child(self.tmp_path, f"child-{child_no}", cfg)
        try:
            child.wait_until(
                f"{threshold} lines in {log.name} (seed {self.seed})",
                lambda: count_lines(log) >= threshold,
                CHILD_START_TIMEOUT,
            )
            time.sleep(self.rng.uniform(0, 0.015))
            child.kill()
        finally:
            child.reap()
        for fields in read_lines(ack_log):
            job_id, c, i = map(int, fields)
            assert job_id not in self.acked, f"seed {self.seed}: id {job_id} acknowledged twice"
            self.acked[job_id] = (c, i)
        return [(int(a), int(b)) for a, b in read_lines(exec_log)]

    def check_inserts(self, jobs: dict[int, Job], why: str) -> None:
        """Every acknowledged insert is there with its arguments; anything else stored is the
        one insert each dead child had in flight when it was killed."""
        missing = sorted(set(self.acked) - set(jobs))
        assert not missing, f"{why}: acknowledged inserts lost: {missing}"
        for job_id, (c, i) in self.acked.items():
            assert jobs[job_id].args == {"child": c, "i": i}, why
        unacked = set(jobs) - set(self.acked)
        per_child = Counter(jobs[j].args["child"] for j in unacked)
        assert all(n == 1 for n in per_child.values()), f"{why}: unacknowledged {per_child}"
        for job_id in unacked:
            c = jobs[job_id].args["child"]
            in_flight = sum(1 for v in self.acked.values() if v[0] == c)
            assert jobs[job_id].args["i"] == in_flight, f"{why}: {jobs[job_id].args}"

    def check_after_kill(
        self, jobs: dict[int, Job], runs: list[tuple[int, int]], kills: int
    ) -> None:
        why = f"seed {self.seed}, after kill {kills}"
        ids_here = [job_id for job_id, _ in runs]
        assert len(ids_here) == len(set(ids_here)), f"{why}: a job ran twice in one process"
        self.check_inserts(jobs, why)
        # Nothing is left executing; each job's history is consistent.
        for job in jobs.values():
            check_job_history(job, kills, why)
        # Attempts never go back, and a completed job never changes or runs again.
        for job_id, before in self.previous.items():
            now = jobs[job_id]
            assert now.attempt >= before.attempt, f"{why}: {before!r} went back to {now!r}"
            if before.state is JobState.COMPLETED:
                assert (now.state, now.attempt, now.completed_at) == (
                    before.state,
                    before.attempt,
                    before.completed_at,
                ), f"{why}: completed {before!r} changed to {now!r}"
                assert job_id not in ids_here, f"{why}: completed job {job_id} ran again"
        # Every run the child started either completed (in that attempt) or was orphaned by
        # the kill and rescued with an error saying so.
        for job_id, attempt in runs:
            job = jobs[job_id]
            assert job.attempt == attempt, f"{why}: {job!r} but the child ran attempt {attempt}"
            if job.state is not JobState.COMPLETED:
                assert job.state is JobState.AVAILABLE, f"{why}: {job!r}"
                last = job.errors[-1]
                assert is_orphan(last) and last["attempt"] == attempt, f"{why}: {job.errors}"
        # The rescued ones are those the dead child had claimed: no more than its concurrency,
        # each rescued once.
        before_errors = {job_id: len(job.errors) for job_id, job in self.previous.items()}
        rescued = [j for j in jobs.values() if len(j.errors) > before_errors.get(j.id, 0)]
        assert len(rescued) <= CONCURRENCY, f"{why}: {rescued}"
        for job in rescued:
            assert len(job.errors) == before_errors.get(job.id, 0) + 1, f"{why}: {job.errors}"
        self.orphaned += len(rescued)
        self.previous = jobs

    def finish(self) -> None:
        """Drain what is left here, recording runs the same way, and check the end state."""
        final_log = self.tmp_path / "exec-final.log"
        self.exec_logs.append(final_log)
        app = open_store(self.store)
        try:
            fd = os.open(final_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

            @app.worker(name=WORKER, max_attempts=MAX_ATTEMPTS)
            def work(job: Job) -> None:
                os.write(fd, f"{job.id} {job.attempt}\n".encode())

            try:
                result = app.drain()
            finally:
                os.close(fd)
            assert set(result) <= {"completed"}, result
        finally:
            app.close()

        final = snapshot(self.store)
        why = f"seed {self.seed}, at the end"
        assert set(self.acked) <= set(final), f"{why}: acknowledged inserts lost"
        assert set(self.previous) == set(final), f"{why}: jobs appeared or vanished"
        runs: defaultdict[int, list[int]] = defaultdict(list)
        for log in self.exec_logs:
            for a, b in read_lines(log):
                runs[int(a)].append(int(b))
        assert set(runs) == set(final), f"{why}: runs recorded for unknown jobs"
        for job_id, job in final.items():
            assert job.state is JobState.COMPLETED, f"{why}: {job!r}"
            check_job_history(job, KILLS, why)
            attempts = runs[job_id]
            # Attempts only grow; each run is a new attempt; the completing attempt ran once
            # and last; a job ran more than once only after a process died running it.
            assert attempts == sorted(set(attempts)), f"{why}: job {job_id} ran {attempts}"
            assert attempts[-1] == job.attempt, f"{why}: {job!r} ran {attempts}"
            assert len(attempts) <= 1 + len(job.errors), f"{why}: {job!r} ran {attempts}"


def test_sigkill_mid_run_then_reopen_accounts_for_every_job(tmp_path: Path) -> None:
    run = CrashRun(tmp_path)
    for child_no in range(KILLS):
        runs = run.kill_one_child(child_no)
        run.check_after_kill(snapshot(run.store), runs, child_no + 1)
    # The kills landed mid-job at least once, or this test proved nothing about rescues.
    assert run.orphaned >= 1, f"seed {run.seed}: no kill caught a job running"
    assert len(run.acked) >= KILLS * 3, f"seed {run.seed}: too few inserts to mean much"
    run.finish()


def test_sigkill_with_no_attempts_left_discards_the_orphan(tmp_path: Path) -> None:
    store = tmp_path / "jobs.redb"
    exec_log = tmp_path / "exec.log"
    ack_log = tmp_path / "ack.log"
    cfg = {
        "store": str(store),
        "exec_log": str(exec_log),
        "ack_log": str(ack_log),
        "child": 0,
        "worker": WORKER,
        "concurrency": 2,
        "max_attempts": MAX_ATTEMPTS,
        "sleep": 0.01,
        # Both block long enough that they are surely running when the kill lands.
        "jobs": [
            {"args": {"key": "once", "sleep": 60}, "max_attempts": 1},
            {"args": {"key": "twice", "sleep": 60}, "max_attempts": 2},
        ],
    }
    child = Child(tmp_path, "child", cfg)
    try:
        child.wait_until(
            "both jobs to start", lambda: count_lines(exec_log) >= 2, CHILD_START_TIMEOUT
        )
        child.kill()
    finally:
        child.reap()
    ids = {key: int(job_id) for job_id, key in read_lines(ack_log)}
    assert sorted(ids) == ["once", "twice"]
    assert sorted((int(a), int(b)) for a, b in read_lines(exec_log)) == sorted(
        (ids[k], 1) for k in ids
    )

    app = open_store(store)
    try:
        once = app.get(ids["once"])
        assert once.state is JobState.DISCARDED
        assert once.attempt == 1
        assert once.discarded_at is not None
        assert len(once.errors) == 1
        assert once.errors[0]["attempt"] == 1
        assert once.errors[0]["error"].startswith("orphaned")
        twice = app.get(ids["twice"])
        assert twice.state is JobState.AVAILABLE
        assert twice.attempt == 1
        assert twice.discarded_at is None
        assert [e["attempt"] for e in twice.errors] == [1]
        assert twice.errors[0]["error"].startswith("orphaned")
        assert once.errors[0]["error"] != twice.errors[0]["error"]

        ran: list[tuple[int, int]] = []

        @app.worker(name=WORKER)
        def work(job: Job) -> None:
            ran.append((job.id, job.attempt))

        assert app.drain() == {"completed": 1}
        assert ran == [(ids["twice"], 2)]
    finally:
        app.close()

    app = open_store(store)
    try:
        once_after = app.get(ids["once"])
        assert once_after.state is JobState.DISCARDED
        assert once_after.errors == once.errors
        assert once_after.discarded_at == once.discarded_at
        assert app.get(ids["twice"]).state is JobState.COMPLETED
    finally:
        app.close()
