"""kathikon.testing: the pytest plugin's fixtures, the enqueued-job assertions, drain_jobs,
perform_job, the manual clock, and docs/testing.md's worked example run as written."""

from __future__ import annotations

import asyncio
import functools
import re
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Awaitable
from datetime import datetime, timedelta, timezone
from importlib.metadata import distribution
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kathikon
from kathikon.testing import (
    OUTCOMES,
    PerformResult,
    all_enqueued,
    aperform_job,
    assert_enqueued,
    drain_jobs,
    make_app,
    perform_job,
    refute_enqueued,
)

pytest_plugins = ["pytester"]

S = kathikon.JobState
DOCS = Path(__file__).resolve().parent.parent / "docs" / "testing.md"


class Report(kathikon.Worker):
    """A class worker on the default queue, with a backoff of its own."""

    max_attempts = 4

    def perform(self, job: kathikon.Job) -> Any:
        if job.args.get("fail"):
            raise RuntimeError(f"report failed on attempt {job.attempt}")
        return job.args.get("return")

    def backoff(self, job: kathikon.Job) -> Optional[float]:
        return 30.0 * job.attempt


@pytest.fixture
def kathikon_app_options() -> dict[str, Any]:
    return {"queues": {"default": 2, "emails": 1}}


@pytest.fixture
def app(kathikon_app: kathikon.Kathikon) -> kathikon.Kathikon:
    kathikon_app.register(Report)
    return kathikon_app


@pytest.fixture
def send(app: kathikon.Kathikon) -> kathikon.WorkerFunction:
    @app.worker(queue="emails", name="send")
    def send(job: kathikon.Job) -> None:
        pass

    return send


# -- the fixtures ---------------------------------------------------------------------------


def test_kathikon_app_is_in_memory_on_a_manual_clock(kathikon_app: kathikon.Kathikon) -> None:
    assert kathikon_app.path is None
    # the module's kathikon_app_options override reached the fixture
    assert kathikon_app.config.queues == {"default": 2, "emails": 1}
    start = kathikon_app.now()
    assert kathikon_app.now() == start
    kathikon_app.advance_clock(timedelta(hours=2))
    assert kathikon_app.now() == start + timedelta(hours=2)


def test_make_app_defaults_and_overrides() -> None:
    app = make_app(queues={"q": 1}, clock="system")
    try:
        assert app.path is None
        assert app.config.queues == {"q": 1}
        with pytest.raises(kathikon.ConfigurationError):
            app.advance_clock(1)  # the system clock cannot be moved
    finally:
        app.close()


def test_the_plugin_is_an_entry_point() -> None:
    eps = distribution("kathikon").entry_points
    plugins = {ep.name: ep.value for ep in eps if ep.group == "pytest11"}
    assert plugins.get("kathikon.testing") == "kathikon.testing", (
        "the pytest11 entry point is missing: reinstall kathikon (maturin develop / pip install)"
    )


PLUGIN_TESTS = """
    import pytest
    from kathikon.testing import assert_enqueued, drain_jobs

    APPS = []

    @pytest.fixture
    def kathikon_app_options():
        return {"queues": {"mail": 3}, "max_attempts": 7}

    def test_fixture(kathikon_app):
        APPS.append(kathikon_app)
        assert kathikon_app.path is None
        assert kathikon_app.config.queues == {"mail": 3}
        assert kathikon_app.config.max_attempts == 7

        @kathikon_app.worker(queue="mail")
        def hello(job):
            pass

        hello.insert({"n": 1})
        assert_enqueued(kathikon_app, worker=hello, args={"n": 1})
        before = kathikon_app.now()
        kathikon_app.advance_clock(10)
        assert (kathikon_app.now() - before).total_seconds() == 10
        assert drain_jobs(kathikon_app) == {"completed": 1}

    def test_closed_after_the_test_and_fresh_each_time(kathikon_app):
        assert APPS[0].closed
        assert kathikon_app is not APPS[0]
        assert kathikon_app.jobs(state=None) == []
"""


def test_plugin_loads_from_the_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plugin=PLUGIN_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_plugin_loads_once_when_also_named_explicitly(pytester: pytest.Pytester) -> None:
    # `-p kathikon.testing` and `pytest_plugins` next to the entry point must not clash.
    pytester.makeconftest('pytest_plugins = ["kathikon.testing"]')
    pytester.makepyfile(test_plugin=PLUGIN_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "kathikon.testing")
    result.assert_outcomes(passed=2)


def test_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plugin="def test_x(kathikon_app):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:kathikon.testing")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'kathikon_app' not found*"])


def test_helpers_import_without_pytest(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pytest"] = None  # as if pytest were not installed
        import kathikon.testing as t
        assert not hasattr(t, "kathikon_app")
        app = t.make_app()
        @app.worker
        def hi(job):
            pass
        hi.insert({"a": 1})
        t.assert_enqueued(app, worker=hi, args={"a": 1})
        assert t.drain_jobs(app) == {"completed": 1}
        assert t.perform_job(hi, {}).outcome == "completed"
        app.close()
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# -- assert_enqueued / refute_enqueued / all_enqueued ---------------------------------------


def test_assert_enqueued_matches_worker_given_any_way(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction
) -> None:
    job = send.insert({"to": "a@b.c"})
    report = app.insert(Report, {"name": "weekly"})
    assert assert_enqueued(app, worker=send) == job
    assert assert_enqueued(app, worker="send") == job
    assert assert_enqueued(app, worker=Report) == report
    assert assert_enqueued(app, worker=Report()) == report
    assert assert_enqueued(app, worker=f"{__name__}.Report") == report
    assert assert_enqueued(app) == job  # no filter: the oldest enqueued job


def test_args_match_as_a_subset(app: kathikon.Kathikon, send: kathikon.WorkerFunction) -> None:
    send.insert({"to": "a@b.c", "n": 1, "flag": True, "opts": {"x": 1, "y": [1, {"z": 2, "w": 3}]}})
    for args in (
        {},
        {"to": "a@b.c"},
        {"n": 1.0},  # JSON numbers: 1 == 1.0
        {"flag": True},
        {"opts": {"x": 1}},
        {"opts": {"y": [1, {"z": 2}]}},  # lists element by element, dicts in them as subsets
        {"to": "a@b.c", "opts": {}},
    ):
        assert_enqueued(app, worker=send, args=args)
    for args in (
        {"to": "x@y.z"},
        {"missing": None},
        {"n": True},  # True is not 1
        {"flag": 1},
        {"opts": {"y": [1]}},  # a shorter list does not match
        {"opts": {"y": [{"z": 2}, 1]}},  # nor one in another order
        {"opts": {"x": {"deeper": 1}}},
    ):
        refute_enqueued(app, worker=send, args=args)


def test_args_are_compared_as_stored(app: kathikon.Kathikon, send: kathikon.WorkerFunction) -> None:
    send.insert({"ids": (1, 2)})  # stored as a JSON list
    assert_enqueued(app, args={"ids": (1, 2)})
    assert_enqueued(app, args={"ids": [1, 2]})


@given(
    st.dictionaries(
        st.text(max_size=5),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
            max_leaves=8,
        ),
        max_size=4,
    )
)
def test_inserted_args_always_match_themselves(args: dict[str, Any]) -> None:
    app = make_app()
    try:

        @app.worker
        def w(job: kathikon.Job) -> None:
            pass

        job = w.insert(args)
        assert assert_enqueued(app, args=args) == job
        assert all_enqueued(app, args=args) == [job]
    finally:
        app.close()


def test_other_filters(app: kathikon.Kathikon, send: kathikon.WorkerFunction) -> None:
    start = app.now()
    job = send.insert(
        {"to": "a"}, priority=3, tags=["billing", "eu"], meta={"trace": {"id": "t1", "n": 2}}
    )
    later = send.insert({"to": "b"}, schedule_in=timedelta(minutes=5))
    assert assert_enqueued(app, queue="emails", priority=3) == job
    refute_enqueued(app, queue="default")
    refute_enqueued(app, priority=4)
    assert assert_enqueued(app, tags=["eu"]) == job
    assert assert_enqueued(app, tags=["eu", "billing"]) == job
    refute_enqueued(app, tags=["eu", "us"])
    assert assert_enqueued(app, meta={"trace": {"id": "t1"}}) == job
    refute_enqueued(app, meta={"trace": {"id": "t2"}})
    at = start + timedelta(minutes=5)
    assert assert_enqueued(app, scheduled_at=at, delta=0) == later
    assert assert_enqueued(app, scheduled_at=at + timedelta(seconds=1)) == later  # delta 1 s
    refute_enqueued(app, scheduled_at=at + timedelta(seconds=2))
    assert assert_enqueued(app, scheduled_at=at + timedelta(seconds=2), delta=2) == later
    assert assert_enqueued(app, scheduled_at=start, delta=timedelta(0)) == job


def test_state_filter(app: kathikon.Kathikon, send: kathikon.WorkerFunction) -> None:
    done = send.insert({"n": 1})
    app.drain()
    waiting = send.insert({"n": 2}, schedule_in=60)
    # default: scheduled or available only
    assert all_enqueued(app, worker=send) == [waiting]
    refute_enqueued(app, args={"n": 1})
    assert assert_enqueued(app, args={"n": 1}, state="completed").id == done.id
    assert assert_enqueued(app, args={"n": 1}, state=S.COMPLETED).id == done.id
    assert [j.id for j in all_enqueued(app, state=None)] == [done.id, waiting.id]
    assert [j.id for j in all_enqueued(app, state=["completed", S.SCHEDULED])] == [
        done.id,
        waiting.id,
    ]
    assert all_enqueued(app, state="available") == []


def test_all_enqueued_is_oldest_first_across_states_and_pages(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction
) -> None:
    specs = [send.new({"i": i}, schedule_in=60 if i % 2 else None) for i in range(1203)]
    jobs = app.insert_all(specs)
    found = all_enqueued(app, worker=send)
    assert [j.id for j in found] == [j.id for j in jobs]
    assert len(all_enqueued(app, args={"i": 1202})) == 1


def test_bad_filters_are_errors_not_misses(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction
) -> None:
    with pytest.raises(kathikon.InvalidJobError, match="not JSON-serialisable"):
        assert_enqueued(app, args={"when": datetime.now(timezone.utc)})
    with pytest.raises(kathikon.InvalidJobError, match="non-string key"):
        refute_enqueued(app, args={1: "x"})
    with pytest.raises(kathikon.InvalidJobError, match="'finished' is not a job state"):
        all_enqueued(app, state="finished")
    with pytest.raises(kathikon.InvalidJobError, match="matches nothing"):
        all_enqueued(app, state=[])
    with pytest.raises(kathikon.InvalidJobError, match="aware datetime"):
        all_enqueued(app, scheduled_at=datetime(2030, 1, 1))
    with pytest.raises(kathikon.InvalidJobError, match="priority"):
        all_enqueued(app, priority=12)
    with pytest.raises(kathikon.InvalidJobError, match="tags"):
        all_enqueued(app, tags="billing")
    other = make_app()
    try:

        @other.worker
        def elsewhere(job: kathikon.Job) -> None:
            pass

        with pytest.raises(kathikon.UnknownWorkerError, match="not registered with this app"):
            assert_enqueued(app, worker=elsewhere)
    finally:
        other.close()


def test_assert_enqueued_failure_lists_what_is_enqueued(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction
) -> None:
    a = send.insert({"to": "a@b.c"})
    b = app.insert(Report, {"name": "weekly"}, schedule_in=60, priority=2)
    with pytest.raises(AssertionError) as info:
        assert_enqueued(app, worker=send, args={"to": "x@y.z"}, priority=0)
    message = str(info.value)
    lines = message.splitlines()
    assert lines[0] == (
        "Expected a job matching worker='send', args={'to': 'x@y.z'}, priority=0 "
        "(state scheduled or available); none matched."
    )
    assert lines[1] == "Jobs in state scheduled or available (2):"
    assert lines[2] == (
        f"  #{a.id} send queue='emails' state=available args={{'to': 'a@b.c'}} priority=0"
    )
    assert lines[3] == (
        f"  #{b.id} {__name__}.Report queue='default' state=scheduled "
        f"args={{'name': 'weekly'}} priority=2 scheduled_at={b.scheduled_at.isoformat()}"
    )
    assert len(lines) == 4


def test_assert_enqueued_failure_when_nothing_is_enqueued(app: kathikon.Kathikon) -> None:
    with pytest.raises(AssertionError) as info:
        assert_enqueued(app, queue="emails")
    assert str(info.value) == (
        "Expected a job matching queue='emails' (state scheduled or available); none matched."
        "\nThere are no jobs in state scheduled or available."
    )
    with pytest.raises(AssertionError, match=r"^Expected a job matching any job \(any state\)"):
        assert_enqueued(app, state=None)


def test_assert_enqueued_failure_points_at_matches_in_other_states(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction
) -> None:
    done = send.insert({"to": "a@b.c"})
    app.drain()
    with pytest.raises(AssertionError) as info:
        assert_enqueued(app, worker=send, args={"to": "a@b.c"})
    assert str(info.value).splitlines()[1:] == [
        "There are no jobs in state scheduled or available.",
        "Matching jobs in other states (1; pass state=... or state=None to include them):",
        f"  #{done.id} send queue='emails' state=completed args={{'to': 'a@b.c'}}",
    ]


def test_failure_messages_list_at_most_twenty_jobs(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction
) -> None:
    app.insert_all([send.new({"i": i}) for i in range(25)])
    with pytest.raises(AssertionError) as info:
        assert_enqueued(app, args={"i": 99})
    lines = str(info.value).splitlines()
    assert lines[1] == "Jobs in state scheduled or available (25):"
    assert len(lines) == 2 + 20 + 1
    assert lines[-1] == "  … and 5 more"
    with pytest.raises(AssertionError) as info:
        refute_enqueued(app, worker=send)
    lines = str(info.value).splitlines()
    assert lines[0] == (
        "Expected no job matching worker='send' (state scheduled or available); found 25:"
    )
    assert lines[-1] == "  … and 5 more"


def test_refute_enqueued_failure_lists_the_matches(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction
) -> None:
    refute_enqueued(app, worker=send)
    job = send.insert({"to": "a@b.c", "cc": "d@e.f"})
    send.insert({"to": "other"})
    with pytest.raises(AssertionError) as info:
        refute_enqueued(app, worker=send, args={"to": "a@b.c"})
    assert str(info.value) == (
        "Expected no job matching worker='send', args={'to': 'a@b.c'} "
        "(state scheduled or available); found 1:\n"
        f"  #{job.id} send queue='emails' state=available args={{'to': 'a@b.c', 'cc': 'd@e.f'}}"
    )


HELPERS_TAKING_THE_APP: list[Callable[..., Any]] = [
    lambda first: assert_enqueued(first, args={"to": "a@b.c"}),
    lambda first: refute_enqueued(first, args={"to": "a@b.c"}),
    lambda first: all_enqueued(first, args={"to": "a@b.c"}),
    lambda first: drain_jobs(first),
    lambda first: perform_job("send", {"to": "a@b.c"}, app=first),
]


@pytest.mark.parametrize("helper", HELPERS_TAKING_THE_APP)
def test_a_worker_passed_for_the_app_is_a_type_error_naming_the_fix(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction, helper: Callable[..., Any]
) -> None:
    send.insert({"to": "a@b.c"})
    for handle in (send, Report, Report()):
        with pytest.raises(TypeError, match=r"(send|Report) is a worker, not the app; pass the "):
            helper(handle)
    with pytest.raises(TypeError, match=r"pass a kathikon.Kathikon app"):
        helper("not an app")
    assert all_enqueued(app, worker=send) != []  # nothing was run or changed


# -- drain_jobs ------------------------------------------------------------------------------


def test_drain_jobs_counts_every_outcome(app: kathikon.Kathikon) -> None:
    @app.worker(max_attempts=2, backoff=lambda job: 60)
    def outcome(job: kathikon.Job) -> Any:
        kind = job.args["kind"]
        if kind == "fail":
            raise ValueError("no")
        if kind == "cancel":
            return kathikon.Cancel("stop")
        if kind == "raise_cancel":
            raise kathikon.Cancel("stop")
        if kind == "discard":
            return kathikon.Discard("give up")
        if kind == "snooze":
            return kathikon.Snooze(60)
        if kind == "cancel_self":  # cancelled from outside while it runs: the ack is stale
            app.cancel(job.id)
        return None

    kinds = ["ok", "ok", "fail", "cancel", "raise_cancel", "discard", "snooze", "cancel_self"]
    app.insert_all([outcome.new({"kind": k}) for k in kinds])
    app.insert(outcome, {"kind": "fail"}, max_attempts=1)  # raised on its last attempt
    counts = drain_jobs(app)
    assert counts == {
        "completed": 2,
        "retryable": 1,
        "cancelled": 3,
        "discarded": 2,
        "snoozed": 1,
    }
    assert isinstance(counts, Counter)
    assert set(counts) <= set(OUTCOMES)
    assert drain_jobs(app) == {}
    assert drain_jobs(app)["completed"] == 0  # a Counter: absent outcomes read 0


def test_drain_jobs_runs_jobs_inserted_by_jobs_and_only_the_queue_asked(
    app: kathikon.Kathikon,
) -> None:
    @app.worker(queue="emails")
    def leaf(job: kathikon.Job) -> None:
        pass

    @app.worker
    def fan_out(job: kathikon.Job) -> None:
        if job.args["depth"] < 3:
            fan_out.insert({"depth": job.args["depth"] + 1})
        leaf.insert()

    fan_out.insert({"depth": 1})
    assert drain_jobs(app, "default") == {"completed": 3}
    assert len(all_enqueued(app, worker=leaf)) == 3
    assert drain_jobs(app, queue="emails") == {"completed": 3}
    with pytest.raises(kathikon.UnknownQueueError):
        drain_jobs(app, "nope")


async def _async_double(job: kathikon.Job) -> int:
    await asyncio.sleep(0)
    return int(job.args["n"]) * 2


def test_drain_jobs_runs_async_workers(app: kathikon.Kathikon) -> None:
    worker = app.worker(_async_double)
    worker.insert({"n": 2})
    assert drain_jobs(app) == {"completed": 1}


def test_drain_jobs_leaves_future_jobs_until_the_clock_moves(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction
) -> None:
    job = send.insert(schedule_in=timedelta(hours=1))
    assert drain_jobs(app) == {}
    app.advance_clock(timedelta(minutes=59))
    assert drain_jobs(app) == {}
    app.advance_clock(timedelta(minutes=1))
    assert drain_jobs(app) == {"completed": 1}
    assert app.get(job.id).completed_at == job.scheduled_at


def test_drain_jobs_with_scheduled_runs_them_now(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction
) -> None:
    start = app.now()
    soon = send.insert({"n": 1}, schedule_in=60)
    later = send.insert({"n": 2}, schedule_in=timedelta(days=30))
    other_queue = app.insert(Report, {}, schedule_in=60)
    # an aware datetime runs only what is due by then
    assert drain_jobs(app, "emails", with_scheduled=start + timedelta(minutes=1)) == {
        "completed": 1
    }
    assert app.get(soon.id).state is S.COMPLETED
    assert app.get(later.id).state is S.SCHEDULED
    assert drain_jobs(app, "emails", with_scheduled=True) == {"completed": 1}
    assert app.get(later.id).state is S.COMPLETED
    assert app.now() == start  # the clock did not move
    # promotion is store-wide: the other queue's job became available but did not run
    assert app.get(other_queue.id).state is S.AVAILABLE
    with pytest.raises(kathikon.InvalidJobError, match="with_scheduled"):
        drain_jobs(app, with_scheduled="yes")  # type: ignore[arg-type]
    with pytest.raises(kathikon.InvalidJobError, match="with_scheduled"):
        drain_jobs(app, with_scheduled=datetime(2030, 1, 1))


def test_drain_jobs_with_scheduled_retries_until_attempts_run_out(app: kathikon.Kathikon) -> None:
    job = app.insert(Report, {"fail": True}, max_attempts=3)
    assert drain_jobs(app, with_scheduled=True) == {"retryable": 2, "discarded": 1}
    done = app.get(job.id)
    assert done.state is S.DISCARDED
    assert [e["attempt"] for e in done.errors] == [1, 2, 3]


def test_drain_jobs_gives_up_on_a_job_that_snoozes_forever(app: kathikon.Kathikon) -> None:
    @app.worker
    def sleepy(job: kathikon.Job) -> kathikon.Snooze:
        return kathikon.Snooze(60)

    job = sleepy.insert()
    with pytest.raises(AssertionError) as info:
        drain_jobs(app, with_scheduled=True, max_runs=50)
    message = str(info.value)
    assert message.startswith("drain_jobs ran 51 attempts (more than max_runs=50)")
    assert f"#{job.id} {sleepy.name}" in message
    assert "snoozing forever" in message
    assert "{'snoozed': 51}" in message
    # the drain was closed properly: the app still works
    assert app.get(job.id).state is S.SCHEDULED
    assert drain_jobs(app) == {}


def test_app_drain_with_scheduled(app: kathikon.Kathikon, send: kathikon.WorkerFunction) -> None:
    send.insert(schedule_in=3600)
    assert app.drain() == {}
    assert app.drain("emails", with_scheduled=True) == {"completed": 1}


# -- perform_job -----------------------------------------------------------------------------


def test_perform_job_completes_without_storing(app: kathikon.Kathikon) -> None:
    seen: list[kathikon.Job] = []

    @app.worker(queue="emails", priority=2, tags=["t"])
    def work(job: kathikon.Job) -> int:
        seen.append(job)
        return 42

    result = perform_job(work, {"ids": (1, 2), "name": "x"}, meta={"m": 1})
    assert isinstance(result, PerformResult)
    assert result.outcome == "completed"
    assert result.value == 42
    assert result.error is None and result.reason is None
    job = seen[0]
    assert result.job is job
    assert job.args == {"ids": [1, 2], "name": "x"}  # after a JSON round trip, as stored
    assert job.meta == {"m": 1}
    assert (job.id, job.state, job.queue, job.worker) == (0, S.EXECUTING, "emails", work.name)
    assert (job.attempt, job.max_attempts, job.priority, job.tags) == (1, 20, 2, ["t"])
    assert job.inserted_at == job.scheduled_at == job.attempted_at == app.now()
    assert job.errors == []
    assert app.jobs(state=None) == []  # nothing was stored


def test_perform_job_options_override_the_workers(app: kathikon.Kathikon) -> None:
    result = perform_job(
        Report,
        {},
        app=app,
        queue="emails",
        priority=9,
        max_attempts=6,
        tags=["x"],
        attempt=5,
    )
    job = result.job
    assert (job.queue, job.priority, job.max_attempts, job.tags, job.attempt) == (
        "emails",
        9,
        6,
        ["x"],
        5,
    )


@pytest.mark.parametrize("how", ["return", "raise"])
def test_perform_job_outcomes(app: kathikon.Kathikon, how: str) -> None:
    @app.worker
    def outcome(job: kathikon.Job) -> Any:
        value: kathikon.JobOutcome = {
            "cancel": kathikon.Cancel("not needed"),
            "discard": kathikon.Discard("bad input"),
            "snooze": kathikon.Snooze(timedelta(minutes=2)),
        }[job.args["kind"]]
        if how == "raise":
            raise value
        return value

    cancelled = perform_job(outcome, {"kind": "cancel"})
    assert (cancelled.outcome, cancelled.reason) == ("cancelled", "not needed")
    discarded = perform_job(outcome, {"kind": "discard"})
    assert (discarded.outcome, discarded.reason) == ("discarded", "bad input")
    snoozed = perform_job(outcome, {"kind": "snooze"})
    assert (snoozed.outcome, snoozed.snooze, snoozed.reason) == ("snoozed", 120.0, None)
    if how == "raise":
        assert isinstance(snoozed.error, kathikon.Snooze) and snoozed.value is None
    else:
        assert isinstance(snoozed.value, kathikon.Snooze) and snoozed.error is None


def test_perform_job_reraises_by_default(app: kathikon.Kathikon) -> None:
    with pytest.raises(RuntimeError, match="report failed on attempt 1"):
        perform_job(Report, {"fail": True}, app=app)


def test_perform_job_applies_the_retry_rules_when_asked(app: kathikon.Kathikon) -> None:
    retry = perform_job(Report, {"fail": True}, app=app, attempt=2, reraise=False)
    assert retry.outcome == "retryable"
    assert retry.retry_in == 60.0  # Report.backoff: 30 s × attempt
    assert isinstance(retry.error, RuntimeError)
    assert retry.reason is not None and "RuntimeError: report failed on attempt 2" in retry.reason
    last = perform_job(Report, {"fail": True}, app=app, attempt=4, reraise=False)
    assert (last.outcome, last.retry_in) == ("discarded", None)
    assert last.reason is not None and "Traceback" in last.reason

    @app.worker
    def plain(job: kathikon.Job) -> None:
        raise KeyError("x")

    default = perform_job(plain, {}, reraise=False)
    assert (default.outcome, default.retry_in) == ("retryable", None)  # the engine's backoff


def test_perform_job_checks_what_insert_checks(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction
) -> None:
    with pytest.raises(kathikon.InvalidJobError, match=r"args\['when'\] is datetime"):
        perform_job(send, {"when": datetime.now(timezone.utc)})
    with pytest.raises(kathikon.InvalidJobError, match="args must be a dict"):
        perform_job(send, ["a"])  # type: ignore[arg-type]
    with pytest.raises(kathikon.InvalidJobError, match="meta"):
        perform_job(send, {}, meta={"x": {1, 2}})
    with pytest.raises(kathikon.UnknownQueueError, match="'nope'"):
        perform_job(send, {}, queue="nope")
    with pytest.raises(kathikon.InvalidJobError, match="priority"):
        perform_job(send, {}, priority=10)
    with pytest.raises(kathikon.InvalidJobError, match="attempt 21 is more than max_attempts 20"):
        perform_job(send, {}, attempt=21)
    with pytest.raises(kathikon.InvalidJobError, match="attempt 0"):
        perform_job(send, {}, attempt=0)

    class Unregistered(kathikon.Worker):
        def perform(self, job: kathikon.Job) -> None:
            pass

    with pytest.raises(kathikon.UnknownWorkerError, match="not registered"):
        perform_job(Unregistered, {}, app=app)
    with pytest.raises(TypeError, match="pass app="):
        perform_job("send", {})
    assert perform_job("send", {}, app=app).outcome == "completed"


def test_perform_job_on_a_worker_class_alone() -> None:
    class Alone(kathikon.Worker):
        queue = "reports"
        max_attempts = 2

        def perform(self, job: kathikon.Job) -> str:
            return f"{job.queue}:{job.args['n']}"

    result = perform_job(Alone, {"n": 1})
    assert (result.outcome, result.value, result.job.max_attempts) == ("completed", "reports:1", 2)
    assert perform_job(Alone(), {"n": 2}, queue="other").value == "other:2"
    assert perform_job(Report, {"fail": True}, reraise=False).retry_in == 30.0
    with pytest.raises(kathikon.InvalidJobError):
        perform_job(Alone, {"n": float("nan")})

    class BadPriority(kathikon.Worker):
        priority = 11

    with pytest.raises(kathikon.ConfigurationError, match="priority"):
        perform_job(BadPriority, {})


def test_perform_job_runs_async_workers(app: kathikon.Kathikon) -> None:
    double = app.worker(_async_double)
    assert perform_job(double, {"n": 21}).value == 42

    @app.worker(timeout=0.05)
    async def slow(job: kathikon.Job) -> None:
        await asyncio.sleep(5)

    with pytest.raises(TimeoutError, match="timed out after 0.05 s"):
        perform_job(slow, {})
    assert perform_job(slow, {}, reraise=False).outcome == "retryable"


def test_aperform_job_in_a_running_loop(app: kathikon.Kathikon) -> None:
    double = app.worker(_async_double)

    @app.worker
    def sync(job: kathikon.Job) -> str:
        return "sync"

    async def main() -> tuple[PerformResult, PerformResult]:
        with pytest.raises(RuntimeError, match="aperform_job"):
            perform_job(double, {"n": 1})
        return await aperform_job(double, {"n": 4}), await aperform_job(sync, {})

    async_result, sync_result = asyncio.run(main())
    assert async_result.value == 8
    assert sync_result.value == "sync"


def test_perform_job_catches_what_production_would_silently_complete(
    app: kathikon.Kathikon,
) -> None:
    def hides_async(fn: Callable[[kathikon.Job], Awaitable[Any]]) -> Callable[..., Any]:
        def wrapper(job: kathikon.Job) -> Any:  # no functools.wraps: looks sync
            return fn(job)

        return wrapper

    hidden = app.worker(hides_async(_async_double), name="hidden")
    with pytest.raises(AssertionError, match="does not await"):
        perform_job(hidden, {"n": 1})

    @app.worker
    def returns_class(job: kathikon.Job) -> Any:
        return kathikon.Snooze

    with pytest.raises(AssertionError, match=r"returned the class Snooze.*Snooze\(\.\.\.\)"):
        perform_job(returns_class, {})

    # a wrapped async worker is still async, and runs
    wrapped = app.worker(functools.wraps(_async_double)(hides_async(_async_double)), name="w")
    assert perform_job(wrapped, {"n": 1}).value == 2


# -- the clock: scheduling and backoff without sleeping --------------------------------------


def test_retry_backoff_fires_after_advancing_the_clock(app: kathikon.Kathikon) -> None:
    calls: list[int] = []

    @app.worker(backoff=lambda job: 120)
    def flaky(job: kathikon.Job) -> None:
        calls.append(job.attempt)
        if job.attempt == 1:
            raise ConnectionError("try again")

    job = flaky.insert()
    assert drain_jobs(app) == {"retryable": 1}
    retrying = assert_enqueued(
        app, worker=flaky, state="retryable", scheduled_at=app.now() + timedelta(seconds=120)
    )
    assert retrying.id == job.id
    app.advance_clock(119)
    assert drain_jobs(app) == {}
    app.advance_clock(1)
    assert drain_jobs(app) == {"completed": 1}
    assert calls == [1, 2]


def test_default_backoff_fires_after_advancing_the_clock(app: kathikon.Kathikon) -> None:
    @app.worker
    def flaky(job: kathikon.Job) -> None:
        if job.attempt == 1:
            raise ConnectionError("try again")

    job = flaky.insert()
    assert drain_jobs(app) == {"retryable": 1}
    wait = (app.get(job.id).scheduled_at - app.now()).total_seconds()
    assert 17 * 0.9 <= wait <= 17 * 1.1  # 15 s + 2^1 s, ±10 % jitter
    app.advance_clock(wait - 0.001)
    assert drain_jobs(app) == {}
    app.advance_clock(0.001)
    assert drain_jobs(app) == {"completed": 1}


def test_snooze_fires_after_advancing_the_clock(app: kathikon.Kathikon) -> None:
    @app.worker
    def later(job: kathikon.Job) -> Optional[kathikon.Snooze]:
        return kathikon.Snooze(300) if job.attempt == 1 else None

    job = later.insert()
    assert drain_jobs(app) == {"snoozed": 1}
    assert_enqueued(
        app, worker=later, state="scheduled", scheduled_at=app.now() + timedelta(minutes=5), delta=0
    )
    app.advance_clock(timedelta(minutes=5))
    assert drain_jobs(app) == {"completed": 1}
    done = app.get(job.id)
    assert (done.attempt, done.max_attempts) == (2, 21)  # the snoozed attempt was given back


# -- docs/testing.md ---------------------------------------------------------------------------


def docs_files() -> dict[str, str]:
    """The ```python title="NAME" blocks of docs/testing.md."""
    blocks = re.findall(r'```python title="([^"]+)"\n(.*?)```', DOCS.read_text(), re.S)
    return dict(blocks)


def test_docs_worked_example_passes(pytester: pytest.Pytester) -> None:
    files = docs_files()
    assert set(files) == {"shop.py", "conftest.py", "test_shop.py"}
    for name, code in files.items():
        pytester.path.joinpath(name).write_text(code)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=len(re.findall(r"^def test_", files["test_shop.py"], re.M)))


def test_docs_sample_failure_message_is_real() -> None:
    """The failure shown in docs/testing.md is what assert_enqueued says (up to dates)."""
    text = DOCS.read_text()
    shown = re.search(r"```text\n(.*?)```", text, re.S)
    assert shown
    app = make_app(queues={"default": 10, "emails": 5})
    try:
        files = docs_files()
        namespace: dict[str, Any] = {"__name__": "shop"}
        exec(compile(files["shop.py"], "shop.py", "exec"), namespace)
        namespace["register_workers"](app)
        namespace["sign_up"](app, "ann@example.com")
        with pytest.raises(AssertionError) as info:
            assert_enqueued(app, worker=namespace["SendWelcome"], args={"email": "bob@example.com"})
    finally:
        app.close()
    iso = r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00"
    assert re.sub(iso, "DATE", str(info.value)) == re.sub(iso, "DATE", shown.group(1).strip())
