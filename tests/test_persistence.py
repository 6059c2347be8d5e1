"""Restart persistence with a real store file, and what opening a file refuses.

Every test here uses a real file on disk: jobs written by one app are read back by a new app
on the same path; the file lock is tested against real second processes; files that are not
stores, or damaged stores, are opened in a subprocess with a deadline so that a hang or an
abort fails the test instead of the test run.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

import kathikon
from kathikon import Job, JobState

FIELDS = (
    "id",
    "state",
    "queue",
    "worker",
    "args",
    "meta",
    "tags",
    "attempt",
    "max_attempts",
    "priority",
    "errors",
    "inserted_at",
    "scheduled_at",
    "attempted_at",
    "completed_at",
    "cancelled_at",
    "discarded_at",
)
CHILD_TIMEOUT = 30.0


def fields(job: Job) -> dict[str, Any]:
    """Every public field of a job, for exact comparison."""
    return {name: getattr(job, name) for name in FIELDS}


def all_jobs(app: kathikon.Kathikon) -> dict[int, Job]:
    """Every stored job by id, paging through the store."""
    out: dict[int, Job] = {}
    after: Optional[int] = None
    while True:
        page = app.jobs(limit=100, after=after)
        if not page:
            return out
        for job in page:
            out[job.id] = job
        after = page[-1].id


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def child_env() -> dict[str, str]:
    """This environment, with short Rust panic reports so that failures stay readable."""
    return {**os.environ, "RUST_BACKTRACE": "0"}


def run_child(script: Path, *args: str, timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
    """Run a Python child with this interpreter; it must exit 0 with one JSON line on stdout
    and a clean stderr. A hang fails the test (``subprocess`` kills the child at the
    deadline)."""
    try:
        proc = subprocess.run(
            [sys.executable, str(script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env(),
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"child {script.name} hung for {timeout} s: {e.stderr!r}") from None
    report = f"exit status {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, report
    for sign in ("Traceback", "PanicException", "panicked at", "fatal", "Aborted"):
        assert sign not in proc.stderr, report
    lines = proc.stdout.strip().splitlines()
    assert lines, report
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- restart persistence ------------------------------------------------------------------


def open_app(path: Path, **kwargs: Any) -> kathikon.Kathikon:
    return kathikon.Kathikon(
        path,
        queues={"default": 2, "emails": 2},
        poll_interval=0.05,
        scheduler_interval=0.05,
        **kwargs,
    )


class Runs:
    """Thread-safe record of (job id, attempt, wall time) of each run of a worker."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[int, int, datetime]] = []

    def add(self, job: Job) -> None:
        with self.lock:
            self.items.append((job.id, job.attempt, datetime.now(timezone.utc)))

    def of(self, job_id: int) -> list[tuple[int, int, datetime]]:
        with self.lock:
            return [r for r in self.items if r[0] == job_id]


def register(app: kathikon.Kathikon, runs: Runs) -> None:
    """The same three workers, by the same names, in every app that opens the store."""

    @app.worker(name="persist.ok", queue="default", max_attempts=5)
    def ok(job: Job) -> None:
        runs.add(job)

    @app.worker(name="persist.fail", max_attempts=4)
    def fail(job: Job) -> None:
        runs.add(job)
        raise ValueError(f"boom {job.args['n']}")

    @app.worker(name="persist.drop")
    def drop(job: Job) -> kathikon.Discard:
        runs.add(job)
        return kathikon.Discard("not needed any more")


def test_every_job_survives_reopen_with_the_same_fields(store_path: Path) -> None:
    runs = Runs()
    app = open_app(store_path)
    register(app, runs)
    # Jobs that reach a final or retryable state through drain.
    done = app.insert("persist.ok", {"n": 1}, tags=["done"], meta={"who": "drain"})
    failed = app.insert("persist.fail", {"n": 42}, meta={"retry": True})
    dropped = app.insert("persist.drop", {"n": 3})
    assert app.drain() == {"completed": 1, "retryable": 1, "discarded": 1}
    # Jobs inserted after the drain, so they stay as inserted (or cancelled).
    available = app.insert(
        "persist.ok",
        {"text": "héllo ✓ \u2028", "nested": {"x": [1, 2.5, None, True, "ü"]}, "big": 2**53},
        queue="emails",
        priority=7,
        max_attempts=3,
        tags=["t1", "t2"],
        meta={"k": [1, {"z": None}]},
    )
    far = app.insert("persist.ok", {"n": 5}, schedule_in=3600, priority=9)
    at = app.insert(
        "persist.ok",
        {"n": 6},
        schedule_at=datetime.now(timezone.utc) + timedelta(days=2),
        tags=["at"],
    )
    soon = app.insert("persist.ok", {"n": 7}, schedule_in=1.5)
    cancelled_scheduled = app.insert("persist.ok", {"n": 8}, schedule_in=60)
    cancelled_available = app.insert("persist.ok", {"n": 9}, queue="emails")
    app.cancel(cancelled_scheduled.id)
    app.cancel(cancelled_available)
    before = {i: fields(j) for i, j in all_jobs(app).items()}
    expected_states = {
        done.id: JobState.COMPLETED,
        failed.id: JobState.RETRYABLE,
        dropped.id: JobState.DISCARDED,
        available.id: JobState.AVAILABLE,
        far.id: JobState.SCHEDULED,
        at.id: JobState.SCHEDULED,
        soon.id: JobState.SCHEDULED,
        cancelled_scheduled.id: JobState.CANCELLED,
        cancelled_available.id: JobState.CANCELLED,
    }
    assert {i: f["state"] for i, f in before.items()} == expected_states
    # The failure kept its error and traceback; the retry is far enough off to still wait.
    assert before[failed.id]["attempt"] == 1
    assert "ValueError: boom 42" in before[failed.id]["errors"][0]["error"]
    assert before[failed.id]["scheduled_at"] > datetime.now(timezone.utc) + timedelta(seconds=5)
    assert before[dropped.id]["errors"][0]["error"] == "not needed any more"
    app.close()
    runs_before = len(runs.items)

    app2 = open_app(store_path)
    try:
        register(app2, runs)
        checked_at = datetime.now(timezone.utc)
        after = {i: fields(j) for i, j in all_jobs(app2).items()}
        assert set(after) == set(before)
        # The job due soon may have been promoted by the new app's scheduler if the machine
        # is slow; only then may its state differ.
        soon_state = after[soon.id].pop("state")
        assert soon_state == JobState.SCHEDULED or (
            soon_state == JobState.AVAILABLE and checked_at >= before[soon.id]["scheduled_at"]
        )
        before[soon.id].pop("state")
        for job_id in before:
            assert after[job_id] == before[job_id], f"job {job_id} changed across reopen"
        assert after[available.id]["args"]["big"] == 2**53
        # Ids are never reused after a reopen.
        newer = app2.insert("persist.ok", {"n": 10}, schedule_in=3600)
        assert newer.id > max(before)

        # Once due, the scheduled job runs exactly once under the reopened app; the far ones
        # and the finished ones do not run.
        app2.start()
        wait_for(
            "the scheduled job to complete after reopen",
            lambda: app2.get(soon.id).state is JobState.COMPLETED,
            timeout=15,
        )
        wait_for(
            "the available job to complete after reopen",
            lambda: app2.get(available.id).state is JobState.COMPLETED,
            timeout=15,
        )
        app2.stop(timeout=5)
        soon_runs = runs.of(soon.id)
        assert len(soon_runs) == 1, soon_runs
        assert soon_runs[0][1] == 1
        assert soon_runs[0][2] >= before[soon.id]["scheduled_at"]
        ran_after_reopen = {r[0] for r in runs.items[runs_before:]}
        assert ran_after_reopen == {soon.id, available.id}
        final = all_jobs(app2)
        for job_id in (done.id, failed.id, dropped.id, cancelled_scheduled.id):
            assert fields(final[job_id]) == after[job_id]
        for job_id in (far.id, at.id, newer.id):
            assert final[job_id].state is JobState.SCHEDULED
    finally:
        app2.close(timeout=5)


def test_durability_none_keeps_everything_after_a_clean_close(store_path: Path) -> None:
    app = open_app(store_path, durability="none")
    runs = Runs()
    register(app, runs)
    ids = [app.insert("persist.ok", {"i": i}).id for i in range(40)]
    app.drain()
    extra = app.insert("persist.ok", {"i": 40}, schedule_in=600).id
    before = {i: fields(j) for i, j in all_jobs(app).items()}
    app.close()
    app2 = open_app(store_path)
    try:
        after = {i: fields(j) for i, j in all_jobs(app2).items()}
        assert after == before
        assert set(after) == {*ids, extra}
        assert all(after[i]["state"] is JobState.COMPLETED for i in ids)
    finally:
        app2.close()


def test_job_running_when_the_app_closes_is_handed_back_and_runs_at_the_next_open(
    store_path: Path,
) -> None:
    release = threading.Event()
    started = threading.Event()
    app = open_app(store_path)

    @app.worker(name="persist.slow")
    def slow(job: Job) -> None:
        started.set()
        release.wait(10)

    try:
        job = slow.insert({"n": 1})
        app.start()
        assert started.wait(10), "the job never started"
        assert app.get(job.id).state is JobState.EXECUTING
        app.close(timeout=0.2)  # the job is still running: it is handed back, interrupted
        app2 = open_app(store_path)
        try:
            rescued = app2.get(job.id)
            assert rescued.state in (JobState.SCHEDULED, JobState.AVAILABLE)
            assert (rescued.attempt, rescued.max_attempts) == (1, job.max_attempts + 1)
            assert len(rescued.errors) == 1
            assert rescued.errors[0]["attempt"] == 1
            assert rescued.errors[0]["error"].startswith("interrupted by shutdown")
            runs = Runs()

            @app2.worker(name="persist.slow")
            def quick(job: Job) -> None:
                runs.add(job)

            assert app2.drain() == {"completed": 1}
            assert [(r[0], r[1]) for r in runs.items] == [(job.id, 2)]
            assert app2.get(job.id).state is JobState.COMPLETED
        finally:
            app2.close()
    finally:
        release.set()


# -- the file lock --------------------------------------------------------------------------

TRY_OPEN = """
import json, os, sys
import kathikon
try:
    kathikon.Kathikon(sys.argv[1], connect=False).close()
    print(json.dumps({"opened": True, "pid": os.getpid()}))
except kathikon.KathikonError as e:
    print(json.dumps({"opened": False, "type": type(e).__name__, "message": str(e),
                      "is_storage_error": isinstance(e, kathikon.StorageError),
                      "pid": os.getpid()}))
"""

HOLD = """
import os, sys, time
import kathikon
app = kathikon.Kathikon(sys.argv[1])
@app.worker(name="persist.held")
def held(job): pass
job = held.insert({"from": "holder"})
ready = sys.argv[2] + ".tmp"
with open(ready, "w") as f:
    f.write(str(job.id))
os.rename(ready, sys.argv[2])
while True:
    time.sleep(1)
"""


def test_second_process_gets_storage_locked_naming_path_and_holder_pid(
    app: kathikon.Kathikon, store_path: Path, tmp_path: Path
) -> None:
    """With connect=False a second process is refused instead of becoming a client (the
    client path is tested in multiprocess/)."""
    script = tmp_path / "try_open.py"
    script.write_text(TRY_OPEN)
    result = run_child(script, str(store_path))
    assert result["opened"] is False, result
    assert result["type"] == "StorageLockedError", result
    assert result["is_storage_error"]
    message = result["message"]
    assert str(store_path) in message
    assert re.search(rf"\b{os.getpid()}\b", message), f"holder pid {os.getpid()} not in {message!r}"
    assert str(result["pid"]) != str(os.getpid())
    # The holder is unaffected.
    assert app.get(app.insert(_noop_worker(app), {}).id).state is JobState.AVAILABLE


def _noop_worker(app: kathikon.Kathikon) -> kathikon.WorkerFunction:
    @app.worker(name="persist.noop")
    def noop(job: Job) -> None:
        pass

    return noop


@pytest.fixture
def holder(store_path: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A child process holding the store, after it inserted one job (its id is yielded)."""
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    ready = tmp_path / "holder.ready"
    with (tmp_path / "hold.err").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(store_path), str(ready)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_for(
            f"the holder to open the store (stderr: {tmp_path / 'hold.err'})",
            lambda: ready.exists() or proc.poll() is not None,
            timeout=CHILD_TIMEOUT,
        )
        assert ready.exists(), (tmp_path / "hold.err").read_text()
        yield proc, int(ready.read_text())
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(CHILD_TIMEOUT)


def test_store_held_by_another_process_then_released_when_it_dies(
    holder: tuple[subprocess.Popen[bytes], int], store_path: Path
) -> None:
    proc, job_id = holder
    started = time.monotonic()
    with pytest.raises(kathikon.StorageLockedError) as info:
        kathikon.Kathikon(store_path, connect=False)
    assert time.monotonic() - started < 5, "refusing the held store took too long"
    message = str(info.value)
    assert isinstance(info.value, kathikon.StorageError)
    assert str(store_path) in message
    assert re.search(rf"\b{proc.pid}\b", message), f"holder pid {proc.pid} not in {message!r}"
    assert "this process" not in message
    # A failed open leaves nothing registered here: still refused for the same reason.
    with pytest.raises(kathikon.StorageLockedError):
        kathikon.Kathikon(store_path, connect=False)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(CHILD_TIMEOUT) == -signal.SIGKILL
    # The kernel released the lock with the process; the holder's insert is durable.
    app = kathikon.Kathikon(store_path)
    try:
        job = app.get(job_id)
        assert job.args == {"from": "holder"}
        assert job.state is JobState.AVAILABLE
    finally:
        app.close()


def test_a_log_deleted_after_a_kill_is_refused_not_read_as_empty(
    holder: tuple[subprocess.Popen[bytes], int], store_path: Path, tmp_path: Path
) -> None:
    """The holder's insert is durable only in the write-ahead log until a checkpoint: with the
    log gone after a SIGKILL, the open is refused naming the log, not opened without the job.
    An empty file in the log's place is the explicit way to accept the loss."""
    proc, job_id = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(CHILD_TIMEOUT)
    log = store_path.with_name(store_path.name + "-wal")
    kept = tmp_path / "kept-wal"
    log.rename(kept)
    script = tmp_path / "read_store.py"
    script.write_text(READ_STORE)
    result = run_child(script, str(store_path))
    assert result["outcome"] == "error", result
    assert result["type"] == "CorruptStoreError", result
    assert f"write-ahead log {log} is missing" in result["message"], result
    assert "not closed cleanly" in result["message"], result
    # Put back, the log brings the job back.
    kept.rename(log)
    result = run_child(script, str(store_path))
    assert result["outcome"] == "opened", result
    assert str(job_id) in result["args"], result
    # After that clean close the log is gone, and the store needs none.
    assert not log.exists()
    assert run_child(script, str(store_path))["outcome"] == "opened"


def test_second_app_in_this_process_gets_a_clear_error_and_close_releases(
    app: kathikon.Kathikon, store_path: Path
) -> None:
    noop = _noop_worker(app)
    job = noop.insert({"k": 1})
    started = time.monotonic()
    for _ in range(2):
        with pytest.raises(kathikon.StorageLockedError) as info:
            kathikon.Kathikon(store_path, queues={"default": 1})
        message = str(info.value)
        assert "this process" in message
        assert str(store_path) in message
    assert time.monotonic() - started < 5
    # The first app is unaffected by the refused ones.
    assert noop.insert({"k": 2}).id == job.id + 1
    app.close()
    reopened = kathikon.Kathikon(store_path)
    try:
        assert [j.args for j in reopened.jobs()] == [{"k": 1}, {"k": 2}]
    finally:
        reopened.close()
    # ...and once more, after that one closed too.
    kathikon.Kathikon(store_path).close()


@pytest.mark.parametrize("spelling", ["symlink", "dotdot"])
def test_same_file_under_another_spelling_in_this_process(
    app: kathikon.Kathikon, store_path: Path, spelling: str
) -> None:
    if spelling == "symlink":
        other = store_path.parent / "alias.redb"
        other.symlink_to(store_path)
    else:
        other = store_path.parent / ".." / store_path.parent.name / store_path.name
    started = time.monotonic()
    with pytest.raises(kathikon.StorageLockedError) as info:
        kathikon.Kathikon(other)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert str(other) in message
    assert "this process" in message, message


# -- files that are not stores --------------------------------------------------------------


def _random_bytes() -> bytes:
    data = bytearray(random.Random(1234).randbytes(9000))
    data[0] = 0x00  # never the start of a redb header
    return bytes(data)


NOT_STORES: dict[str, bytes] = {
    "random-bytes": _random_bytes(),
    "text-file": ("jobs:\n  - send the emails\n" * 200).encode(),
    "sqlite-header": b"SQLite format 3\x00" + bytes(4080),
    "short-text": b"hi\n",
}


@pytest.mark.parametrize("kind", sorted(NOT_STORES))
def test_a_file_that_is_not_a_store_is_refused_and_left_unchanged(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / f"{kind}.redb"
    content = NOT_STORES[kind]
    path.write_bytes(content)
    path.chmod(0o644)
    mode = path.stat().st_mode
    for _ in range(2):  # a refused open leaves nothing behind that changes the second answer
        with pytest.raises(kathikon.NotAStoreError) as info:
            kathikon.Kathikon(path)
        assert isinstance(info.value, kathikon.StorageError)
        assert str(path) in str(info.value)
    assert path.read_bytes() == content
    assert path.stat().st_mode == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


# -- damaged stores -------------------------------------------------------------------------

STORE_JOBS = 300
MAKE_STORE = """
import sys
import kathikon
app = kathikon.Kathikon(sys.argv[1])
@app.worker(name="persist.damage")
def work(job): pass
for i in range(int(sys.argv[2])):
    work.insert({"i": i, "pad": "MARK%06d" % i + "x" * 200})
app.close()
print("{}")
"""
READ_STORE = """
import json, sys
import kathikon
try:
    app = kathikon.Kathikon(sys.argv[1])
    try:
        args = {}
        after = None
        while True:
            page = app.jobs(limit=50, after=after)
            if not page:
                break
            for job in page:
                args[job.id] = job.args
            after = page[-1].id
        for job_id in args:
            assert app.get(job_id).args == args[job_id]
    finally:
        app.close()
    print(json.dumps({"outcome": "opened", "args": args}))
except kathikon.StorageError as e:
    print(json.dumps({"outcome": "error", "type": type(e).__name__, "message": str(e)}))
"""


def expected_args(i: int) -> dict[str, Any]:
    return {"i": i, "pad": f"MARK{i:06d}" + "x" * 200}


@pytest.fixture(scope="module")
def pristine_store(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a real, cleanly closed store holding STORE_JOBS available jobs."""
    base = tmp_path_factory.mktemp("pristine")
    script = base / "make_store.py"
    script.write_text(MAKE_STORE)
    path = base / "jobs.redb"
    run_child(script, str(path), str(STORE_JOBS))
    data = path.read_bytes()
    assert data.startswith(b"redb")
    return data


def _overwrite(data: bytes, at: int, chunk: bytes) -> bytes:
    return data[:at] + chunk + data[at + len(chunk) :]


def _damage_record(data: bytes) -> bytes:
    """Replace the padding of job i=150's args with bytes that are never valid UTF-8, in every
    copy of the record (copy-on-write leaves old copies; one of them is the live one)."""
    marker = b"MARK000150"
    out = bytearray(data)
    hits = [m.start() for m in re.finditer(re.escape(marker), data)]
    assert hits, "the record to damage was not found in the file"
    for at in hits:
        out[at + len(marker) : at + len(marker) + 64] = b"\xff" * 64
    return bytes(out)


def _flip_bit_in_record(data: bytes) -> bytes:
    """Flip one bit in the padding of job i=150's args ("x" becomes "y"), in every copy of the
    record: the record still decodes, to different args. Before record checksums and the
    integrity check at open, this read back changed, silently (issue 4)."""
    marker = b"MARK000150"
    out = bytearray(data)
    hits = [m.start() for m in re.finditer(re.escape(marker), data)]
    assert hits, "the record to damage was not found in the file"
    for at in hits:
        out[at + len(marker) + 100] ^= 0x01
    return bytes(out)


def _damage_live_commit_slot(data: bytes) -> bytes:
    """Overwrite the commit slot redb reads (the god byte's primary bit says which of the two
    128-byte slots, at offsets 64 and 192, is live), all but its first 8 bytes. Which slot is
    live depends on how many durable commits the store has made, so the damage follows it."""
    slot = 64 + 128 * (data[9] & 1)
    return _overwrite(data, slot + 8, b"\xff" * 120)


def _middle_page(data: bytes) -> int:
    return (len(data) // 2) // 4096 * 4096


# name → (damage, whether a typed error is required; otherwise the data may read back intact
# when the damage happened to land on a page the store no longer uses)
DAMAGES: dict[str, tuple[Callable[[bytes], bytes], bool]] = {
    "truncated-to-nothing": (lambda d: b"", True),
    "truncated-to-half": (lambda d: d[: len(d) // 2], True),
    "truncated-to-one-page": (lambda d: d[:4096], True),
    "truncated-inside-header": (lambda d: d[:100], True),
    "magic-tail-overwritten": (lambda d: _overwrite(d, 4, b"\x00" * 5), True),
    "header-fields-zeroed": (lambda d: _overwrite(d, 9, b"\x00" * 55), True),
    "commit-slot-overwritten": (_damage_live_commit_slot, True),
    "job-record-overwritten": (_damage_record, True),
    "job-record-one-bit-flipped": (_flip_bit_in_record, True),
    "first-page-after-header-zeroed": (lambda d: _overwrite(d, 4096, bytes(4096)), False),
    "middle-page-zeroed": (lambda d: _overwrite(d, _middle_page(d), bytes(4096)), False),
    "middle-page-random": (
        lambda d: _overwrite(d, _middle_page(d), random.Random(7).randbytes(4096)),
        False,
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_store_raises_a_typed_error_never_a_crash_or_hang(
    pristine_store: bytes, tmp_path: Path, damage: str
) -> None:
    corrupt, must_fail = DAMAGES[damage]
    path = tmp_path / "jobs.redb"
    data = corrupt(pristine_store)
    assert data != pristine_store
    path.write_bytes(data)
    script = tmp_path / "read_store.py"
    script.write_text(READ_STORE)
    result = run_child(script, str(path))
    if result["outcome"] == "error":
        assert result["type"] in ("CorruptStoreError", "NotAStoreError"), result
        assert str(path) in result["message"], result
    else:
        assert not must_fail, f"the damaged store opened and read back: {damage}"
        got = {int(k): v for k, v in result["args"].items()}
        want = {i + 1: expected_args(i) for i in range(STORE_JOBS)}
        assert got == want, "a damaged store opened but returned wrong jobs"


def test_a_healthy_store_has_nothing_quarantined(tmp_path: Path) -> None:
    """``app.quarantined()`` lists damaged records moved aside (the engine's tests damage one
    for real, through redb); a healthy store has none, also after a reopen, and the event that
    reports one can be listened to."""
    path = tmp_path / "jobs.redb"
    seen: list[Any] = []
    kathikon.telemetry.attach(
        "test-quarantine", [("kathikon", "job", "quarantine")], lambda *a: seen.append(a)
    )
    try:
        for _ in range(2):
            app = kathikon.Kathikon(path)
            try:
                _noop_worker(app).insert({"a": 1})
                assert app.quarantined() == []
            finally:
                app.close()
    finally:
        kathikon.telemetry.detach("test-quarantine")
    assert seen == []


# -- permissions ----------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_a_new_store_file_is_owner_only(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "new" / "jobs.redb"
    path.parent.mkdir()
    assert not path.exists()
    old = os.umask(umask)
    try:
        app = kathikon.Kathikon(path)
    finally:
        os.umask(old)
    try:
        _noop_worker(app).insert({"secret": "s3cr3t"})
    finally:
        app.close()
    for created in path.parent.iterdir():
        assert stat.S_IMODE(created.stat().st_mode) == 0o600, created
    assert path.exists()
    # Reopening keeps the mode.
    kathikon.Kathikon(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
