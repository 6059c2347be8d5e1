"""Job results through the public API: what a worker returns is kept as ``job.result`` and read
with ``app.result`` / ``app.aresult``, which wait for the job to finish (woken by the store,
not by polling: the apps here poll every 30 s), raise ``JobFailedError`` /
``JobCancelledError`` with the job, and ``ResultTimeoutError`` on a timeout. Results too large
or not JSON leave the job completed with the reason in its errors; ``store_result=False``
keeps none. Owner, a second app on the same store file, worker processes and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import kathikon
from kathikon import JobState as S

SLOW_POLL = 30.0


def make_app(path: Any = None, **kw: Any) -> kathikon.Kathikon:
    return kathikon.Kathikon(path, queues={"default": 2}, poll_interval=SLOW_POLL, **kw)


def register(app: kathikon.Kathikon) -> dict[str, Any]:
    @app.worker(name="t.value", max_attempts=3)
    def value(job: kathikon.Job) -> Any:
        if job.args.get("fail_first") and job.attempt == 1:
            raise RuntimeError("first attempt fails")
        return job.args["value"]

    @app.worker(name="t.boom", max_attempts=1)
    def boom(job: kathikon.Job) -> Any:
        raise RuntimeError("always")

    @app.worker(name="t.silent", store_result=False)
    def silent(job: kathikon.Job) -> Any:
        return {"kept": False}

    @app.worker(name="t.sleepy")
    async def sleepy(job: kathikon.Job) -> Any:
        await asyncio.sleep(job.args.get("sleep", 0.0))
        return {"slept": True}

    return {"value": value, "boom": boom, "silent": silent, "sleepy": sleepy}


@pytest.fixture
def owner(store_path: Path) -> Any:
    app = make_app(store_path, max_result_bytes=1000)
    try:
        yield app
    finally:
        app.close(timeout=5)


def test_a_returned_value_is_kept_and_read_back_also_after_a_reopen(store_path: Path) -> None:
    app = make_app(store_path)
    w = register(app)
    job = w["value"].insert({"value": {"rows": [1, 2.5, "é"], "ok": True}})
    none = w["value"].insert({"value": None})
    app.drain()
    assert app.get(job.id).result == {"rows": [1, 2.5, "é"], "ok": True}
    assert app.result(job.id, timeout=5) == {"rows": [1, 2.5, "é"], "ok": True}
    assert app.get(none.id).result is None and app.result(none.id) is None
    app.close()
    again = make_app(store_path)
    try:
        assert again.result(job.id) == {"rows": [1, 2.5, "é"], "ok": True}
        assert again.jobs(state="completed")[0].result == {"rows": [1, 2.5, "é"], "ok": True}
    finally:
        again.close()


def test_a_result_too_large_or_not_json_is_not_kept_and_the_job_says_why(owner: Any) -> None:
    w = register(owner)
    big = w["value"].insert({"value": "x" * 2000})
    odd = owner.insert(w["value"], {"value": 1})
    owner.drain()

    @owner.worker(name="t.dates")
    def dates(job: kathikon.Job) -> Any:
        return {"when": datetime.date(2026, 12, 7)}

    dated = dates.insert()
    owner.drain()
    for job_id, words in [(big.id, "max_result_bytes=1000"), (dated.id, "is not JSON")]:
        job = owner.get(job_id)
        assert job.state is S.COMPLETED and job.result is None
        assert job.errors[-1]["error"].startswith("result not stored:")
        assert words in job.errors[-1]["error"]
        assert owner.result(job_id) is None
    assert owner.result(odd.id) == 1


def test_store_result_false_keeps_nothing(owner: Any) -> None:
    w = register(owner)
    job = w["silent"].insert()
    owner.drain()
    assert owner.get(job.id).state is S.COMPLETED
    assert owner.result(job.id) is None and owner.get(job.id).errors == []

    class Quiet(kathikon.Worker):
        store_result = False

        def perform(self, job: kathikon.Job) -> Any:
            return 5

    owner.register(Quiet)
    quiet = owner.insert(Quiet)
    owner.drain()
    assert owner.result(quiet.id) is None
    with pytest.raises(kathikon.ConfigurationError, match="store_result='yes'"):
        owner.worker(name="t.bad", store_result="yes")(lambda job: None)
    with pytest.raises(kathikon.ConfigurationError, match="max_result_bytes=0"):
        make_app(None, max_result_bytes=0)


def test_failed_and_cancelled_jobs_raise_carrying_the_job(owner: Any) -> None:
    w = register(owner)
    failed = w["boom"].insert()
    owner.drain()
    with pytest.raises(kathikon.JobFailedError, match="always") as caught:
        owner.result(failed.id)
    assert caught.value.job.id == failed.id and caught.value.job.state is S.DISCARDED
    later = w["value"].insert({"value": 1}, schedule_in=3600)
    owner.cancel(later.id)
    with pytest.raises(kathikon.JobCancelledError) as cancelled:
        owner.result(later.id)
    assert cancelled.value.job.state is S.CANCELLED
    with pytest.raises(kathikon.JobNotFoundError):
        owner.result(999_999)


def test_a_timeout_raises_a_typed_timeout_error_with_the_job(owner: Any) -> None:
    w = register(owner)
    job = w["value"].insert({"value": 1})
    started = time.monotonic()
    with pytest.raises(kathikon.ResultTimeoutError, match="still available") as caught:
        owner.result(job.id, timeout=0.3)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.job.state is S.AVAILABLE
    assert 0.25 < time.monotonic() - started < 5
    with pytest.raises(kathikon.ConfigurationError, match="timeout=-1"):
        owner.result(job.id, timeout=-1)


def test_a_waiter_is_woken_when_the_job_finishes_through_its_retries(owner: Any) -> None:
    w = register(owner)
    job = w["value"].insert({"value": [7], "fail_first": True})
    found: list[Any] = []

    def wait() -> None:
        found.append((owner.result(job.id, timeout=120), time.monotonic()))

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    owner.drain()  # the first attempt fails: retryable, not finished
    time.sleep(0.3)
    assert not found
    owner.drain(with_scheduled=True)
    finished_at = time.monotonic()
    waiter.join(timeout=30)
    assert found and found[0][0] == [7]
    assert found[0][1] - finished_at < 5, "woken, not polled (the app polls every 30 s)"


def test_aresult_waits_without_blocking_the_loop(owner: Any) -> None:
    w = register(owner)
    job = w["sleepy"].insert({"sleep": 0.2})
    owner.start()

    async def main() -> Any:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        value = await owner.aresult(job.id, timeout=60)
        ticker.cancel()
        with pytest.raises(kathikon.ResultTimeoutError):
            await owner.aresult(w["value"].insert({"value": 1}, schedule_in=3600).id, timeout=0.2)
        return value, ticks

    value, ticks = asyncio.run(main())
    assert value == {"slept": True} and ticks > 5


def test_a_client_app_on_the_same_store_reads_results(store_path: Path) -> None:
    owner = make_app(store_path)
    register(owner)
    script = Path(__file__).parent / "multiprocess" / "results_client.py"
    env = {**os.environ, "KATHIKON_MP_STORE": str(store_path)}
    client = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert client.stdout is not None
        ids = json.loads(client.stdout.readline())["ids"]
        time.sleep(0.5)  # the client waits at this process, its owner
        owner.drain()
        drained_at = time.time()
        report = json.loads(client.stdout.readline())
        assert client.wait(timeout=60) == 0
        assert report["result"] == {"from": "client"}
        assert report["failed"] == "discarded"
        assert report["finished_at"] - drained_at < 2, "woken at the owner, not polled"
        assert owner.get(ids[0]).result == {"from": "client"}
    finally:
        client.kill()
        client.wait()
        if client.stdout is not None:
            client.stdout.close()
        owner.close()


def test_results_of_jobs_run_in_worker_processes(tmp_path: Path) -> None:
    script = Path(__file__).parent / "multiprocess" / "results_processes.py"
    env = {**os.environ, "KATHIKON_MP_STORE": str(tmp_path / "jobs.redb")}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [r["square"] for r in report["results"]] == [n * n for n in range(6)]
    assert {r["pid"] for r in report["results"]} <= set(report["pids"])
    assert report["me"] not in {r["pid"] for r in report["results"]}


def test_results_on_postgresql(pg_db: str) -> None:
    owner = kathikon.Kathikon(url=pg_db, queues={"default": 2}, poll_interval=SLOW_POLL)
    other = kathikon.Kathikon(url=pg_db, queues={"default": 2}, poll_interval=SLOW_POLL)
    try:
        w = register(owner)
        register(other)
        job = w["value"].insert({"value": {"on": "pg"}})
        found: list[Any] = []
        waiter = threading.Thread(target=lambda: found.append(other.result(job.id, timeout=120)))
        waiter.start()
        time.sleep(0.5)
        started = time.monotonic()
        owner.drain()
        waiter.join(timeout=30)
        assert found == [{"on": "pg"}]
        assert time.monotonic() - started < 5, "woken by NOTIFY, not polled"
        failed = w["boom"].insert()
        owner.drain()
        with pytest.raises(kathikon.JobFailedError):
            other.result(failed.id)
        with pytest.raises(kathikon.ResultTimeoutError):
            other.result(w["value"].insert({"value": 1}, schedule_in=3600).id, timeout=0.3)
    finally:
        other.close()
        owner.close()
