"""Running jobs in the background: start/stop, `with app:`, run(), concurrency bounds,
priority order, scheduled jobs, cancelling executing jobs, and the stop grace period."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

import kathikon

WaitUntil = Callable[..., None]
S = kathikon.JobState
MakeApp = Callable[..., kathikon.Kathikon]


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[MakeApp]:
    """Build file-backed apps with the given settings; all are closed after the test."""
    apps: list[kathikon.Kathikon] = []

    def make(**kwargs: Any) -> kathikon.Kathikon:
        kwargs.setdefault("poll_interval", 0.2)
        kwargs.setdefault("scheduler_interval", 0.2)
        app = kathikon.Kathikon(tmp_path / f"app{len(apps)}.redb", **kwargs)
        apps.append(app)
        return app

    try:
        yield make
    finally:
        for app in apps:
            app.close(timeout=5)


class Gauge:
    """Counts jobs running at once and remembers the highest count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.max = 0
        self.done = 0

    def enter(self) -> None:
        with self._lock:
            self.running += 1
            self.max = max(self.max, self.running)

    def leave(self) -> None:
        with self._lock:
            self.running -= 1
            self.done += 1

    def __enter__(self) -> None:
        self.enter()

    def __exit__(self, *exc: object) -> None:
        self.leave()


def states(app: kathikon.Kathikon) -> list[str]:
    return [j.state.value for j in app.jobs(limit=10_000)]


def all_completed(app: kathikon.Kathikon, n: int) -> Callable[[], bool]:
    return lambda: states(app) == ["completed"] * n


# -- start / stop / with / run ------------------------------------------------------------


def test_start_runs_jobs_in_background_threads(
    app: kathikon.Kathikon, wait_until: WaitUntil
) -> None:
    threads: set[int] = set()

    @app.worker
    def w(job: kathikon.Job) -> None:
        threads.add(threading.get_ident())

    for i in range(5):
        w.insert({"i": i})
    app.start()
    try:
        wait_until(all_completed(app, 5), what="5 jobs to complete")
        # a job inserted while running is picked up too
        late = w.insert({"late": True})
        wait_until(lambda: app.get(late.id).state is S.COMPLETED)
    finally:
        assert app.stop(timeout=5) is True
    assert threading.get_ident() not in threads
    # stopped: new jobs wait
    idle = w.insert({})
    time.sleep(0.3)
    assert app.get(idle.id).state is S.AVAILABLE
    # and it can be started again
    app.start()
    try:
        wait_until(lambda: app.get(idle.id).state is S.COMPLETED)
    finally:
        assert app.stop(timeout=5)


def test_stop_without_start_is_fine(app: kathikon.Kathikon) -> None:
    assert app.stop(timeout=1) is True


def test_new_jobs_are_claimed_at_once_without_polling(
    make_app: MakeApp, wait_until: WaitUntil
) -> None:
    """With a 30 s poll interval, a job inserted into an idle running app still starts at
    once: claimers are woken by the insert, not by polling."""
    app = make_app(queues={"default": 1}, poll_interval=30, scheduler_interval=30)
    ran = threading.Event()

    @app.worker
    def w(job: kathikon.Job) -> None:
        ran.set()

    app.start()
    try:
        time.sleep(0.1)  # let the dispatcher park in its claim
        started = time.monotonic()
        w.insert({})
        assert ran.wait(5)
        assert time.monotonic() - started < 1.0
    finally:
        stop_started = time.monotonic()
        assert app.stop(timeout=5)
        assert time.monotonic() - stop_started < 2.0, "stop must interrupt a parked claim"


def test_with_block_runs_then_closes(store_path: Path, wait_until: WaitUntil) -> None:
    app = kathikon.Kathikon(store_path, queues={"default": 2}, poll_interval=0.2)
    seen: list[int] = []

    @app.worker(name="w")
    def w(job: kathikon.Job) -> None:
        seen.append(job.id)

    with app as entered:
        assert entered is app
        job = w.insert({})
        wait_until(lambda: app.get(job.id).state is S.COMPLETED)
    assert app.closed
    assert seen == [job.id]
    with pytest.raises(kathikon.EngineClosedError):
        app.get(job.id)
    # the file was released, and the outcome is stored
    again = kathikon.Kathikon(store_path)
    try:
        assert again.get(job.id).state is S.COMPLETED
    finally:
        again.close()


def test_with_block_closes_on_error(store_path: Path) -> None:
    app = kathikon.Kathikon(store_path, queues={"default": 1}, poll_interval=0.2)
    with pytest.raises(RuntimeError, match="boom"), app:
        raise RuntimeError("boom")
    assert app.closed
    kathikon.Kathikon(store_path).close()


def test_run_in_the_main_thread_stops_on_sigterm(
    app: kathikon.Kathikon, wait_until: WaitUntil
) -> None:
    assert threading.current_thread() is threading.main_thread()
    outer_calls: list[int] = []

    def outer(signum: int, frame: Any) -> None:
        outer_calls.append(signum)

    previous = signal.signal(signal.SIGTERM, outer)
    # If run() never returns, SIGINT it (KeyboardInterrupt also stops run) so the test fails
    # fast instead of hanging.
    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(15):
            os.kill(os.getpid(), signal.SIGINT)

    ran: list[int] = []

    @app.worker
    def terminator(job: kathikon.Job) -> None:
        ran.append(job.id)
        os.kill(os.getpid(), signal.SIGTERM)

    job = terminator.insert({})
    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    try:
        started = time.monotonic()
        app.run()
        elapsed = time.monotonic() - started
    finally:
        done.set()
        restored = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, previous)
        guard.join()
    assert elapsed < 10
    assert ran == [job.id]
    assert outer_calls == [], "run() must handle SIGTERM itself while it runs"
    assert restored is outer, "run() must restore the previous SIGTERM handler"
    assert app.get(job.id).state is S.COMPLETED
    assert app.stop(timeout=1) is True  # run() already stopped the runner
    app.start()  # and it can run again
    assert app.stop(timeout=5)


RUN_SCRIPT = textwrap.dedent(
    """
    import sys, time, pathlib
    import kathikon

    path, marker = sys.argv[1], pathlib.Path(sys.argv[2])
    app = kathikon.Kathikon(path, queues={"default": 2}, poll_interval=0.1)

    @app.worker(name="slow")
    def slow(job):
        marker.write_text(str(job.id))
        time.sleep(0.5)   # still running when SIGTERM arrives: run() waits for it

    slow.insert({})
    app.run()
    app.close()
    print("clean exit", flush=True)
    """
)


def test_run_in_a_subprocess_stops_gracefully_on_sigterm(
    tmp_path: Path, wait_until: WaitUntil
) -> None:
    script = tmp_path / "run_app.py"
    script.write_text(RUN_SCRIPT)
    store = tmp_path / "jobs.redb"
    marker = tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store), str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: marker.exists() or proc.poll() is not None, timeout=20)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "clean exit" in out
    app = kathikon.Kathikon(store)
    try:
        (job,) = app.jobs()
        assert job.id == int(marker.read_text())
        assert job.state is S.COMPLETED, "the running job must be waited for, not abandoned"
        assert job.errors == []
    finally:
        app.close()


# -- concurrency --------------------------------------------------------------------------


def test_sync_concurrency_bound_is_respected(make_app: MakeApp, wait_until: WaitUntil) -> None:
    app = make_app(queues={"default": 2, "wide": 3})
    gauges = {"default": Gauge(), "wide": Gauge()}

    def body(job: kathikon.Job) -> None:
        gauge = gauges[job.queue]
        gauge.enter()
        try:
            time.sleep(0.1)
        finally:
            gauge.leave()

    narrow_w = app.worker(name="narrow")(body)
    wide_w = app.worker(name="wide", queue="wide")(body)
    app.insert_all([narrow_w.new({"i": i}) for i in range(10)])
    app.insert_all([wide_w.new({"i": i}) for i in range(9)])
    started = time.monotonic()
    app.start()
    try:
        wait_until(all_completed(app, 19), timeout=15)
    finally:
        assert app.stop(timeout=5)
    elapsed = time.monotonic() - started
    assert gauges["default"].max == 2
    assert gauges["wide"].max == 3
    assert gauges["default"].done == 10 and gauges["wide"].done == 9
    assert elapsed >= 0.5  # 10 jobs of 0.1 s, two at a time


def test_async_jobs_run_concurrently_on_the_loop(make_app: MakeApp, wait_until: WaitUntil) -> None:
    app = make_app(queues={"default": 3})
    gauge = Gauge()
    threads: set[int] = set()

    @app.worker
    async def nap(job: kathikon.Job) -> None:
        threads.add(threading.get_ident())
        with gauge:
            await asyncio.sleep(0.1)

    app.insert_all([nap.new({"i": i}) for i in range(9)])
    started = time.monotonic()
    app.start()
    try:
        wait_until(all_completed(app, 9), timeout=15)
    finally:
        assert app.stop(timeout=5)
    assert gauge.max == 3
    assert len(threads) == 1, "async jobs share one event loop thread"
    assert threading.get_ident() not in threads
    assert time.monotonic() - started < 0.9 * 3  # far below 9 × 0.1 s run one by one


def test_sync_and_async_jobs_of_one_queue_share_its_concurrency(
    make_app: MakeApp, wait_until: WaitUntil
) -> None:
    """Lanes hold a slot while they run sync jobs and hand it to the async jobs they meet:
    mixed in one queue, never more than its concurrency run at once, and every job runs."""
    app = make_app(queues={"default": 3})
    gauge = Gauge()

    @app.worker
    def blocking(job: kathikon.Job) -> None:
        with gauge:
            time.sleep(0.01)

    @app.worker
    async def waiting(job: kathikon.Job) -> None:
        with gauge:
            await asyncio.sleep(0.02)

    specs = [(blocking if i % 3 else waiting).new({"i": i}) for i in range(60)]
    app.insert_all(specs)
    app.start()
    try:
        wait_until(all_completed(app, 60), timeout=20)
    finally:
        assert app.stop(timeout=5)
    assert gauge.done == 60
    assert 2 <= gauge.max <= 3


def test_async_jobs_overlap(make_app: MakeApp, wait_until: WaitUntil) -> None:
    """Five async jobs that can only finish once all five are running at the same time."""
    app = make_app(queues={"default": 5})
    gauge = Gauge()

    @app.worker
    async def rendezvous(job: kathikon.Job) -> None:
        gauge.enter()
        deadline = time.monotonic() + 5
        while gauge.running + gauge.done < 5:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {gauge.running} ran at once")
            await asyncio.sleep(0.01)
        gauge.leave()

    app.insert_all([rendezvous.new({"i": i}) for i in range(5)])
    app.start()
    try:
        wait_until(all_completed(app, 5), timeout=10)
    finally:
        assert app.stop(timeout=5)
    assert gauge.max == 5


def test_priority_order_with_concurrency_one(make_app: MakeApp, wait_until: WaitUntil) -> None:
    app = make_app(queues={"default": 1})
    order: list[int] = []

    @app.worker
    def w(job: kathikon.Job) -> None:
        order.append(job.id)

    priorities = [5, 0, 9, 0, 3, 1, 9, 5]
    jobs = [w.insert({"p": p}, priority=p) for p in priorities]
    app.start()
    try:
        wait_until(all_completed(app, len(jobs)))
    finally:
        assert app.stop(timeout=5)
    expected = [j.id for j in sorted(jobs, key=lambda j: (j.priority, j.id))]
    assert order == expected


def test_claim_order_is_priority_then_scheduled_time_then_id(
    make_app: MakeApp, wait_until: WaitUntil
) -> None:
    app = make_app(queues={"default": 1})
    order: list[str] = []

    @app.worker
    def w(job: kathikon.Job) -> None:
        order.append(job.args["name"])

    base = datetime.now(timezone.utc)
    w.insert({"name": "p0-now-first"}, priority=0)
    w.insert({"name": "p0-10s-ago"}, priority=0, schedule_at=base - timedelta(seconds=10))
    w.insert({"name": "p0-60s-ago"}, priority=0, schedule_at=base - timedelta(seconds=60))
    w.insert({"name": "p1-hour-ago"}, priority=1, schedule_at=base - timedelta(hours=1))
    w.insert({"name": "p0-now-second"}, priority=0)
    app.start()
    try:
        wait_until(all_completed(app, 5))
    finally:
        assert app.stop(timeout=5)
    assert order == ["p0-60s-ago", "p0-10s-ago", "p0-now-first", "p0-now-second", "p1-hour-ago"]


def test_drain_of_one_queue(app: kathikon.Kathikon) -> None:
    @app.worker
    def a(job: kathikon.Job) -> None:
        pass

    @app.worker(queue="emails")
    def b(job: kathikon.Job) -> None:
        pass

    ja, jb = a.insert({}), b.insert({})
    assert app.drain(queue="emails") == {"completed": 1}
    assert app.get(jb.id).state is S.COMPLETED
    assert app.get(ja.id).state is S.AVAILABLE


# -- scheduled jobs -----------------------------------------------------------------------


def test_scheduled_jobs_run_at_their_time_without_drain(
    make_app: MakeApp, wait_until: WaitUntil
) -> None:
    """Long poll and scheduler intervals: the scheduler must wake at the due time itself."""
    app = make_app(queues={"default": 2}, poll_interval=30, scheduler_interval=30)
    ran_at: dict[int, datetime] = {}

    @app.worker
    def w(job: kathikon.Job) -> None:
        ran_at[job.id] = datetime.now(timezone.utc)

    app.start()
    try:
        soon = w.insert({}, schedule_in=0.3)
        later = w.insert({}, schedule_in=0.6)
        assert soon.state is S.SCHEDULED and later.state is S.SCHEDULED
        time.sleep(0.15)
        assert ran_at == {}
        assert app.get(soon.id).state is S.SCHEDULED
        wait_until(lambda: len(ran_at) == 2, timeout=5)
        wait_until(all_completed(app, 2))
    finally:
        assert app.stop(timeout=5)
    for job in (soon, later):
        assert ran_at[job.id] >= job.scheduled_at
        assert (ran_at[job.id] - job.scheduled_at).total_seconds() < 1.0
    assert ran_at[soon.id] < ran_at[later.id]


def test_cancelled_or_retried_scheduled_jobs_do_not_run_when_their_time_comes(
    make_app: MakeApp, wait_until: WaitUntil
) -> None:
    app = make_app(queues={"default": 1})
    ran: list[str] = []

    @app.worker
    def w(job: kathikon.Job) -> None:
        ran.append(job.args["name"])

    cancelled = w.insert({"name": "cancelled"}, schedule_in=0.2)
    retried = w.insert({"name": "retried"}, schedule_in=0.2)
    app.cancel(cancelled.id)
    app.retry(retried.id)
    # a sentinel due after the other two: once it ran, their due time has passed too
    sentinel = w.insert({"name": "sentinel"}, schedule_in=0.4)
    app.start()
    try:
        wait_until(lambda: app.get(sentinel.id).state is S.COMPLETED)
    finally:
        assert app.stop(timeout=5)
    assert ran == ["retried", "sentinel"]
    assert app.get(cancelled.id).state is S.CANCELLED
    done = app.get(retried.id)
    assert (done.state, done.attempt) == (S.COMPLETED, 1)


def test_retry_backoff_runs_again_in_the_background(
    make_app: MakeApp, wait_until: WaitUntil
) -> None:
    app = make_app(queues={"default": 1}, poll_interval=30, scheduler_interval=30)
    attempts: list[tuple[int, float]] = []

    @app.worker(backoff=lambda job: 0.3)
    def flaky(job: kathikon.Job) -> None:
        attempts.append((job.attempt, time.monotonic()))
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")

    job = flaky.insert({})
    app.start()
    try:
        wait_until(lambda: app.get(job.id).state is S.COMPLETED, timeout=5)
    finally:
        assert app.stop(timeout=5)
    assert [a for a, _ in attempts] == [1, 2]
    assert attempts[1][1] - attempts[0][1] >= 0.3


# -- cancelling executing jobs ------------------------------------------------------------


def test_cancel_executing_async_job(app: kathikon.Kathikon, wait_until: WaitUntil) -> None:
    started = threading.Event()
    ended = threading.Event()
    what: list[str] = []

    @app.worker
    async def long(job: kathikon.Job) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
            what.append("finished")
        except asyncio.CancelledError:
            what.append("cancelled")
            raise
        finally:
            ended.set()

    job = long.insert({})
    app.start()
    try:
        assert started.wait(5)
        wait_until(lambda: app.get(job.id).state is S.EXECUTING)
        t0 = time.monotonic()
        cancelled = app.cancel(job.id)
        assert cancelled.state is S.CANCELLED
        assert cancelled.cancelled_at is not None
        assert ended.wait(2), "the coroutine must be cancelled, not left sleeping"
        assert time.monotonic() - t0 < 2
        assert what == ["cancelled"]
        stored = app.get(job.id)
        assert stored.state is S.CANCELLED
        assert stored.completed_at is None
    finally:
        t1 = time.monotonic()
        assert app.stop(timeout=5) is True
        assert time.monotonic() - t1 < 2
    assert app.get(job.id).state is S.CANCELLED


def test_cancel_an_async_job_claimed_but_waiting_for_a_slot(
    make_app: MakeApp, wait_until: WaitUntil
) -> None:
    """Concurrency 1: the second async job is claimed (executing in the store) and handed to
    the loop while the first runs. Cancelled then, it must never start."""
    app = make_app(queues={"default": 1})
    ran: list[int] = []
    release = threading.Event()

    @app.worker
    async def step(job: kathikon.Job) -> None:
        ran.append(job.args["i"])
        while not release.is_set():
            await asyncio.sleep(0.01)

    first, second = app.insert_all([step.new({"i": 1}), step.new({"i": 2})])
    app.start()
    try:
        wait_until(lambda: app.get(second).state is S.EXECUTING, what="the second job claimed")
        assert ran == [1]
        assert app.cancel(second).state is S.CANCELLED
        release.set()
        wait_until(lambda: app.get(first).state is S.COMPLETED, what="the first job")
        time.sleep(0.2)  # time enough for a wrongly started job to run
    finally:
        assert app.stop(timeout=5)
    assert ran == [1]
    assert app.get(second).state is S.CANCELLED


@pytest.mark.parametrize("late", ["return", "raise", "snooze"])
def test_cancel_executing_sync_job_ignores_its_late_result(
    app: kathikon.Kathikon, wait_until: WaitUntil, late: str
) -> None:
    started = threading.Event()
    release = threading.Event()
    returned = threading.Event()

    @app.worker
    def blocking(job: kathikon.Job) -> Any:
        started.set()
        try:
            assert release.wait(10)
            if late == "raise":
                raise RuntimeError("late failure")
            if late == "snooze":
                return kathikon.Snooze(0)
            return "late result"
        finally:
            returned.set()

    job = blocking.insert({})
    app.start()
    try:
        assert started.wait(5)
        wait_until(lambda: app.get(job.id).state is S.EXECUTING)
        cancelled = app.cancel(job.id)
        assert cancelled.state is S.CANCELLED
        assert app.get(job.id).state is S.CANCELLED
        release.set()
        assert returned.wait(5)
    finally:
        release.set()
        # stop waits for the job's thread, so its (refused) outcome has been sent by now
        assert app.stop(timeout=5) is True
    stored = app.get(job.id)
    assert stored.state is S.CANCELLED
    assert stored.completed_at is None
    assert stored.cancelled_at == cancelled.cancelled_at
    assert stored.errors == cancelled.errors
    assert stored.attempt == 1
    assert app.drain() == {}  # and it is not run again


# -- stop's grace period ------------------------------------------------------------------


def test_stop_returns_false_when_a_sync_job_outlives_the_grace_period(
    app: kathikon.Kathikon,
) -> None:
    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    @app.worker
    def stuck(job: kathikon.Job) -> None:
        started.set()
        release.wait(10)
        finished.set()

    job = stuck.insert({})
    app.start()
    try:
        assert started.wait(5)
        t0 = time.monotonic()
        assert app.stop(timeout=0.2) is False
        elapsed = time.monotonic() - t0
        assert 0.2 <= elapsed < 2
        assert not finished.is_set()
        # Handed back as interrupted by shutdown: due again, the attempt not counted.
        stored = app.get(job.id)
        assert stored.state in (S.SCHEDULED, S.AVAILABLE)
        assert stored.max_attempts - stored.attempt == job.max_attempts
        assert stored.errors[-1]["error"].startswith("interrupted by shutdown")
    finally:
        release.set()
        assert finished.wait(5)


def test_stop_returns_false_when_an_async_job_outlives_the_grace_period(
    app: kathikon.Kathikon,
) -> None:
    started = threading.Event()

    @app.worker
    async def sleepy(job: kathikon.Job) -> None:
        started.set()
        await asyncio.sleep(30)

    job = sleepy.insert({})
    app.start()
    assert started.wait(5)
    t0 = time.monotonic()
    assert app.stop(timeout=0.2) is False
    assert time.monotonic() - t0 < 5
    stored = app.get(job.id)
    assert stored.state in (S.SCHEDULED, S.AVAILABLE)
    assert stored.errors[-1]["error"].startswith("interrupted by shutdown")


def test_stop_waits_for_jobs_that_finish_within_the_grace_period(
    app: kathikon.Kathikon,
) -> None:
    started = threading.Event()

    @app.worker
    def short(job: kathikon.Job) -> None:
        started.set()
        time.sleep(0.3)

    job = short.insert({})
    app.start()
    assert started.wait(5)
    assert app.stop(timeout=5) is True
    assert app.get(job.id).state is S.COMPLETED


# -- running some queues ------------------------------------------------------------------


def test_start_runs_only_the_selected_queues(app: kathikon.Kathikon, wait_until: WaitUntil) -> None:
    @app.worker(name="sel.default")
    def on_default(job: kathikon.Job) -> None:
        pass

    @app.worker(name="sel.emails", queue="emails")
    def on_emails(job: kathikon.Job) -> None:
        pass

    a, b = on_default.insert({}), on_emails.insert({})
    app.start(queues=["default"])
    try:
        wait_until(lambda: app.get(a.id).state is S.COMPLETED, what="the default job")
        time.sleep(0.3)  # a poll interval and more: the emails queue is not run
        assert app.get(b.id).state is S.AVAILABLE
    finally:
        assert app.stop(timeout=5)
    app.start(queues={"emails": 1})
    try:
        wait_until(lambda: app.get(b.id).state is S.COMPLETED, what="the emails job")
    finally:
        assert app.stop(timeout=5)


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        (["nope"], "queue 'nope' is not configured in this app; configured queues: default"),
        ([], "selects no queue"),
        ({"emails": 0}, "queue 'emails' has concurrency 0"),
    ],
)
def test_start_refuses_a_bad_queue_selection(
    app: kathikon.Kathikon, queues: Any, message: str
) -> None:
    with pytest.raises(kathikon.ConfigurationError, match=re.escape(message)):
        app.start(queues=queues)
    app.start()  # nothing was left running
    assert app.stop(timeout=5)


def test_async_jobs_on_a_queue_of_concurrency_one_all_run(store_path: Path) -> None:
    """A lane that claimed several async jobs must start them before waiting for a slot
    (regression: it used to hold them while waiting on a slot only they could free)."""
    app = kathikon.Kathikon(store_path, queues={"default": 1}, poll_interval=0.2)
    done: list[int] = []
    try:

        @app.worker
        async def quick(job: kathikon.Job) -> None:
            done.append(job.args["i"])

        app.insert_all([quick.new({"i": i}) for i in range(300)])
        app.start()
        deadline = time.monotonic() + 20
        while app.stats()["default"]["completed"] < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.stats()["default"]["completed"] == 300
        assert sorted(done) == list(range(300))
    finally:
        app.close(timeout=5)


@pytest.mark.parametrize(
    ("kind", "most_allowed"),
    # Sync: one job per lane, none waiting. Async: two running and, per lane, one more
    # claimed and handed to the loop, waiting for a slot.
    [("sync", 2), ("async", 4)],
)
def test_slow_jobs_are_not_claimed_ahead(store_path: Path, kind: str, most_allowed: int) -> None:
    """Lanes claim ahead only while jobs finish fast (sync ones by the pace the lane measures,
    async ones by the loop's pace and the jobs' run time): jobs of 30 ms are taken one at a
    time, so no job sits executing-but-waiting behind another for long."""
    app = kathikon.Kathikon(store_path, queues={"default": 2}, poll_interval=0.2)
    try:
        if kind == "sync":

            @app.worker(name="slow")
            def slow_sync(job: kathikon.Job) -> None:
                time.sleep(0.03)

        else:

            @app.worker(name="slow")
            async def slow_async(job: kathikon.Job) -> None:
                await asyncio.sleep(0.03)

        app.insert_all([app.new("slow") for _ in range(20)])
        app.start()
        most_executing = 0
        deadline = time.monotonic() + 20
        while app.stats()["default"]["completed"] < 20 and time.monotonic() < deadline:
            most_executing = max(most_executing, app.stats()["default"]["executing"])
            time.sleep(0.002)
        assert app.stats()["default"]["completed"] == 20
        assert 1 <= most_executing <= most_allowed
    finally:
        app.close(timeout=5)


def test_a_slot_freed_by_a_sync_job_starts_an_async_job_waiting_for_one(
    make_app: MakeApp, wait_until: WaitUntil
) -> None:
    """Concurrency 2: a sync job (0.3 s) and a long async job hold both slots while a short
    async job waits on the loop. The sync job's lane frees its slot at 0.3 s, and the short
    job must start then, not when the long one ends at 1.5 s."""
    app = make_app(queues={"default": 2})
    started: dict[str, float] = {}

    @app.worker
    def sync_first(job: kathikon.Job) -> None:
        started["sync"] = time.monotonic()
        time.sleep(0.3)

    @app.worker
    async def long_async(job: kathikon.Job) -> None:
        started["long"] = time.monotonic()
        await asyncio.sleep(1.5)

    @app.worker
    async def short_async(job: kathikon.Job) -> None:
        started["short"] = time.monotonic()

    app.start()
    try:
        # Lanes claim one job at a time until jobs prove quick: one lane takes the sync job,
        # the other the long async job and then the short one, which waits for a slot.
        _, long_job, _ = app.insert_all([sync_first.new(), long_async.new(), short_async.new()])
        wait_until(lambda: app.stats()["default"]["completed"] == 2, timeout=10)
        assert set(started) == {"sync", "long", "short"}
        assert started["short"] - started["sync"] < 1.0
        assert app.get(long_job).state is S.EXECUTING  # still running
    finally:
        assert app.stop(timeout=5)


def test_stop_releases_lanes_whose_async_jobs_wait_for_a_slot(app: kathikon.Kathikon) -> None:
    """Concurrency 1: the lane hands a second async job to the loop and waits for it to
    start, which it cannot while the first runs. Past the grace period both are handed back
    as interrupted by shutdown and the lane thread ends."""
    started = threading.Event()

    @app.worker
    async def sleepy(job: kathikon.Job) -> None:
        started.set()
        await asyncio.sleep(30)

    first, second = sleepy.insert({}), sleepy.insert({})
    app.start(queues={"default": 1})
    assert started.wait(5)
    deadline = time.monotonic() + 5
    while app.get(second.id).state is not S.EXECUTING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app.stop(timeout=0.2) is False
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
        t.name.startswith("kathikon-default-") for t in threading.enumerate()
    ):
        time.sleep(0.01)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("kathikon-default-")]
    for job in (first, second):
        stored = app.get(job.id)
        assert stored.state in (S.SCHEDULED, S.AVAILABLE)
        assert stored.errors[-1]["error"].startswith("interrupted by shutdown")


def test_stop_leaves_no_claimed_async_job_executing(
    make_app: MakeApp, wait_until: WaitUntil
) -> None:
    """Stopping part way through many short async jobs: every job a lane claimed and handed
    to the loop still runs, none is left executing."""
    app = make_app(queues={"default": 1})

    @app.worker
    async def brief(job: kathikon.Job) -> None:
        await asyncio.sleep(0.001)

    app.insert_all([brief.new() for _ in range(5_000)])
    app.start()
    try:
        wait_until(lambda: app.stats()["default"]["completed"] >= 300, timeout=20)
    finally:
        assert app.stop(timeout=10)
    counts = app.stats()["default"]
    assert counts["executing"] == 0
    assert counts["completed"] + counts["available"] == 5_000
    assert counts["available"] > 0  # it did stop part way
