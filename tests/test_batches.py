"""Batches through the public API: ``app.insert_batch`` stores jobs as one batch, ``app.batch``
reports its members per state, and when the last member finishes the store inserts each
callback whose condition holds, once, as a job of its worker with the batch's ``args`` and a
``meta["batch"]`` that :class:`kathikon.BatchCallback` reads. Jobs join an open batch by id; a
finished batch, callbacks for a batch that exists, and bad input are refused, storing nothing.
Owner, a second app on the same store file, worker processes and testing modes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import kathikon

HERE = Path(__file__).parent


class Calls:
    """What the callback workers were called with."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, kathikon.BatchCallback, dict[str, Any]]] = []


def make_app(path: Any = None, **kw: Any) -> tuple[kathikon.Kathikon, dict[str, Any], Calls]:
    app = kathikon.Kathikon(path, queues={"default": 2, "callbacks": 1}, poll_interval=30, **kw)
    calls = Calls()

    @app.worker(name="t.member", max_attempts=2)
    def member(job: kathikon.Job) -> Any:
        outcome = job.args.get("outcome")
        if outcome == "discard":
            raise kathikon.Discard("bad input")
        if outcome == "cancel":
            raise kathikon.Cancel("not wanted")
        if outcome == "fail_once" and job.attempt == 1:
            raise RuntimeError("first attempt fails")
        return job.args.get("n")

    def recorder(name: str) -> Any:
        @app.worker(name=f"t.{name}", queue="callbacks")
        def callback(job: kathikon.Job) -> None:
            info = kathikon.BatchCallback.of(job)
            assert info is not None
            calls.seen.append((name, info, dict(job.args)))

        return callback

    workers = {"member": member, "notify": recorder("notify"), "alert": recorder("alert")}
    workers["cleanup"] = recorder("cleanup")
    return app, workers, calls


@pytest.fixture
def owner() -> Any:
    app, workers, calls = make_app()
    try:
        yield app, workers, calls
    finally:
        app.close()


def test_callbacks_are_inserted_once_when_the_last_member_finishes(owner: Any) -> None:
    app, w, calls = owner
    member = w["member"]
    batch = app.insert_batch(
        [member.new({"n": 1}), member.new({"n": 2, "outcome": "discard"}), member.new({"n": 3})],
        on_completed=w["notify"],
        on_discarded=w["alert"],
        on_finished=w["cleanup"],
        args={"album": 3},
    )
    assert [j.batch_id for j in batch.jobs] == [batch.id] * 3
    status = app.batch(batch.id)
    assert (status.counts["available"], status.total, status.pending) == (3, 3, 3)
    assert not status.finished
    assert status.callbacks == {"completed": None, "discarded": None, "finished": None}

    assert app.drain() == {"completed": 4, "discarded": 1}
    status = app.batch(batch.id)
    assert status.finished and status.pending == 0
    assert (status.counts["completed"], status.counts["discarded"]) == (2, 1)
    assert status.callbacks["completed"] is None, "a member was discarded"
    finals = {"completed": 2, "cancelled": 0, "discarded": 1}
    assert calls.seen == [
        ("alert", kathikon.BatchCallback(batch.id, "discarded", finals, 3), {"album": 3}),
        ("cleanup", kathikon.BatchCallback(batch.id, "finished", finals, 3), {"album": 3}),
    ]
    for event in ("discarded", "finished"):
        job = app.get(status.callbacks[event])
        assert job.state is kathikon.JobState.COMPLETED and job.queue == "callbacks"
        assert job.batch_id is None, "a callback is not a member of the batch"

    # Retried, the discarded member moves the counts; nothing fires again.
    app.retry(batch.jobs[1].id)
    app.drain()
    assert app.batch(batch.id).counts["discarded"] == 1
    assert len(calls.seen) == 2


def test_a_retried_member_holds_the_batch_open_until_it_finishes(owner: Any) -> None:
    app, w, calls = owner
    batch = app.insert_batch(
        [w["member"].new({"outcome": "fail_once"}), w["member"].new()], on_completed=w["notify"]
    )
    app.drain()
    status = app.batch(batch.id)
    assert (status.counts["retryable"], status.counts["completed"]) == (1, 1)
    assert not status.finished and calls.seen == []
    app.drain(with_scheduled=True)
    assert [(name, info.event) for name, info, _ in calls.seen] == [("notify", "completed")]


def test_jobs_join_an_open_batch_and_a_finished_one_takes_no_more(owner: Any) -> None:
    app, w, calls = owner
    member = w["member"]
    batch = app.insert_batch([member.new()], batch_id="album-7", on_finished=w["cleanup"])
    assert batch.id == "album-7"
    more = app.insert_batch([member.new(), member.new()], batch_id="album-7")
    assert more.id == "album-7" and app.batch("album-7").total == 3
    with pytest.raises(kathikon.InvalidJobError, match="exists already"):
        app.insert_batch([member.new()], batch_id="album-7", on_finished=w["notify"])
    app.drain()
    assert [info.total for _, info, _ in calls.seen] == [3]
    with pytest.raises(kathikon.InvalidJobError, match="takes no more jobs"):
        app.insert_batch([member.new()], batch_id="album-7")
    assert app.batch("album-7").total == 3
    with pytest.raises(kathikon.BatchNotFoundError, match="never"):
        app.batch("never")
    with pytest.raises(LookupError):
        app.batch("never")


def test_bad_batches_are_refused_and_store_nothing(owner: Any) -> None:
    app, w, _ = owner
    member = w["member"]
    refusals: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"specs": []}, kathikon.InvalidJobError, "at least one job"),
        ({"batch_id": ""}, kathikon.InvalidJobError, "batch id is empty"),
        ({"batch_id": 7}, kathikon.InvalidJobError, "batch_id=7 must be a str"),
        ({"batch_id": "x" * 300}, kathikon.InvalidJobError, "300 bytes"),
        ({"args": {"a": 1}}, kathikon.InvalidJobError, "give at least one callback"),
        ({"on_completed": "no.such.worker"}, kathikon.UnknownWorkerError, "no.such.worker"),
        (
            {"specs": [member.new(), member.new(unique=kathikon.Unique())]},
            kathikon.InvalidJobError,
            "cannot be unique",
        ),
        (
            {"on_finished": w["notify"], "args": {"bad": object()}},
            kathikon.InvalidJobError,
            "args",
        ),
    ]
    for given, error, words in refusals:
        kw = {"specs": [member.new()], **given}
        with pytest.raises(error, match=words):
            app.insert_batch(kw.pop("specs"), **kw)
    assert list(app.jobs()) == []


def test_inline_testing_runs_the_members_then_the_callbacks() -> None:
    app, w, calls = make_app(testing="inline")
    try:
        batch = app.insert_batch(
            [w["member"].new({"n": n}) for n in range(3)], on_completed=w["notify"]
        )
        assert [j.state for j in batch.jobs] == [kathikon.JobState.COMPLETED] * 3
        assert [(name, info.event) for name, info, _ in calls.seen] == [("notify", "completed")]
    finally:
        app.close()


def run_app(mode: str, store: Path, side: Path) -> Any:
    """Run ``multiprocess/batches_app.py MODE`` on ``store`` and return what it printed."""
    env = {**os.environ, "KATHIKON_MP_STORE": str(store), "KATHIKON_MP_SIDE": str(side)}
    done = subprocess.run(
        [sys.executable, str(HERE / "multiprocess" / "batches_app.py"), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_client_app_inserts_a_batch_the_owner_runs(store_path: Path, tmp_path: Path) -> None:
    app, _, _ = make_app(store_path)
    try:
        report = run_app("client", store_path, tmp_path / "side")
        status = app.batch(report["batch"])
        assert (status.total, status.counts["available"]) == (5, 5)
        assert [j.batch_id for j in app.jobs()] == [report["batch"]] * 5
    finally:
        app.close()


def test_batch_members_run_in_worker_processes_and_the_callback_once(tmp_path: Path) -> None:
    side = tmp_path / "side"
    report = run_app("processes", tmp_path / "jobs.redb", side)
    assert report["counts"]["completed"] == 40
    assert report["me"] not in report["pids"], "members ran in the worker processes"
    lines = side.read_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].split()[:2] == [report["batch"], "finished"]


def test_batches_on_postgresql(pg_db: str) -> None:
    one, w, calls = make_app(url=pg_db)
    other, w2, calls2 = make_app(url=pg_db)
    try:
        member = w["member"]
        batch = one.insert_batch(
            [member.new({"n": n}) for n in range(5)] + [member.new({"outcome": "cancel"})],
            on_completed=w["notify"],
            on_cancelled=w["alert"],
            on_finished=w["cleanup"],
            args={"album": 3},
        )
        joined = other.insert_batch([w2["member"].new({"n": 9})], batch_id=batch.id)
        assert [j.batch_id for j in joined.jobs] == [batch.id]
        assert other.batch(batch.id).total == 7
        other.drain()  # every member, then the callbacks, run on the other node
        one.drain()
        status = one.batch(batch.id)
        assert status.finished and (status.counts["completed"], status.counts["cancelled"]) == (
            6,
            1,
        )
        assert status.callbacks["completed"] is None
        finals = {"completed": 6, "cancelled": 1, "discarded": 0}
        ran = sorted((name, info.event, args["album"]) for name, info, args in calls2.seen)
        assert ran == [("alert", "cancelled", 3), ("cleanup", "finished", 3)]
        assert all(info.counts == finals for _, info, _ in calls2.seen) and calls.seen == []
        with pytest.raises(kathikon.InvalidJobError, match="takes no more jobs"):
            one.insert_batch([member.new()], batch_id=batch.id)
        with pytest.raises(kathikon.BatchNotFoundError):
            other.batch("never")
    finally:
        other.close()
        one.close()
