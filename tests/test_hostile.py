"""Hostile input and misbehaving callbacks: every case ends in a typed error or a faithful
round trip, and every job in a defined state, with the worker still running.

Args: huge, deeply nested, non-JSON types, NaN and infinities, non-string keys, text that is
not UTF-8 (lone surrogates), checked one by one and as a hypothesis property. Callbacks: ones
that raise BaseException subclasses, return odd values, block past their timeout (even
ignoring the cancellation), call back into the app from inside a job, or break a telemetry
handler — in ``drain`` and in the background runner, sync and async.
"""

from __future__ import annotations

import asyncio
import decimal
import gc
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kathikon
from kathikon import telemetry

S = kathikon.JobState
WaitUntil = Callable[..., None]
# The "slow" hypothesis profile (500 examples) can outlast pytest's default timeout.
pytestmark = pytest.mark.timeout(3600 if os.environ.get("KATHIKON_HYPOTHESIS") == "slow" else 120)


def open_app(path: Path, **options: Any) -> kathikon.Kathikon:
    options.setdefault("poll_interval", 0.05)
    options.setdefault("scheduler_interval", 0.05)
    return kathikon.Kathikon(path, queues={"default": 2, "other": 1}, **options)


@pytest.fixture
def hostile_app(store_path: Path) -> Iterator[kathikon.Kathikon]:
    app = open_app(store_path)
    try:
        yield app
    finally:
        app.close(timeout=5)


@pytest.fixture(autouse=True)
def no_leftover_handlers() -> Iterator[None]:
    yield
    for handler_id in list(telemetry.list_handlers()):
        if handler_id.startswith("hostile-"):
            telemetry.detach(handler_id)


def survive(call: Callable[[], Any]) -> Any:
    """``call()``; a BaseException escaping it (which would otherwise end the whole pytest
    run, for KeyboardInterrupt) fails this test instead."""
    try:
        return call()
    except BaseException as exc:  # noqa: B036 - the point is to catch everything
        pytest.fail(f"{type(exc).__name__}({exc}) escaped from the app", pytrace=False)


def ids_and_states(app: kathikon.Kathikon) -> list[tuple[int, str]]:
    return [(j.id, j.state.value) for j in app.jobs(limit=10_000)]


# == args ==================================================================================


def test_args_beyond_max_args_bytes_are_refused(store_path: Path) -> None:
    app = kathikon.Kathikon(store_path, max_args_bytes=1024)
    try:

        @app.worker(name="hostile.sized")
        def sized(job: kathikon.Job) -> None:
            pass

        fits = {"x": "a" * 1000}
        assert len(json.dumps(fits)) <= 1024
        sized.insert(fits)
        before = ids_and_states(app)
        too_big = {"x": "a" * 1100}
        with pytest.raises(kathikon.InvalidJobError) as err:
            sized.insert(too_big)
        assert "1,024" in str(err.value) and "max_args_bytes" in str(err.value)
        with pytest.raises(kathikon.InvalidJobError):
            app.insert_all([sized.new({"ok": 1}), sized.new(too_big)])
        assert ids_and_states(app) == before
    finally:
        app.close()


def test_huge_args_round_trip_through_store_worker_and_reopen(store_path: Path) -> None:
    """With no size limit, huge args must at least come back exactly as given."""
    big_text = "αβγ-" * (4 << 20)  # 16 Mi characters, 28 MiB of UTF-8
    many_keys = {f"k{i}": i for i in range(100_000)}
    long_list = list(range(200_000))
    seen: list[dict[str, Any]] = []
    app = open_app(store_path)
    try:

        @app.worker(name="hostile.big")
        def big(job: kathikon.Job) -> None:
            seen.append(job.args)

        a = big.insert({"text": big_text})
        b = big.insert({"keys": many_keys, "list": long_list})
        assert app.drain() == {"completed": 2}
        assert seen == [{"text": big_text}, {"keys": many_keys, "list": long_list}]
    finally:
        app.close()
    app = open_app(store_path)
    try:
        assert app.get(a.id).args == {"text": big_text}
        assert app.get(b.id).args == {"keys": many_keys, "list": long_list}
    finally:
        app.close()


def nested(depth: int, leaf: Any, kind: str) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"n": value} if kind == "dict" else [value]
    return value


@pytest.mark.parametrize("kind", ["dict", "list"])
def test_deep_nesting_up_to_the_limit_round_trips(store_path: Path, kind: str) -> None:
    from kathikon.options import MAX_DEPTH

    seen: list[Any] = []
    app = open_app(store_path)
    try:

        @app.worker(name="hostile.deep")
        def deep(job: kathikon.Job) -> None:
            seen.append(job.args)

        args = {"v": nested(MAX_DEPTH - 1, "leaf", kind)}
        job = deep.insert(args)
        assert app.drain() == {"completed": 1}
        assert seen == [args]
        assert app.get(job.id).args == args
    finally:
        app.close()


@pytest.mark.parametrize("depth", [201, 5_000, 200_000])
@pytest.mark.parametrize("kind", ["dict", "list"])
def test_deeper_nesting_is_a_typed_error_not_a_recursion_error(
    hostile_app: kathikon.Kathikon, depth: int, kind: str
) -> None:
    @hostile_app.worker(name="hostile.deep")
    def deep(job: kathikon.Job) -> None:
        pass

    deep.insert({"existing": 1})
    before = ids_and_states(hostile_app)
    for where in ("args", "meta"):
        value = {"v": nested(depth, 0, kind)}
        with pytest.raises(kathikon.InvalidJobError, match="nested more than 200 levels"):
            if where == "args":
                deep.insert(value)
            else:
                deep.insert({}, meta=value)
    assert ids_and_states(hostile_app) == before


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


NON_JSON: list[tuple[str, Any]] = [
    ("set", {1}),
    ("frozenset", frozenset({"a"})),
    ("bytes", b"\xff\x00"),
    ("bytearray", bytearray(b"x")),
    ("complex", 1j),
    ("decimal", decimal.Decimal("1.1")),
    ("datetime", datetime(2030, 1, 1, tzinfo=timezone.utc)),
    ("object", Opaque()),
    ("type", int),
    ("function", len),
    ("generator", (i for i in range(3))),
    ("range", range(3)),
    ("nan", math.nan),
    ("-inf", -math.inf),
    ("nan-in-list", [1.0, math.nan]),
    ("surrogate", "\ud800"),
    ("surrogate-in-list", ["ok", "x\udfffy"]),
    ("surrogate-key", {"\udc80": 1}),
    ("int-key", {1: "x"}),
    ("none-key", {None: "x"}),
    ("float-key", {1.5: "x"}),
    ("bool-key", {True: "x"}),
    ("tuple-key", {(1, 2): "x"}),
    ("frozenset-key", {frozenset(): "x"}),
]


@pytest.mark.parametrize("where", ["args", "meta"])
@pytest.mark.parametrize(("name", "value"), NON_JSON, ids=[n for n, _ in NON_JSON])
def test_non_json_values_are_typed_errors_and_store_nothing(
    hostile_app: kathikon.Kathikon, name: str, value: Any, where: str
) -> None:
    @hostile_app.worker(name="hostile.values")
    def values(job: kathikon.Job) -> None:
        pass

    values.insert({"existing": 1})
    before = ids_and_states(hostile_app)
    bad = {"deep": {"er": value}}

    def spec() -> kathikon.JobSpec:
        return values.new(bad) if where == "args" else values.new({}, meta=bad)

    for insert in (
        lambda: values.insert(bad) if where == "args" else values.insert({}, meta=bad),
        lambda: hostile_app.insert_all([values.new({"ok": 1}), spec()]),
    ):
        with pytest.raises(kathikon.InvalidJobError) as err:
            insert()
        assert f"{where}['deep']['er']" in str(err.value), str(err.value)
    assert ids_and_states(hostile_app) == before


@pytest.mark.parametrize("value", [BadRepr(), {BadRepr()}, {"k": BadRepr()}])
def test_a_value_whose_repr_raises_is_still_a_typed_error(
    hostile_app: kathikon.Kathikon, value: Any
) -> None:
    @hostile_app.worker(name="hostile.repr")
    def repr_(job: kathikon.Job) -> None:
        pass

    with pytest.raises((kathikon.InvalidJobError, RuntimeError)) as err:
        repr_.insert({"v": value})
    # The message could not name the value (its repr raises); the job must still be refused.
    assert isinstance(err.value, (kathikon.InvalidJobError, RuntimeError))
    assert hostile_app.jobs() == []


def test_text_that_is_not_utf8_in_tags_and_names_is_a_typed_error(
    hostile_app: kathikon.Kathikon, store_path: Path
) -> None:
    @hostile_app.worker(name="hostile.text")
    def text(job: kathikon.Job) -> None:
        pass

    with pytest.raises(kathikon.InvalidJobError, match="tag"):
        text.insert({}, tags=["ok", "\ud83d"])
    with pytest.raises(kathikon.ConfigurationError, match="worker"):
        hostile_app.worker(name="bad\udcffname")(lambda job: None)
    with pytest.raises(kathikon.ConfigurationError, match="queue name"):
        kathikon.Kathikon(None, queues={"q\ud800": 1})
    assert hostile_app.jobs() == []


def test_edge_values_round_trip_exactly(hostile_app: kathikon.Kathikon) -> None:
    seen: list[dict[str, Any]] = []

    @hostile_app.worker(name="hostile.edges")
    def edges(job: kathikon.Job) -> None:
        seen.append(job.args)

    args = {
        "big": 2**200,
        "neg_big": -(2**64) - 1,
        "neg_zero": -0.0,
        "tiny": 5e-324,
        "max": 1.7976931348623157e308,
        "nul": "a\x00b",
        "key\x00with nul": True,
        "": "empty key",
        "emoji 🦀": "\U0010ffff",
        "rtl": "\u202eabc",
        "escapes": '"\\/\b\f\n\r\t',
        "nested": [[], {}, [[{}]], None, False],
    }
    job = edges.insert(args, meta=args)
    assert hostile_app.drain() == {"completed": 1}
    stored = hostile_app.get(job.id)
    for got in (seen[0], stored.args, stored.meta):
        assert got == args
        assert math.copysign(1.0, got["neg_zero"]) == -1.0
        assert type(got["big"]) is int


def test_tuples_are_accepted_and_come_back_as_lists(hostile_app: kathikon.Kathikon) -> None:
    """The documented behaviour (docs/guides/workers.md): args and meta are JSON, so a tuple
    is stored as a JSON array and comes back as a list, at any depth, as ``json.dumps`` and
    ``json.loads`` would have it. Issue 4 found this undocumented; it is now the contract."""
    seen: list[Any] = []

    @hostile_app.worker(name="hostile.tuple")
    def tuple_(job: kathikon.Job) -> None:
        seen.append(job.args)

    args = {"pair": (1, 2), "nested": [(3, (4, "x")), {"t": ()}], "empty": ()}
    as_lists = {"pair": [1, 2], "nested": [[3, [4, "x"]], {"t": []}], "empty": []}
    job = tuple_.insert(args, meta={"at": (5, 6)})
    assert job.args == as_lists
    assert hostile_app.drain() == {"completed": 1}
    stored = hostile_app.get(job.id)
    for got in (seen[0], stored.args):
        assert got == as_lists
        assert type(got["pair"]) is list
        assert type(got["nested"][0][1]) is list
    assert stored.meta == {"at": [5, 6]}
    assert json.loads(json.dumps(args)) == stored.args  # exactly what a JSON round trip gives


# -- the same, as a property ----------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(),  # NaN and infinities included
    st.text(st.characters(codec=None)),  # lone surrogates included
    st.binary(max_size=4),
    st.decimals(allow_nan=False, places=2),
    st.builds(Opaque),
)
keys = st.one_of(
    st.text(st.characters(codec=None), max_size=8),
    st.integers(),
    st.none(),
    st.booleans(),
    st.floats(),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
        st.frozensets(st.integers(), max_size=2),
    ),
    max_leaves=20,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(args=st.dictionaries(keys, values, max_size=5))
def test_any_args_are_a_typed_error_or_a_faithful_round_trip(
    memory_app: kathikon.Kathikon, args: dict[Any, Any]
) -> None:
    if "hostile.any" not in memory_app.workers:
        memory_app.worker(name="hostile.any")(lambda job: None)
    before = len(memory_app.jobs(limit=10_000))
    try:
        job = memory_app.insert("hostile.any", args)
    except kathikon.InvalidJobError as exc:
        assert str(exc)
        assert len(memory_app.jobs(limit=10_000)) == before, "a refused insert stored a job"
        return
    assert memory_app.get(job.id).args == args


# == callbacks that misbehave =============================================================


class Abort(BaseException):
    """A BaseException of the user's own."""


BASE_EXCEPTIONS = [
    KeyboardInterrupt("stop the world"),
    SystemExit(3),
    GeneratorExit(),
    Abort("not an Exception"),
    asyncio.CancelledError("raised by the job itself"),
]
FLAVOURS = ["sync", "async", "async-timeout"]


def register_raiser(app: kathikon.Kathikon, exc: BaseException, flavour: str) -> str:
    name = f"hostile.raise.{flavour}"

    def raiser(job: kathikon.Job) -> None:
        raise exc

    async def araiser(job: kathikon.Job) -> None:
        await asyncio.sleep(0)
        raise exc

    if flavour == "sync":
        app.worker(name=name, max_attempts=2, backoff=lambda job: 0)(raiser)
    else:
        timeout = 30 if flavour == "async-timeout" else None
        app.worker(name=name, max_attempts=2, backoff=lambda job: 0, timeout=timeout)(araiser)
    return name


def ok_worker(app: kathikon.Kathikon) -> list[int]:
    done: list[int] = []

    @app.worker(name="hostile.ok")
    def ok(job: kathikon.Job) -> None:
        done.append(job.id)

    return done


def check_failed_with(job: kathikon.Job, exc: BaseException, state: S, attempts: int) -> None:
    assert job.state is state, job
    assert job.attempt == attempts
    assert len(job.errors) == attempts
    assert all(type(exc).__name__ in e["error"] for e in job.errors), job.errors


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("exc", BASE_EXCEPTIONS, ids=lambda e: type(e).__name__)
def test_base_exceptions_in_drain_fail_the_attempt(
    hostile_app: kathikon.Kathikon, exc: BaseException, flavour: str
) -> None:
    name = register_raiser(hostile_app, exc, flavour)
    done = ok_worker(hostile_app)
    bad = hostile_app.insert(name, {})
    good = hostile_app.insert("hostile.ok", {})
    # drain returns normally; backoff 0 retries at once, then attempts are used up
    assert survive(hostile_app.drain) == {"retryable": 1, "discarded": 1, "completed": 1}
    check_failed_with(hostile_app.get(bad.id), exc, S.DISCARDED, 2)
    assert done == [good.id]
    assert hostile_app.drain() == {}


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("exc", BASE_EXCEPTIONS, ids=lambda e: type(e).__name__)
def test_base_exceptions_in_the_runner_fail_the_attempt_and_the_worker_stays_up(
    hostile_app: kathikon.Kathikon, wait_until: WaitUntil, exc: BaseException, flavour: str
) -> None:
    name = register_raiser(hostile_app, exc, flavour)
    done = ok_worker(hostile_app)
    hostile_app.start()
    bad = [hostile_app.insert(name, {}) for _ in range(3)]
    wait_until(
        lambda: all(hostile_app.get(j.id).state is S.DISCARDED for j in bad),
        what="the raising jobs to use up their attempts",
    )
    # Every lane and the loop still work: new jobs run.
    good = [hostile_app.insert("hostile.ok", {}) for _ in range(6)]
    wait_until(lambda: sorted(done) == [j.id for j in good], what="later jobs to run")
    assert hostile_app.stop(timeout=5)
    for j in bad:
        check_failed_with(hostile_app.get(j.id), exc, S.DISCARDED, 2)


class Weird:
    """Explodes on every protocol a careless caller might use."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __bool__(self) -> bool:
        raise RuntimeError("bool")

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __str__(self) -> str:
        raise RuntimeError("str")


ODD_RETURNS: list[tuple[str, Callable[[], Any]]] = [
    ("int", lambda: 42),
    ("false", lambda: False),
    ("exception-instance", lambda: ValueError("returned, not raised")),
    ("cancel-class", lambda: kathikon.Cancel),
    ("snooze-class", lambda: kathikon.Snooze),
    ("weird", Weird),
    ("generator", lambda: (i for i in range(3))),
    ("huge-list", lambda: list(range(1_000_000))),
    ("job", lambda: None),  # replaced by the job itself below
]


@pytest.mark.parametrize(("name", "make"), ODD_RETURNS, ids=[n for n, _ in ODD_RETURNS])
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_odd_return_values_complete_the_job(
    hostile_app: kathikon.Kathikon, name: str, make: Callable[[], Any], flavour: str
) -> None:
    def odd(job: kathikon.Job) -> Any:
        return job if name == "job" else make()

    async def aodd(job: kathikon.Job) -> Any:
        return odd(job)

    hostile_app.worker(name="hostile.odd")(odd if flavour == "sync" else aodd)
    job = hostile_app.insert("hostile.odd", {})
    assert hostile_app.drain() == {"completed": 1}
    assert hostile_app.get(job.id).state is S.COMPLETED


def test_a_sync_worker_returning_a_coroutine_is_failed_not_completed_unrun(
    hostile_app: kathikon.Kathikon, wait_until: WaitUntil
) -> None:
    """A lambda (or a decorator without functools.wraps) around an ``async def`` registers as
    sync; the coroutine it returns never runs. Completing the job would lose it silently."""
    ran: list[int] = []

    async def body(job: kathikon.Job) -> None:
        ran.append(job.id)

    hostile_app.worker(name="hostile.lambda", max_attempts=3)(lambda job: body(job))
    job = hostile_app.insert("hostile.lambda", {})
    assert hostile_app.drain() == {"retryable": 1}
    gc.collect()  # a coroutine that was not closed would warn here (warnings are errors)
    stored = hostile_app.get(job.id)
    assert stored.state is S.RETRYABLE
    assert "returned coroutine" in stored.errors[0]["error"]
    assert "async def" in stored.errors[0]["error"]
    assert ran == []
    # The same in the background runner.
    hostile_app.retry(job.id)
    hostile_app.start()
    wait_until(lambda: hostile_app.get(job.id).attempt == 2, what="the second attempt")
    wait_until(lambda: hostile_app.get(job.id).state is not S.EXECUTING, what="its outcome")
    assert hostile_app.get(job.id).state is S.RETRYABLE
    assert ran == []


def test_async_job_blocking_past_its_timeout_fails_and_others_run_meanwhile(
    hostile_app: kathikon.Kathikon, wait_until: WaitUntil
) -> None:
    done = ok_worker(hostile_app)

    @hostile_app.worker(name="hostile.forever", timeout=0.2, max_attempts=1)
    async def forever(job: kathikon.Job) -> None:
        await asyncio.Event().wait()

    hostile_app.start()
    blocked = [hostile_app.insert("hostile.forever", {}) for _ in range(2)]
    good = [hostile_app.insert("hostile.ok", {}) for _ in range(4)]
    wait_until(lambda: sorted(done) == [j.id for j in good], what="the other jobs")
    wait_until(
        lambda: all(hostile_app.get(j.id).state is S.DISCARDED for j in blocked),
        what="the timeouts",
    )
    for j in blocked:
        assert "timed out after 0.2 s" in hostile_app.get(j.id).errors[0]["error"]
    assert hostile_app.stop(timeout=5)


def test_async_job_ignoring_its_cancellation_is_handed_back_at_shutdown(
    store_path: Path, wait_until: WaitUntil
) -> None:
    """The worst case: the job swallows the CancelledError its timeout delivers and keeps
    waiting. Python cannot stop it; the queue's other slot keeps working, stop() reports the
    job unfinished and hands it back as interrupted (a defined state, with the reason)."""
    app = open_app(store_path)
    release = threading.Event()
    try:
        done = ok_worker(app)

        @app.worker(name="hostile.stubborn", timeout=0.1)
        async def stubborn(job: kathikon.Job) -> None:
            while not release.is_set():
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    continue  # swallowed: the timeout never wins

        app.start()
        job = app.insert("hostile.stubborn", {})
        wait_until(lambda: app.get(job.id).state is S.EXECUTING, what="the job to start")
        time.sleep(0.3)  # well past its timeout
        assert app.get(job.id).state is S.EXECUTING
        good = [app.insert("hostile.ok", {}) for _ in range(3)]
        wait_until(lambda: sorted(done) == [j.id for j in good], what="the other slot")
        assert app.stop(timeout=0.5) is False
    finally:
        app.close(timeout=0.5)
        release.set()
    app = open_app(store_path)
    try:
        rescued = app.get(job.id)
        assert rescued.state in (S.SCHEDULED, S.AVAILABLE)
        assert rescued.errors[-1]["error"].startswith("interrupted by shutdown:")
    finally:
        app.close()


# -- re-entrant calls -----------------------------------------------------------------------


def reentrant_workers(app: kathikon.Kathikon, log: list[tuple[str, Any]]) -> None:
    """Workers that call back into the app from inside their job."""

    @app.worker(name="hostile.child")
    def child(job: kathikon.Job) -> None:
        log.append(("child ran", job.args["parent"]))

    def body(job: kathikon.Job) -> None:
        me = app.get(job.id)
        log.append(("self", (me.state.value, me.attempt)))
        spawned = app.insert("hostile.child", {"parent": job.id})
        log.append(("spawned", spawned.state.value))
        try:
            app.retry(job.id)
        except kathikon.JobStateError:
            log.append(("retry", "refused"))
        log.append(("stats", app.stats()["default"]["executing"] >= 1))
        if job.args.get("cancel_self"):
            log.append(("cancel", app.cancel(job.id).state.value))

    @app.worker(name="hostile.reenter")
    def reenter(job: kathikon.Job) -> None:
        body(job)

    @app.worker(name="hostile.areenter")
    async def areenter(job: kathikon.Job) -> None:
        body(job)
        await asyncio.sleep(0.01)  # a self-cancel lands here


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("cancel_self", [False, True])
def test_jobs_calling_back_into_the_app_in_drain(
    hostile_app: kathikon.Kathikon, flavour: str, cancel_self: bool
) -> None:
    log: list[tuple[str, Any]] = []
    reentrant_workers(hostile_app, log)
    worker = "hostile.reenter" if flavour == "sync" else "hostile.areenter"
    job = hostile_app.insert(worker, {"cancel_self": cancel_self})
    counts = hostile_app.drain()
    # the job's own outcome, then the child it inserted, which the same drain runs
    if cancel_self:
        assert counts == {"ignored": 1, "completed": 1}, counts
        assert hostile_app.get(job.id).state is S.CANCELLED
    else:
        assert counts == {"completed": 2}, counts
        assert hostile_app.get(job.id).state is S.COMPLETED
    assert ("self", ("executing", 1)) in log
    assert ("spawned", "available") in log
    assert ("retry", "refused") in log
    assert ("stats", True) in log
    assert ("child ran", job.id) in log
    assert all(j.state.finished for j in hostile_app.jobs())


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("cancel_self", [False, True])
def test_jobs_calling_back_into_the_app_in_the_runner(
    hostile_app: kathikon.Kathikon, wait_until: WaitUntil, flavour: str, cancel_self: bool
) -> None:
    log: list[tuple[str, Any]] = []
    reentrant_workers(hostile_app, log)
    worker = "hostile.reenter" if flavour == "sync" else "hostile.areenter"
    hostile_app.start()
    job = hostile_app.insert(worker, {"cancel_self": cancel_self})
    wait_until(lambda: ("child ran", job.id) in log, what="the child job")
    want = S.CANCELLED if cancel_self else S.COMPLETED
    wait_until(lambda: hostile_app.get(job.id).state is want, what=f"the job to be {want}")
    assert hostile_app.stop(timeout=5)
    assert ("retry", "refused") in log
    assert all(j.state.finished for j in hostile_app.jobs())


def test_a_job_draining_the_queue_it_runs_in(hostile_app: kathikon.Kathikon) -> None:
    """drain() from inside a job being drained: the nested drain runs the rest, the outer
    one finds nothing left, nothing runs twice and nothing deadlocks."""
    ran: list[int] = []
    nested_counts: list[dict[str, int]] = []

    @hostile_app.worker(name="hostile.plain")
    def plain(job: kathikon.Job) -> None:
        ran.append(job.id)

    @hostile_app.worker(name="hostile.drainer")
    def drainer(job: kathikon.Job) -> None:
        ran.append(job.id)
        plain.insert({})
        nested_counts.append(hostile_app.drain())

    outer = drainer.insert({})
    counts = hostile_app.drain()
    assert sorted(ran) == sorted(set(ran)), "a job ran twice"
    assert nested_counts == [{"completed": 1}]
    assert counts == {"completed": 1}
    assert hostile_app.get(outer.id).state is S.COMPLETED
    assert all(j.state is S.COMPLETED for j in hostile_app.jobs())


# -- telemetry handlers that raise ----------------------------------------------------------

RAISED_IN_HANDLERS: list[BaseException] = [
    RuntimeError("handler bug"),
    KeyboardInterrupt("from a handler"),
    SystemExit(2),
]
HANDLER_EVENTS = [
    ("kathikon", "job", "insert"),
    ("kathikon", "job", "start"),
    ("kathikon", "job", "stop"),
    ("kathikon", "job", "retry"),
    ("kathikon", "dispatcher", "poll"),
]


def attach_raiser(event: tuple[str, ...], exc: BaseException) -> list[int]:
    calls: list[int] = []

    def handler(e: Any, measurements: Any, metadata: Any) -> None:
        calls.append(1)
        raise exc

    telemetry.attach("hostile-raiser", [event], handler)
    return calls


def flaky_worker(app: kathikon.Kathikon) -> None:
    @app.worker(name="hostile.flaky", backoff=lambda job: 0, max_attempts=3)
    def flaky(job: kathikon.Job) -> None:
        if job.attempt == 1:
            raise ValueError("first attempt fails")


@pytest.mark.parametrize("event", HANDLER_EVENTS[:-1], ids=lambda e: e[-1])  # drain: no poll
@pytest.mark.parametrize("exc", RAISED_IN_HANDLERS, ids=lambda e: type(e).__name__)
def test_raising_telemetry_handler_in_drain(
    hostile_app: kathikon.Kathikon,
    caplog: pytest.LogCaptureFixture,
    event: tuple[str, ...],
    exc: BaseException,
) -> None:
    flaky_worker(hostile_app)
    calls = attach_raiser(event, exc)
    with caplog.at_level(logging.ERROR, logger="kathikon.telemetry"):
        jobs = [survive(lambda: hostile_app.insert("hostile.flaky", {})) for _ in range(3)]
        counts = survive(hostile_app.drain)
    assert counts == {"retryable": 3, "completed": 3}
    assert all(hostile_app.get(j.id).state is S.COMPLETED for j in jobs)
    assert calls == [1], "the handler ran once, then was detached"
    assert "hostile-raiser" in caplog.text
    assert "hostile-raiser" not in telemetry.list_handlers()


@pytest.mark.parametrize("event", HANDLER_EVENTS, ids=lambda e: e[-1])
@pytest.mark.parametrize("exc", RAISED_IN_HANDLERS, ids=lambda e: type(e).__name__)
def test_raising_telemetry_handler_in_the_runner(
    hostile_app: kathikon.Kathikon,
    wait_until: WaitUntil,
    caplog: pytest.LogCaptureFixture,
    event: tuple[str, ...],
    exc: BaseException,
) -> None:
    flaky_worker(hostile_app)
    calls = attach_raiser(event, exc)
    with caplog.at_level(logging.ERROR, logger="kathikon.telemetry"):
        hostile_app.start()
        jobs = [survive(lambda: hostile_app.insert("hostile.flaky", {})) for _ in range(6)]
        wait_until(
            lambda: all(hostile_app.get(j.id).state is S.COMPLETED for j in jobs),
            what="every job to complete despite the handler",
        )
        assert hostile_app.stop(timeout=5)
    assert calls  # it ran (more than once only if lanes raced it before it was detached)
    assert "hostile-raiser" not in telemetry.list_handlers()
