"""Unique jobs (``kathikon.Unique``, ``unique=``/``replace=``): an insert while a job with the
same key exists returns that job with ``job.conflict`` set and stores nothing; exactly one job
when threads and client processes race; still one after the owner is SIGKILLed right after the
insert and the insert is retried on the next owner; replace and the debounce recipe; the period
on the manual clock; duplicates inside one ``insert_all``; the testing modes; bad values."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import kathikon
from kathikon import JobState, Unique
from kathikon.testing import drain_jobs, make_app

CHILD_TIMEOUT = 60.0


@pytest.fixture
def clocked() -> Iterator[kathikon.Kathikon]:
    app = kathikon.Kathikon(None, queues={"default": 1, "other": 1}, clock="manual")
    yield app
    app.close()


def test_the_issue_example_returns_the_existing_job_flagged(clocked: kathikon.Kathikon) -> None:
    @clocked.worker(
        unique=Unique(
            period=300, fields=("worker", "args"), keys=("user_id",), states=Unique.INCOMPLETE
        )
    )
    def sync_user(job: kathikon.Job) -> None:
        pass

    job = sync_user.insert({"user_id": 7, "page": 1})
    again = sync_user.insert({"user_id": 7, "page": 2})
    assert again.id == job.id and again.conflict
    assert not job.conflict
    assert again.args == {"user_id": 7, "page": 1}, "the existing job, unchanged"
    other = sync_user.insert({"user_id": 8, "page": 1})
    assert other.id != job.id and not other.conflict
    # unique=False: a plain insert of the same job.
    plain = sync_user.insert({"user_id": 7}, unique=False)
    assert not plain.conflict and plain.id not in (job.id, other.id)
    # A job read back is not a conflict.
    assert not clocked.get(job.id).conflict
    assert clocked.stats()["default"]["available"] == 3


def test_the_period_and_the_states_decide_on_the_manual_clock(clocked: kathikon.Kathikon) -> None:
    @clocked.worker(unique=Unique(period=timedelta(minutes=5), states=Unique.INCOMPLETE))
    def work(job: kathikon.Job) -> None:
        pass

    first = work.insert({"n": 1})
    clocked.advance_clock(299)
    assert work.insert({"n": 1}).conflict
    clocked.advance_clock(1)
    second = work.insert({"n": 1})
    assert not second.conflict and second.id != first.id
    # Completed is not among INCOMPLETE: once it ran, the key is free.
    assert drain_jobs(clocked) == {"completed": 2}
    third = work.insert({"n": 1})
    assert not third.conflict
    # With the default states, a completed job holds its key.
    by_default = Unique(period=None)
    fourth = clocked.insert(work, {"n": 2}, unique=by_default)
    drain_jobs(clocked)
    assert clocked.insert(work, {"n": 2}, unique=by_default).id == fourth.id
    # Unique.ALL: a cancelled one holds it too.
    cancelled = clocked.insert(work, {"n": 3}, unique=Unique(states=Unique.ALL))
    clocked.cancel(cancelled)
    assert clocked.insert(work, {"n": 3}, unique=Unique(states=Unique.ALL)).conflict


def test_fields_queue_and_meta_make_the_key(clocked: kathikon.Kathikon) -> None:
    @clocked.worker
    def work(job: kathikon.Job) -> None:
        pass

    by_queue = Unique(fields=("worker", "queue"))
    a = clocked.insert(work, {"x": 1}, unique=by_queue)
    assert clocked.insert(work, {"x": 2}, unique=by_queue).id == a.id
    assert not clocked.insert(work, {"x": 1}, unique=by_queue, queue="other").conflict
    by_meta = Unique(fields=("meta",), keys=("tenant",))
    m = clocked.insert(work, meta={"tenant": 1, "trace": "a"}, unique=by_meta)
    assert clocked.insert(work, meta={"tenant": 1, "trace": "b"}, unique=by_meta).id == m.id
    assert not clocked.insert(work, meta={"tenant": 2}, unique=by_meta).conflict


def test_insert_all_resolves_duplicates_inside_one_call(clocked: kathikon.Kathikon) -> None:
    @clocked.worker(unique=Unique(period=None))
    def work(job: kathikon.Job) -> None:
        pass

    jobs = clocked.insert_all(
        [
            work.new({"n": 1}),
            work.new({"n": 2}),
            work.new({"n": 1}),
            work.new({"n": 2}, unique=False),
        ]
    )
    assert [j.conflict for j in jobs] == [False, False, True, False]
    assert jobs[2].id == jobs[0].id
    assert len({j.id for j in jobs}) == 3
    assert clocked.stats()["default"]["available"] == 3


def test_replace_overwrites_the_named_fields_while_the_job_waits(
    clocked: kathikon.Kathikon,
) -> None:
    @clocked.worker(unique=Unique(period=None, fields=("worker",)))
    def work(job: kathikon.Job) -> None:
        pass

    first = work.insert({"v": 1}, priority=5, tags=["a"], meta={"m": 1})
    got = work.insert(
        {"v": 2},
        priority=1,
        tags=["b"],
        meta={"m": 2},
        max_attempts=3,
        queue="other",
        replace=("args", "priority", "tags", "meta", "max_attempts", "queue"),
    )
    assert got.conflict and got.id == first.id
    assert (got.args, got.priority, got.tags, got.meta) == ({"v": 2}, 1, ["b"], {"m": 2})
    assert (got.max_attempts, got.queue) == (3, "other")
    assert clocked.get(first.id).args == {"v": 2}
    # Only the named fields change.
    kept = work.insert({"v": 3}, priority=9, replace=("args",))
    assert (kept.args, kept.priority) == ({"v": 3}, 1)
    # It runs in its new queue, once.
    assert drain_jobs(clocked, "default") == {}
    assert drain_jobs(clocked, "other") == {"completed": 1}
    # A completed job is not replaced.
    done = work.insert({"v": 4}, replace=("args",))
    assert done.conflict and done.state is JobState.COMPLETED and done.args == {"v": 3}


def test_debounce_runs_once_after_the_last_of_a_burst(clocked: kathikon.Kathikon) -> None:
    """The debounce recipe: each insert of the burst moves the one job's run time to 10 s
    after itself, so it runs once, 10 s after the last."""
    ran: list[dict[str, Any]] = []

    @clocked.worker(unique=Unique(period=None, fields=("worker", "args"), states=Unique.INCOMPLETE))
    def reindex(job: kathikon.Job) -> None:
        ran.append(job.args)

    ids = set()
    for _ in range(5):
        job = reindex.insert({"doc": 1}, schedule_in=10, replace=("scheduled_at",))
        ids.add(job.id)
        assert job.state is JobState.SCHEDULED
        clocked.advance_clock(6)  # less than 10 s between inserts: never due meanwhile
        assert drain_jobs(clocked) == {}
    assert len(ids) == 1
    clocked.advance_clock(4)  # 10 s after the last insert
    assert drain_jobs(clocked) == {"completed": 1}
    assert ran == [{"doc": 1}]
    # The next burst makes a new job: the first completed (not among INCOMPLETE).
    assert reindex.insert({"doc": 1}, schedule_in=10, replace=("scheduled_at",)).id not in ids


def test_replace_into_the_future_takes_an_available_job_off_its_queue(
    clocked: kathikon.Kathikon,
) -> None:
    @clocked.worker(unique=Unique(period=None))
    def work(job: kathikon.Job) -> None:
        pass

    first = work.insert({})
    assert first.state is JobState.AVAILABLE
    moved = work.insert({}, schedule_in=60, replace=("scheduled_at",))
    assert moved.id == first.id and moved.state is JobState.SCHEDULED
    assert drain_jobs(clocked) == {}, "not claimed at its old place"
    clocked.advance_clock(60)
    assert drain_jobs(clocked) == {"completed": 1}


def test_telemetry_says_conflict(clocked: kathikon.Kathikon) -> None:
    @clocked.worker(unique=Unique())
    def work(job: kathikon.Job) -> None:
        pass

    seen: list[bool] = []
    kathikon.telemetry.attach(
        "test-unique",
        [("kathikon", "job", "insert")],
        lambda event, m, meta: seen.append(meta["conflict"]),
    )
    try:
        work.insert({})
        work.insert({})
    finally:
        kathikon.telemetry.detach("test-unique")
    assert seen == [False, True]


@pytest.mark.parametrize("mode", ["manual", "inline"])
def test_testing_modes_honour_uniqueness(mode: str) -> None:
    app = make_app(testing=mode, queues={"default": 1})
    runs: list[int] = []
    try:

        @app.worker(unique=Unique(period=None, states=Unique.INCOMPLETE))
        def work(job: kathikon.Job) -> None:
            runs.append(job.id)

        if mode == "manual":
            first = work.insert({"n": 1})
            again = work.insert({"n": 1})
            assert again.conflict and again.id == first.id
            assert drain_jobs(app) == {"completed": 1}
        else:
            # Inline: each insert runs at once, so the key is free again for the next.
            first = work.insert({"n": 1}, schedule_in=60)
            assert first.state is JobState.COMPLETED
            jobs = app.insert_all([work.new({"n": 2}), work.new({"n": 2})])
            assert [j.conflict for j in jobs] == [False, True]
            assert jobs[0].state is JobState.COMPLETED
            assert runs == [first.id, jobs[0].id], "the conflicting job did not run twice"
    finally:
        app.close()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: Unique(fields=("worker", "id")), ["'id'", "worker, queue, args, meta"]),
        (lambda: Unique(fields=()), ["fields=()"]),
        (lambda: Unique(states=("running",)), ["'running'", "scheduled"]),
        (lambda: Unique(states=()), ["states is empty"]),
        (lambda: Unique(period=-5), ["period=-5", "None"]),
        (lambda: Unique(period=0), ["period=0"]),
        (lambda: Unique(period=float("inf")), ["None"]),
        (lambda: Unique(period="5"), ["'5'", "seconds"]),
        (lambda: Unique(keys="user_id"), ["keys=('user_id',)"]),
        (lambda: Unique(keys=(1,)), ["1 (int)"]),
        (lambda: Unique(fields=("worker",), keys=("a",)), ['add "args"']),
    ],
)
def test_bad_unique_values_are_refused_at_declaration(make: Any, words: list[str]) -> None:
    with pytest.raises(kathikon.ConfigurationError) as info:
        make()
    for word in words:
        assert word in str(info.value), str(info.value)


def test_bad_insert_options_are_refused_naming_the_value(clocked: kathikon.Kathikon) -> None:
    @clocked.worker
    def work(job: kathikon.Job) -> None:
        pass

    with pytest.raises(kathikon.InvalidJobError, match=r"'id'.*pick among args, meta"):
        clocked.insert(work, {}, unique=Unique(), replace=("id",))
    with pytest.raises(kathikon.InvalidJobError, match=r'replace=\("scheduled_at",\)'):
        clocked.insert(work, {}, replace="scheduled_at")
    with pytest.raises(kathikon.InvalidJobError, match="this insert is not unique"):
        clocked.insert(work, {}, replace=("args",))
    with pytest.raises(kathikon.InvalidJobError, match=r"unique=300 must be a kathikon.Unique"):
        clocked.insert(work, {}, unique=300)  # type: ignore[typeddict-item]
    with pytest.raises(kathikon.ConfigurationError, match=r"worker '.*': unique=\{"):

        @clocked.worker(name="bad", unique={"period": 60})  # type: ignore[arg-type]
        def bad(job: kathikon.Job) -> None:
            pass

    assert clocked.stats().get("default", {}).get("available", 0) == 0


def test_a_worker_class_declares_unique(clocked: kathikon.Kathikon) -> None:
    class Report(kathikon.Worker):
        unique = Unique(period=None)

        def perform(self, job: kathikon.Job) -> None:
            pass

    clocked.register(Report)
    first = clocked.insert(Report, {"day": 1})
    assert clocked.insert(Report, {"day": 1}).id == first.id


# -- processes ---------------------------------------------------------------------------------

RACER = """
import sys, time
from pathlib import Path
import kathikon

store, go, ready = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
app = kathikon.Kathikon(store, queues={"default": 1})
assert app.role == "client", app.role

@app.worker(name="race.sync", unique=kathikon.Unique(period=None, fields=("worker", "args")))
def sync(job):
    pass

ready.write_text("ready")
while not go.exists():
    time.sleep(0.001)
for _ in range(25):
    job = sync.insert({"user": 7})
    print(job.id, job.conflict, flush=True)
app.close()
"""


def _start_racers(tmp_path: Path, store: Path, go: Path) -> list[subprocess.Popen[bytes]]:
    """Four client processes, each ready to insert once ``go`` exists."""
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    procs = []
    for n in range(4):
        ready = tmp_path / f"ready{n}"
        out, err = tmp_path / f"racer{n}.out", tmp_path / f"racer{n}.err"
        with out.open("w") as o, err.open("w") as e:
            racer = subprocess.Popen(
                [sys.executable, str(script), str(store), str(go), str(ready)],
                stdout=o,
                stderr=e,
            )
        procs.append(racer)
        while not ready.exists():
            assert racer.poll() is None, err.read_text()
            threading.Event().wait(0.01)
    return procs


def test_threads_and_client_processes_racing_store_exactly_one_job(tmp_path: Path) -> None:
    store = tmp_path / "jobs.redb"
    app = kathikon.Kathikon(store, queues={"default": 1})
    try:

        @app.worker(name="race.sync", unique=Unique(period=None, fields=("worker", "args")))
        def sync(job: kathikon.Job) -> None:
            pass

        go = tmp_path / "go"
        procs = _start_racers(tmp_path, store, go)
        start = threading.Barrier(9)
        answers: list[tuple[int, bool]] = []
        lock = threading.Lock()

        def insert() -> None:
            start.wait()
            for _ in range(25):
                job = sync.insert({"user": 7})
                with lock:
                    answers.append((job.id, job.conflict))

        threads = [threading.Thread(target=insert) for _ in range(8)]
        for t in threads:
            t.start()
        go.write_text("go")
        start.wait()
        for t in threads:
            t.join(CHILD_TIMEOUT)
        for n, proc in enumerate(procs):
            assert proc.wait(CHILD_TIMEOUT) == 0, (tmp_path / f"racer{n}.err").read_text()
            for line in (tmp_path / f"racer{n}.out").read_text().splitlines():
                job_id, conflict = line.split()
                answers.append((int(job_id), conflict == "True"))
        assert len(answers) == 12 * 25
        assert len({job_id for job_id, _ in answers}) == 1, "every insert got the one job"
        assert sum(not conflict for _, conflict in answers) == 1, "exactly one stored it"
        assert app.stats()["default"]["available"] == 1
    finally:
        app.close()


OWNER = """
import sys, time
import kathikon

app = kathikon.Kathikon(sys.argv[1], queues={"default": 1})
assert app.role == "owner", app.role

@app.worker(name="kill.sync", unique=kathikon.Unique(period=None))
def sync(job):
    pass

job = sync.insert({"from": "owner"})
print(job.id, flush=True)
while True:
    time.sleep(1)
"""


def test_a_unique_insert_retried_after_the_owner_is_killed_finds_its_job(
    tmp_path: Path,
) -> None:
    """The owner inserts, a client inserts through it, the owner is SIGKILLed right after
    both were acknowledged; retried on the client, which takes the store over, both inserts
    find their jobs (from the owner's log) and store nothing new."""
    store = tmp_path / "jobs.redb"
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    with (tmp_path / "owner.err").open("w") as err:
        owner = subprocess.Popen(
            [sys.executable, str(script), str(store)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line, (tmp_path / "owner.err").read_text()
        owners_id = int(line)
        app = kathikon.Kathikon(store, queues={"default": 1})
        try:
            assert app.role == "client"

            @app.worker(name="kill.sync", unique=Unique(period=None))
            def sync(job: kathikon.Job) -> None:
                pass

            mine = sync.insert({"from": "client"})
            assert not mine.conflict
            os.kill(owner.pid, signal.SIGKILL)
            assert owner.wait(CHILD_TIMEOUT) == -signal.SIGKILL
            again = sync.insert({"from": "client"})
            assert app.role == "owner", "the client took the store over"
            assert (again.id, again.conflict) == (mine.id, True)
            theirs = sync.insert({"from": "owner"})
            assert (theirs.id, theirs.conflict) == (owners_id, True)
            assert app.stats()["default"]["available"] == 2
        finally:
            app.close()
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.wait(CHILD_TIMEOUT)
        if owner.stdout is not None:
            owner.stdout.close()


def test_unique_source_reads_as_documented() -> None:
    """The docstring's defaults are the dataclass's (a guard on the docs' claims)."""
    u = Unique()
    assert (u.period, u.fields, u.keys) == (60.0, ("worker", "queue", "args"), ())
    assert u.states == Unique.INCOMPLETE | {"completed"}
    assert Unique.ALL == frozenset(s.value for s in JobState)


def test_the_bench_workload_measures_unique_beside_plain_inserts(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "kathikon", "bench", "-w", "unique", "--scale", "0.01"]
        + ["--rounds", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = {
        e["kathikon"]["workload"]: e["kathikon"] for e in json.loads(out.read_text())["results"]
    }
    assert set(rows) == {
        "insert plain",
        "insert new keys",
        "insert same key",
        "insert_all /1000 plain",
        "insert_all /1000 unique",
    }
    assert rows["insert new keys"]["jobs"] == 50
    assert all(row["jobs_per_s"] > 0 for row in rows.values())
