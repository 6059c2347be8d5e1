"""Processes inserting and running batches are killed with SIGKILL, over and over; then every
batch is checked: stored whole or not at all, finished, and with exactly one callback job,
which ran as that job only.

Each child opens the store (rescuing what the previous one left executing), runs the members
and callbacks in the background, and inserts small batches in a loop, appending each batch's
id to an acknowledgement log, fsync'd, once ``insert_batch`` returned. The batches are small
and their jobs short, so the kills land while batches are being inserted, while their last
members finish (the fan-in that inserts the callback) and while callbacks run. The callback
appends ``"<batch> <job id> <attempt>"`` to a log, fsync'd, before it sleeps.

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
from collections import defaultdict
from pathlib import Path
from typing import Optional

import kathikon
from kathikon import Job, JobState

KILLS = 8
MEMBERS = 10

CHILD = r"""
import json, os, random, sys, time
import kathikon

cfg = json.loads(sys.argv[1])
app = kathikon.Kathikon(cfg["store"], queues={"default": 4}, poll_interval=0.05,
                        scheduler_interval=0.05)
flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
ack_fd = os.open(cfg["ack_log"], flags, 0o600)
cb_fd = os.open(cfg["callback_log"], flags, 0o600)


def record(fd, line):
    os.write(fd, line.encode())
    os.fsync(fd)


@app.worker(name="crash.member", max_attempts=50)
def member(job):
    time.sleep(random.random() * 0.02)


@app.worker(name="crash.done", max_attempts=50)
def done(job):
    info = kathikon.BatchCallback.of(job)
    record(cb_fd, f"{info.batch_id} {job.id} {job.attempt}\n")
    time.sleep(0.01)


app.start()
for i in range(10_000):
    batch_id = f"c{cfg['child']}-{i}"
    app.insert_batch([member.new({"i": n}) for n in range(cfg["members"])],
                     batch_id=batch_id, on_finished=done)
    record(ack_fd, batch_id + "\n")
    time.sleep(0.03)
"""


def all_jobs(app: kathikon.Kathikon) -> list[Job]:
    out: list[Job] = []
    after: Optional[int] = None
    while True:
        page = app.jobs(limit=500, after=after)
        if not page:
            return out
        out.extend(page)
        after = page[-1].id


def lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines()]


def kill_children(tmp_path: Path, rng: random.Random, why: str) -> None:
    """Start KILLS children on the store one after another, each killed at a random moment
    once it inserted a batch."""
    store = tmp_path / "jobs.redb"
    ack_log, callback_log = tmp_path / "acks", tmp_path / "callbacks"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    for child in range(KILLS):
        cfg = {
            "store": str(store),
            "ack_log": str(ack_log),
            "callback_log": str(callback_log),
            "child": child,
            "members": MEMBERS,
        }
        err_path = tmp_path / f"child{child}.stderr"
        acked = len(lines(ack_log))
        with err_path.open("wb") as err:
            proc = subprocess.Popen([sys.executable, str(script), json.dumps(cfg)], stderr=err)
        try:
            # Running: it inserted a first batch. Then it is killed at a random moment.
            deadline = time.monotonic() + 30
            while len(lines(ack_log)) == acked:
                assert proc.poll() is None, f"child exited {why}:\n{err_path.read_text()}"
                assert time.monotonic() < deadline, f"child never inserted {why}"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.05, 1.0))
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_sigkill_during_batch_inserts_and_fan_ins_keeps_one_callback_per_batch(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("KATHIKON_CRASH_SEED") or int.from_bytes(os.urandom(4), "big"))
    rng = random.Random(seed)
    why = f"(KATHIKON_CRASH_SEED={seed})"
    store = tmp_path / "jobs.redb"
    ack_log, callback_log = tmp_path / "acks", tmp_path / "callbacks"
    kill_children(tmp_path, rng, why)
    app = kathikon.Kathikon(store, queues={"default": 4}, poll_interval=0.05)

    @app.worker(name="crash.member", max_attempts=50)
    def member(job: Job) -> None:
        pass

    @app.worker(name="crash.done", max_attempts=50)
    def done(job: Job) -> None:
        info = kathikon.BatchCallback.of(job)
        assert info is not None
        with callback_log.open("a") as log:
            log.write(f"{info.batch_id} {job.id} {job.attempt}\n")

    try:
        app.drain(with_scheduled=True)
        jobs = all_jobs(app)
        members: dict[str, list[Job]] = defaultdict(list)
        callbacks: dict[str, list[Job]] = defaultdict(list)
        for job in jobs:
            if job.batch_id is not None:
                members[job.batch_id].append(job)
            else:
                info = kathikon.BatchCallback.of(job)
                assert info is not None, f"job {job.id} is neither member nor callback {why}"
                callbacks[info.batch_id].append(job)
        acked = {line[0] for line in lines(ack_log)}
        assert acked <= set(members), f"acknowledged batches lost {why}"
        assert len(acked) >= KILLS, f"too few batches to prove anything {why}"
        for batch_id, its in members.items():
            assert len(its) == MEMBERS, f"batch {batch_id} stored in part {why}"
            status = app.batch(batch_id)
            assert status.finished, f"batch {batch_id} never finished: {status} {why}"
            assert status.counts["completed"] == MEMBERS, f"{status} {why}"
            assert all(j.state is JobState.COMPLETED for j in its), why
            assert len(callbacks[batch_id]) == 1, (
                f"batch {batch_id} has {len(callbacks[batch_id])} callback jobs {why}"
            )
            (callback,) = callbacks[batch_id]
            assert callback.state is JobState.COMPLETED, why
            assert status.callbacks["finished"] == callback.id, why
        assert set(callbacks) <= set(members), why
        ran = defaultdict(set)
        for batch_id, job_id, _attempt in lines(callback_log):
            ran[batch_id].add(int(job_id))
        for batch_id, ids in ran.items():
            assert ids == {callbacks[batch_id][0].id}, (
                f"batch {batch_id}'s callback ran as jobs {ids} {why}"
            )
        assert set(ran) == set(members), f"a callback never ran {why}"
    finally:
        app.close()
