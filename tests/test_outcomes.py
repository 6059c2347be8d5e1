"""What each way a job can end does to it: return, raise, Cancel, Discard, Snooze; backoff;
unregistered workers; timeouts; and the user's cancel and retry."""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

import kathikon

WaitUntil = Callable[..., None]
S = kathikon.JobState


def fields(job: kathikon.Job) -> dict[str, Any]:
    """Every public field, for "unchanged" comparisons."""
    names = (
        "id state queue worker args meta tags attempt max_attempts priority errors inserted_at "
        "scheduled_at attempted_at completed_at cancelled_at discarded_at"
    ).split()
    return {name: getattr(job, name) for name in names}


def now() -> datetime:
    return datetime.now(timezone.utc)


# -- return and raise ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, 42, "done", {"x": 1}])
def test_return_completes(app: kathikon.Kathikon, value: Any) -> None:
    seen: list[kathikon.Job] = []

    @app.worker
    def ok(job: kathikon.Job) -> Any:
        seen.append(job)
        return value

    job = ok.insert({"n": 1})
    assert app.drain() == {"completed": 1}
    done = app.get(job.id)
    assert done.state is S.COMPLETED
    assert done.attempt == 1
    assert done.errors == []
    assert done.completed_at is not None and done.attempted_at is not None
    assert job.inserted_at <= done.attempted_at <= done.completed_at
    assert done.discarded_at is None and done.cancelled_at is None
    # the worker saw the job as claimed: executing, attempt counted before it ran
    assert len(seen) == 1
    assert seen[0].id == job.id
    assert seen[0].args == {"n": 1}
    assert seen[0].state is S.EXECUTING
    assert seen[0].attempt == 1
    assert app.drain() == {}  # nothing left


def deep_helper(n: int) -> None:
    raise ValueError(f"bad thing {n}")


def test_exception_makes_the_job_retryable_with_the_traceback(app: kathikon.Kathikon) -> None:
    @app.worker(max_attempts=5)
    def flaky(job: kathikon.Job) -> None:
        deep_helper(job.args["n"])

    job = flaky.insert({"n": 7})
    before = now()
    assert app.drain() == {"retryable": 1}
    failed = app.get(job.id)
    assert failed.state is S.RETRYABLE
    assert failed.attempt == 1
    assert failed.max_attempts == 5
    assert failed.completed_at is None and failed.discarded_at is None
    (entry,) = failed.errors
    assert entry["attempt"] == 1
    assert entry["at"] >= before - timedelta(seconds=5)
    assert entry["at"].utcoffset() == timedelta(0)
    text = entry["error"]
    assert text.startswith("Traceback (most recent call last):")
    assert "in flaky" in text
    assert "in deep_helper" in text
    assert text.rstrip().endswith("ValueError: bad thing 7")
    # default backoff after attempt 1: 15 s + 2 s, ±10 % jitter
    delay = (failed.scheduled_at - entry["at"]).total_seconds()
    assert 15.3 <= delay <= 18.7
    # not due yet: a drain does not run it again
    assert app.drain() == {}


def test_async_exception_is_kept_too(app: kathikon.Kathikon) -> None:
    @app.worker
    async def fetch(job: kathikon.Job) -> None:
        await asyncio.sleep(0)
        raise ConnectionError("host unreachable")

    job = fetch.insert({})
    assert app.drain() == {"retryable": 1}
    failed = app.get(job.id)
    assert failed.state is S.RETRYABLE
    assert "ConnectionError: host unreachable" in failed.errors[0]["error"]
    assert "in fetch" in failed.errors[0]["error"]


def test_discarded_when_attempts_are_used_up(app: kathikon.Kathikon) -> None:
    attempts: list[int] = []

    @app.worker(max_attempts=3, backoff=lambda job: 0)
    def always_fails(job: kathikon.Job) -> None:
        attempts.append(job.attempt)
        raise RuntimeError(f"failure {job.attempt}")

    job = always_fails.insert({})
    assert app.drain() == {"retryable": 2, "discarded": 1}
    assert attempts == [1, 2, 3]
    dead = app.get(job.id)
    assert dead.state is S.DISCARDED
    assert dead.attempt == 3 == dead.max_attempts
    assert dead.discarded_at is not None
    assert dead.completed_at is None
    assert [e["attempt"] for e in dead.errors] == [1, 2, 3]
    assert [e["error"].rstrip().splitlines()[-1] for e in dead.errors] == [
        "RuntimeError: failure 1",
        "RuntimeError: failure 2",
        "RuntimeError: failure 3",
    ]
    assert app.drain() == {}


def test_max_attempts_one_discards_at_the_first_failure(app: kathikon.Kathikon) -> None:
    @app.worker
    def once(job: kathikon.Job) -> None:
        raise KeyError("missing")

    job = once.insert({}, max_attempts=1)
    assert app.drain() == {"discarded": 1}
    dead = app.get(job.id)
    assert dead.state is S.DISCARDED
    assert "KeyError: 'missing'" in dead.errors[0]["error"]


def test_retry_then_success(app: kathikon.Kathikon) -> None:
    @app.worker(backoff=lambda job: 0)
    def second_time_lucky(job: kathikon.Job) -> None:
        if job.attempt == 1:
            raise RuntimeError("first try fails")

    job = second_time_lucky.insert({})
    assert app.drain() == {"retryable": 1, "completed": 1}
    done = app.get(job.id)
    assert done.state is S.COMPLETED
    assert done.attempt == 2
    assert len(done.errors) == 1 and done.errors[0]["attempt"] == 1


# -- explicit outcomes --------------------------------------------------------------------


@pytest.fixture(params=["returned", "raised"])
def deliver(request: pytest.FixtureRequest) -> Callable[[kathikon.JobOutcome], None]:
    """How the worker hands back its outcome: return it or raise it (from a nested call)."""
    mode: str = request.param

    def give(outcome: kathikon.JobOutcome) -> Any:
        if mode == "raised":

            def inner() -> None:
                raise outcome

            inner()
        return outcome

    return give


def test_cancel_outcome(app: kathikon.Kathikon, deliver: Callable[..., Any]) -> None:
    @app.worker
    def w(job: kathikon.Job) -> Any:
        return deliver(kathikon.Cancel("customer closed the account"))

    job = w.insert({})
    assert app.drain() == {"cancelled": 1}
    done = app.get(job.id)
    assert done.state is S.CANCELLED
    assert done.cancelled_at is not None
    assert done.completed_at is None and done.discarded_at is None
    assert [(e["attempt"], e["error"]) for e in done.errors] == [(1, "customer closed the account")]


def test_discard_outcome(app: kathikon.Kathikon, deliver: Callable[..., Any]) -> None:
    @app.worker(max_attempts=10)
    def w(job: kathikon.Job) -> Any:
        return deliver(kathikon.Discard("payload is garbage"))

    job = w.insert({})
    assert app.drain() == {"discarded": 1}
    done = app.get(job.id)
    assert done.state is S.DISCARDED
    assert done.attempt == 1  # discarded with attempts left
    assert done.discarded_at is not None
    assert [(e["attempt"], e["error"]) for e in done.errors] == [(1, "payload is garbage")]


@pytest.mark.parametrize("seconds", [60, timedelta(minutes=1), 60.0])
def test_snooze_outcome(
    app: kathikon.Kathikon, deliver: Callable[..., Any], seconds: float | timedelta
) -> None:
    @app.worker(max_attempts=3)
    def w(job: kathikon.Job) -> Any:
        return deliver(kathikon.Snooze(seconds))

    job = w.insert({})
    assert app.drain() == {"scheduled": 1}
    later = app.get(job.id)
    assert later.state is S.SCHEDULED
    assert later.attempt == 1
    assert later.max_attempts == 4  # the attempt is given back
    assert later.errors == []
    assert later.attempted_at is not None
    ahead = (later.scheduled_at - later.attempted_at).total_seconds()
    assert 60 <= ahead < 62
    assert app.drain() == {}  # not due yet


def test_snooze_does_not_consume_attempts(app: kathikon.Kathikon) -> None:
    seen: list[tuple[int, int]] = []

    @app.worker(max_attempts=1)
    def patient(job: kathikon.Job) -> Any:
        seen.append((job.attempt, job.max_attempts))
        if len(seen) <= 3:
            raise kathikon.Snooze(0)
        return None

    job = patient.insert({})
    assert app.drain() == {"scheduled": 3, "completed": 1}
    # attempts never decrease and never run out: max_attempts grows with each snooze
    assert seen == [(1, 1), (2, 2), (3, 3), (4, 4)]
    done = app.get(job.id)
    assert done.state is S.COMPLETED
    assert (done.attempt, done.max_attempts) == (4, 4)
    assert done.errors == []


def test_snooze_then_failure_still_has_its_attempts(app: kathikon.Kathikon) -> None:
    """Snoozes in between do not eat into the attempts a failing job gets."""
    runs: list[int] = []

    @app.worker(max_attempts=2, backoff=lambda job: 0)
    def w(job: kathikon.Job) -> Any:
        runs.append(job.attempt)
        if len(runs) % 2 == 1:
            return kathikon.Snooze(0)
        raise RuntimeError("nope")

    job = w.insert({})
    counts = app.drain()
    assert counts == {"scheduled": 2, "retryable": 1, "discarded": 1}
    dead = app.get(job.id)
    assert dead.state is S.DISCARDED
    assert len(dead.errors) == 2  # two real failures, the snoozes are not errors


def test_snooze_rejects_bad_values() -> None:
    for bad in (-1, "5", None, float("nan")):
        with pytest.raises(ValueError):
            kathikon.Snooze(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("huge", [3e11, 1e15, float("inf"), 2**63, timedelta.max])
def test_a_snooze_past_what_a_datetime_holds_is_refused_naming_it(
    app: kathikon.Kathikon, huge: object
) -> None:
    """A job snoozing beyond 100 years fails with a ValueError naming the value (its own bug),
    and the job's times stay readable."""

    @app.worker(name=f"snoozes-{id(huge)}", max_attempts=2)
    def snoozes(job: kathikon.Job) -> object:
        return kathikon.Snooze(huge)  # type: ignore[arg-type]

    job = snoozes.insert({})
    assert app.drain() == {"retryable": 1}
    stored = app.get(job.id)
    assert stored.state is S.RETRYABLE
    assert "Snooze(" in stored.errors[-1]["error"] and "100 years" in stored.errors[-1]["error"]
    assert stored.scheduled_at is not None and stored.scheduled_at.year < 9999


# -- backoff ------------------------------------------------------------------------------


def test_decorator_backoff_sets_scheduled_at(app: kathikon.Kathikon) -> None:
    seen: list[tuple[int, int]] = []

    def backoff(job: kathikon.Job) -> float:
        seen.append((job.id, job.attempt))
        return 120.5

    @app.worker(backoff=backoff)
    def w(job: kathikon.Job) -> None:
        raise RuntimeError("again")

    job = w.insert({})
    assert app.drain() == {"retryable": 1}
    failed = app.get(job.id)
    assert seen == [(job.id, 1)]
    assert failed.scheduled_at - failed.errors[-1]["at"] == timedelta(seconds=120.5)


def test_worker_class_backoff_sets_scheduled_at(app: kathikon.Kathikon) -> None:
    class Linear(kathikon.Worker):
        max_attempts = 5

        def perform(self, job: kathikon.Job) -> None:
            raise RuntimeError("again")

        def backoff(self, job: kathikon.Job) -> Optional[float]:
            return 100.0 * job.attempt

    app.register(Linear)
    job = app.insert(Linear, {})
    assert app.drain() == {"retryable": 1}
    first = app.get(job.id)
    assert first.scheduled_at - first.errors[-1]["at"] == timedelta(seconds=100)
    # run it again now: attempt 2 backs off 200 s
    app.retry(job.id)
    assert app.drain() == {"retryable": 1}
    second = app.get(job.id)
    assert second.attempt == 2
    assert second.scheduled_at - second.errors[-1]["at"] == timedelta(seconds=200)


def test_backoff_returning_none_uses_the_default(app: kathikon.Kathikon) -> None:
    @app.worker(backoff=lambda job: None)
    def w(job: kathikon.Job) -> None:
        raise RuntimeError("again")

    job = w.insert({})
    app.drain()
    failed = app.get(job.id)
    assert 15.3 <= (failed.scheduled_at - failed.errors[-1]["at"]).total_seconds() <= 18.7


# -- unregistered worker in the running app -----------------------------------------------


def open_app(path: Path, with_worker: bool, calls: Optional[list[int]] = None) -> kathikon.Kathikon:
    app = kathikon.Kathikon(path, queues={"default": 2}, poll_interval=0.1)
    if with_worker:

        @app.worker(name="jobs.vanishing")
        def vanishing(job: kathikon.Job) -> None:
            if calls is not None:
                calls.append(job.attempt)

    return app


def check_unregistered_failure(job: kathikon.Job) -> None:
    assert job.state is S.RETRYABLE
    assert job.attempt == 1
    (entry,) = job.errors
    assert "'jobs.vanishing'" in entry["error"]
    assert "not registered" in entry["error"]
    assert job.scheduled_at > entry["at"]


def test_unregistered_worker_is_retried_not_dropped_by_drain(store_path: Path) -> None:
    a = open_app(store_path, with_worker=True)
    job = a.insert("jobs.vanishing", {"keep": "me"})
    a.close()

    b = open_app(store_path, with_worker=False)
    try:
        assert b.drain() == {"retryable": 1}
        check_unregistered_failure(b.get(job.id))
        assert [j.id for j in b.jobs()] == [job.id]
    finally:
        b.close()

    calls: list[int] = []
    c = open_app(store_path, with_worker=True, calls=calls)
    try:
        assert c.retry(job.id).state is S.AVAILABLE
        assert c.drain() == {"completed": 1}
        assert calls == [2]
        done = c.get(job.id)
        assert done.state is S.COMPLETED
        assert done.args == {"keep": "me"}
    finally:
        c.close()


def test_unregistered_worker_is_retried_by_the_runner(
    store_path: Path, wait_until: WaitUntil
) -> None:
    a = open_app(store_path, with_worker=True)
    job = a.insert("jobs.vanishing", {})
    a.close()

    b = open_app(store_path, with_worker=False)
    try:
        b.start()
        wait_until(lambda: b.get(job.id).state is S.RETRYABLE, what="the job to be retryable")
        assert b.stop(timeout=5)
        check_unregistered_failure(b.get(job.id))
    finally:
        b.close()


# -- async timeouts and class workers -----------------------------------------------------


def test_async_timeout_fails_the_attempt(app: kathikon.Kathikon) -> None:
    finished = threading.Event()

    @app.worker(timeout=0.1, max_attempts=2)
    async def slow(job: kathikon.Job) -> None:
        await asyncio.sleep(10)
        finished.set()

    job = slow.insert({})
    assert app.drain() == {"retryable": 1}
    failed = app.get(job.id)
    assert failed.state is S.RETRYABLE
    assert "timed out" in failed.errors[0]["error"]
    assert "0.1" in failed.errors[0]["error"]
    assert not finished.is_set()


def test_async_within_timeout_completes(app: kathikon.Kathikon) -> None:
    @app.worker(timeout=5)
    async def quick(job: kathikon.Job) -> str:
        await asyncio.sleep(0.01)
        return "ok"

    quick.insert({})
    assert app.drain() == {"completed": 1}


def test_async_timeout_discards_on_the_last_attempt(app: kathikon.Kathikon) -> None:
    @app.worker(timeout=0.05, max_attempts=1)
    async def slow(job: kathikon.Job) -> None:
        await asyncio.sleep(10)

    job = slow.insert({})
    assert app.drain() == {"discarded": 1}
    assert "timed out" in app.get(job.id).errors[0]["error"]


def test_class_worker_sync_and_async(app: kathikon.Kathikon) -> None:
    got: list[tuple[str, Any]] = []

    class SyncReport(kathikon.Worker):
        def perform(self, job: kathikon.Job) -> None:
            got.append(("sync", job.args["day"]))

    class AsyncReport(kathikon.Worker):
        queue = "emails"

        async def perform(self, job: kathikon.Job) -> None:
            await asyncio.sleep(0)
            got.append(("async", job.args["day"]))

    class FailingReport(kathikon.Worker):
        async def perform(self, job: kathikon.Job) -> None:
            raise kathikon.Discard("no data for that day")

    for cls in (SyncReport, AsyncReport, FailingReport):
        assert app.register(cls) is cls
    a = app.insert(SyncReport, {"day": 1})
    b = app.insert(AsyncReport, {"day": 2})
    c = app.insert(FailingReport, {"day": 3})
    assert b.queue == "emails"
    assert app.drain() == {"completed": 2, "discarded": 1}
    assert sorted(got) == [("async", 2), ("sync", 1)]
    assert app.get(a.id).state is S.COMPLETED
    assert app.get(b.id).state is S.COMPLETED
    assert app.get(c.id).errors[0]["error"] == "no data for that day"


def test_class_worker_async_timeout(app: kathikon.Kathikon) -> None:
    class Slow(kathikon.Worker):
        timeout = 0.1

        async def perform(self, job: kathikon.Job) -> None:
            await asyncio.sleep(10)

    app.register(Slow)
    job = app.insert(Slow, {})
    assert app.drain() == {"retryable": 1}
    assert "timed out" in app.get(job.id).errors[0]["error"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_wrapped_async_worker_is_not_completed_without_running(app: kathikon.Kathikon) -> None:
    """An `async def` behind an ordinary (sync) decorator returns a coroutine. Kathikon must
    either run it or fail the job; marking the job completed while its body never ran loses
    the work silently."""
    ran: list[int] = []

    def traced(fn: Callable[[kathikon.Job], Any]) -> Callable[[kathikon.Job], Any]:
        @functools.wraps(fn)
        def wrapper(job: kathikon.Job) -> Any:
            return fn(job)

        return wrapper

    @app.worker
    @traced
    async def wrapped(job: kathikon.Job) -> None:
        ran.append(job.id)

    job = wrapped.insert({})
    app.drain()
    gc.collect()  # let an un-awaited coroutine be reported here, not in a later test
    stored = app.get(job.id)
    assert ran == [job.id] or stored.state is not S.COMPLETED, (
        "the job is marked completed but its coroutine never ran"
    )


def test_registered_worker_instance(app: kathikon.Kathikon) -> None:
    class Counter(kathikon.Worker):
        def __init__(self, start: int) -> None:
            self.count = start

        def perform(self, job: kathikon.Job) -> None:
            self.count += 1

    counter = Counter(10)
    app.register(counter)
    app.insert(Counter, {})
    app.insert(counter, {})
    assert app.drain() == {"completed": 2}
    assert counter.count == 12


# -- cancel -------------------------------------------------------------------------------


@pytest.fixture
def counted(app: kathikon.Kathikon) -> Iterator[tuple[kathikon.WorkerFunction, list[int]]]:
    calls: list[int] = []

    @app.worker(max_attempts=3)
    def w(job: kathikon.Job) -> None:
        calls.append(job.id)
        if job.args.get("fail"):
            raise RuntimeError("fails")

    yield w, calls


def make_in_state(app: kathikon.Kathikon, w: kathikon.WorkerFunction, state: str) -> kathikon.Job:
    if state == "scheduled":
        job = w.insert({}, schedule_in=600)
    elif state == "available":
        job = w.insert({})
    elif state == "retryable":
        job = w.insert({"fail": True})
        assert app.drain() == {"retryable": 1}
    elif state == "completed":
        job = w.insert({})
        assert app.drain() == {"completed": 1}
    elif state == "discarded":
        job = w.insert({"fail": True}, max_attempts=1)
        assert app.drain() == {"discarded": 1}
    elif state == "cancelled":
        job = w.insert({})
        app.cancel(job.id)
    else:  # pragma: no cover
        raise AssertionError(state)
    stored = app.get(job.id)
    assert stored.state.value == state
    return stored


@pytest.mark.parametrize("state", ["scheduled", "available", "retryable"])
def test_cancel_pending_job(
    app: kathikon.Kathikon,
    counted: tuple[kathikon.WorkerFunction, list[int]],
    state: str,
) -> None:
    w, calls = counted
    job = make_in_state(app, w, state)
    calls.clear()
    errors_before = len(job.errors)
    cancelled = app.cancel(job.id)
    assert cancelled.state is S.CANCELLED
    assert cancelled.cancelled_at is not None
    assert len(cancelled.errors) == errors_before + 1
    assert "cancel" in cancelled.errors[-1]["error"]
    assert fields(app.get(job.id)) == fields(cancelled)
    # it never runs: not now, and not when its time would have come
    assert app.drain() == {}
    assert calls == []
    assert app.jobs(state="cancelled") == [cancelled]


def test_cancel_accepts_a_job_object(
    app: kathikon.Kathikon, counted: tuple[kathikon.WorkerFunction, list[int]]
) -> None:
    w, _ = counted
    job = w.insert({})
    assert app.cancel(job).state is S.CANCELLED


@pytest.mark.parametrize("state", ["completed", "discarded", "cancelled"])
def test_cancel_finished_job_returns_it_unchanged(
    app: kathikon.Kathikon,
    counted: tuple[kathikon.WorkerFunction, list[int]],
    state: str,
) -> None:
    w, _ = counted
    job = make_in_state(app, w, state)
    returned = app.cancel(job.id)
    assert fields(returned) == fields(job)
    assert fields(app.get(job.id)) == fields(job)


# -- retry --------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["completed", "discarded", "cancelled", "retryable", "scheduled"])
def test_retry_makes_the_job_available_and_it_runs_again(
    app: kathikon.Kathikon,
    counted: tuple[kathikon.WorkerFunction, list[int]],
    state: str,
) -> None:
    w, calls = counted
    job = make_in_state(app, w, state)
    calls.clear()
    before = now()
    again = app.retry(job.id)
    assert again.state is S.AVAILABLE
    assert again.completed_at is None
    assert again.discarded_at is None
    assert again.cancelled_at is None
    assert again.scheduled_at <= now() + timedelta(seconds=1)
    assert again.scheduled_at >= before - timedelta(seconds=5)
    assert again.attempt == job.attempt  # history is kept
    assert again.errors == job.errors
    assert again.max_attempts >= again.attempt + 1  # at least one more attempt allowed
    assert fields(app.get(job.id)) == fields(again)

    app.drain()
    assert calls == [job.id]
    after = app.get(job.id)
    assert after.attempt == job.attempt + 1
    expected = S.COMPLETED if not job.args.get("fail") else S.RETRYABLE
    if job.args.get("fail") and after.attempt >= after.max_attempts:
        expected = S.DISCARDED
    assert after.state is expected


def test_retry_of_a_discarded_job_allows_one_more_attempt(
    app: kathikon.Kathikon, counted: tuple[kathikon.WorkerFunction, list[int]]
) -> None:
    w, _ = counted
    job = make_in_state(app, w, "discarded")
    assert (job.attempt, job.max_attempts) == (1, 1)
    again = app.retry(job.id)
    assert (again.attempt, again.max_attempts) == (1, 2)


def test_retry_of_an_executing_job_is_refused(
    app: kathikon.Kathikon, wait_until: WaitUntil
) -> None:
    started = threading.Event()
    release = threading.Event()

    @app.worker
    def blocking(job: kathikon.Job) -> None:
        started.set()
        assert release.wait(10), "the test never released the job"

    job = blocking.insert({})
    app.start()
    try:
        assert started.wait(5)
        wait_until(lambda: app.get(job.id).state is S.EXECUTING)
        before = fields(app.get(job.id))
        with pytest.raises(kathikon.JobStateError) as info:
            app.retry(job.id)
        assert str(job.id) in str(info.value)
        assert "executing" in str(info.value)
        assert fields(app.get(job.id)) == before
    finally:
        release.set()
        assert app.stop(timeout=5)
    done = app.get(job.id)
    assert done.state is S.COMPLETED
    assert done.attempt == 1


def test_retry_of_an_available_job_changes_nothing(
    app: kathikon.Kathikon, counted: tuple[kathikon.WorkerFunction, list[int]]
) -> None:
    w, calls = counted
    job = w.insert({})
    assert fields(app.retry(job.id)) == fields(job)
    assert app.drain() == {"completed": 1}
    assert calls == [job.id]  # queued once, run once


def test_drain_inside_a_running_event_loop_runs_async_jobs(app: kathikon.Kathikon) -> None:
    """As in Jupyter or an async test: drain must not try to re-enter the running loop, and
    must never leave jobs of the claimed batch executing."""
    import asyncio

    ran: list[str] = []

    @app.worker
    async def fetch(job: kathikon.Job) -> None:
        await asyncio.sleep(0)
        ran.append("async")

    @app.worker
    def plain(job: kathikon.Job) -> None:
        ran.append("sync")

    plain.insert()
    fetch.insert()
    plain.insert()

    async def inside_a_loop() -> dict[str, int]:
        return app.drain()

    assert asyncio.run(inside_a_loop()) == {"completed": 3}
    assert sorted(ran) == ["async", "sync", "sync"]
    assert app.stats()["default"]["executing"] == 0


def test_python_spells_the_engines_names() -> None:
    from kathikon import _native, options, vocabulary

    assert tuple(state.value for state in kathikon.JobState) == _native.JOB_STATES
    kinds = (
        vocabulary.COMPLETE,
        vocabulary.FAIL,
        vocabulary.SNOOZE,
        vocabulary.CANCEL,
        vocabulary.DISCARD,
        vocabulary.INTERRUPT,
    )
    assert kinds == _native.OUTCOME_KINDS
    assert kinds == ("complete", "fail", "snooze", "cancel", "discard", "interrupt")
    assert (vocabulary.FSYNC, vocabulary.NO_FSYNC) == _native.DURABILITIES == ("fsync", "none")
    assert options.MAX_PRIORITY == _native.MAX_PRIORITY == 9


def test_an_ack_of_an_unknown_kind_is_refused_naming_the_kinds(app: kathikon.Kathikon) -> None:
    @app.worker
    def noop(job: kathikon.Job) -> None: ...

    noop.insert()
    (job,) = app._engine.claim("default", 1, 0.0)
    with pytest.raises(ValueError, match=r'"completed".*complete, fail, snooze, cancel'):
        app._engine.ack([(job.id, job.attempt, "completed", None, None, None)])
    assert app.get(job.id).state is kathikon.JobState.EXECUTING
