"""Inserting jobs through the public API: `insert`, `new`, `insert_all` and `worker.insert`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import kathikon

# Tolerance for comparing the engine clock with this process's clock.
SLACK = timedelta(seconds=5)


def assert_aware_utc(value: datetime) -> None:
    assert isinstance(value, datetime)
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)


def snapshot(app: kathikon.Kathikon) -> list[tuple[int, str]]:
    return [(j.id, j.state.value) for j in app.jobs(limit=10_000)]


@pytest.fixture
def send(app: kathikon.Kathikon) -> kathikon.WorkerFunction:
    @app.worker(queue="emails", max_attempts=7, priority=3, tags=["mail", "x"])
    def send_email(job: kathikon.Job) -> None:
        pass

    return send_email


@pytest.fixture
def plain(app: kathikon.Kathikon) -> kathikon.WorkerFunction:
    @app.worker
    def plain_worker(job: kathikon.Job) -> None:
        pass

    return plain_worker


class Report(kathikon.Worker):
    queue = "emails"
    priority = 4
    max_attempts = 2
    tags = ("report",)

    def perform(self, job: kathikon.Job) -> None:
        pass


# -- the returned job ---------------------------------------------------------------------


def test_insert_returns_the_stored_job_with_every_field(
    app: kathikon.Kathikon, plain: kathikon.WorkerFunction
) -> None:
    before = datetime.now(timezone.utc)
    job = app.insert(
        plain,
        {"email": "a@b.c", "n": 3, "nested": {"list": [1, 2.5, None, True, "é"]}},
        tags=["t1", "t2"],
        meta={"k": 1, "trace": {"id": "abc"}},
    )
    after = datetime.now(timezone.utc)

    assert isinstance(job, kathikon.Job)
    assert isinstance(job.id, int) and job.id >= 1
    assert job.state is kathikon.JobState.AVAILABLE
    assert job.queue == "default"
    assert job.args == {"email": "a@b.c", "n": 3, "nested": {"list": [1, 2.5, None, True, "é"]}}
    assert job.meta == {"k": 1, "trace": {"id": "abc"}}
    assert job.tags == ["t1", "t2"]
    assert job.attempt == 0
    assert job.max_attempts == 20  # the app default
    assert job.priority == 0
    assert job.errors == []
    for stamp in (job.inserted_at, job.scheduled_at):
        assert_aware_utc(stamp)
        assert before - SLACK <= stamp <= after + SLACK
    assert job.scheduled_at <= job.inserted_at
    assert job.attempted_at is None
    assert job.completed_at is None
    assert job.cancelled_at is None
    assert job.discarded_at is None

    stored = app.get(job.id)
    assert stored.args == job.args
    assert stored.meta == job.meta
    assert stored.tags == job.tags
    assert stored.inserted_at == job.inserted_at
    assert stored.scheduled_at == job.scheduled_at
    assert stored.state is kathikon.JobState.AVAILABLE


def test_args_and_meta_default_to_empty_dicts(
    app: kathikon.Kathikon, plain: kathikon.WorkerFunction
) -> None:
    job = app.insert(plain)
    assert job.args == {}
    assert job.meta == {}
    assert app.get(job.id).args == {}


def test_args_round_trip_exactly(app: kathikon.Kathikon, plain: kathikon.WorkerFunction) -> None:
    args: dict[str, Any] = {
        "int": 2**62,
        "neg": -7,
        "float": 0.1,
        "big_float": 1e300,
        "bool": False,
        "none": None,
        "text": 'quotes " and \\ and \n newline and emoji 🎉',
        "empty": {},
        "list": [[], [{}], {"a": [1]}],
        "tuple": (1, 2),
    }
    job = app.insert(plain, args)
    expected = dict(args, tuple=[1, 2])  # JSON has no tuples: they come back as lists
    assert job.args == expected
    assert app.get(job.id).args == expected


def test_ids_ascend_in_insert_order(app: kathikon.Kathikon, plain: kathikon.WorkerFunction) -> None:
    ids = [plain.insert({"i": i}).id for i in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    assert [j.id for j in app.jobs()] == ids
    assert [j.args["i"] for j in app.jobs()] == list(range(5))


def test_worker_name_is_module_qualified(
    app: kathikon.Kathikon, plain: kathikon.WorkerFunction
) -> None:
    job = plain.insert({})
    assert job.worker == f"{__name__}.plain.<locals>.plain_worker"
    assert plain.name == job.worker

    app.register(Report)
    report = app.insert(Report, {})
    assert report.worker == f"{__name__}.Report"


def test_explicit_worker_name(app: kathikon.Kathikon) -> None:
    @app.worker(name="billing.charge")
    def charge(job: kathikon.Job) -> None:
        pass

    assert charge.insert({}).worker == "billing.charge"
    # a registered name works as a worker reference too
    assert app.insert("billing.charge", {"x": 1}).worker == "billing.charge"


def test_defaults_come_from_the_decorator(send: kathikon.WorkerFunction) -> None:
    job = send.insert({"email": "a@b.c"})
    assert job.queue == "emails"
    assert job.max_attempts == 7
    assert job.priority == 3
    assert job.tags == ["mail", "x"]


def test_insert_options_override_the_decorator(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction
) -> None:
    job = app.insert(send, {"email": "a@b.c"}, queue="default", priority=9, max_attempts=1, tags=[])
    assert (job.queue, job.priority, job.max_attempts, job.tags) == ("default", 9, 1, [])
    again = send.insert({"email": "a@b.c"}, priority=0, tags=["only"])
    assert (again.queue, again.priority, again.max_attempts, again.tags) == (
        "emails",
        0,
        7,
        ["only"],
    )


def test_defaults_hold_for_every_plain_insert_between_overridden_ones(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction
) -> None:
    # The checked defaults are kept after the first plain insert: later plain inserts must
    # still check their own args and get the defaults, whatever options came in between.
    first = send.insert({"n": 1})
    send.insert({"n": 2}, queue="default", priority=9, tags=["other"], meta={"m": 1})
    again = send.insert({"n": 3})
    for job, n in ((first, 1), (again, 3)):
        assert (job.queue, job.priority, job.max_attempts, job.tags, job.meta) == (
            "emails",
            3,
            7,
            ["mail", "x"],
            {},
        )
        assert job.args == {"n": n}
    with pytest.raises(kathikon.InvalidJobError, match="args must be a dict"):
        send.insert(["not", "a", "dict"])  # type: ignore[arg-type]
    assert len(app.jobs(limit=10)) == 3


def test_defaults_come_from_a_worker_class(app: kathikon.Kathikon) -> None:
    app.register(Report)
    job = app.insert(Report, {"day": "2024-01-01"})
    assert (job.queue, job.priority, job.max_attempts, job.tags) == ("emails", 4, 2, ["report"])
    assert job.args == {"day": "2024-01-01"}


def test_max_attempts_default_comes_from_the_app(tmp_path: Path) -> None:
    app = kathikon.Kathikon(tmp_path / "a.redb", queues={"default": 1}, max_attempts=5)
    try:

        @app.worker
        def w(job: kathikon.Job) -> None:
            pass

        @app.worker(max_attempts=2)
        def w2(job: kathikon.Job) -> None:
            pass

        assert w.insert({}).max_attempts == 5
        assert w2.insert({}).max_attempts == 2
        assert w.insert({}, max_attempts=9).max_attempts == 9
    finally:
        app.close()


@pytest.mark.parametrize("priority", range(10))
def test_every_priority_is_stored(
    app: kathikon.Kathikon, plain: kathikon.WorkerFunction, priority: int
) -> None:
    job = plain.insert({}, priority=priority)
    assert job.priority == priority
    assert app.get(job.id).priority == priority


# -- scheduling ---------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [60, 60.5, timedelta(seconds=90), timedelta(minutes=2)])
def test_schedule_in(
    app: kathikon.Kathikon, plain: kathikon.WorkerFunction, delay: float | timedelta
) -> None:
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    job = plain.insert({}, schedule_in=delay)
    assert job.state is kathikon.JobState.SCHEDULED
    assert_aware_utc(job.scheduled_at)
    ahead = (job.scheduled_at - job.inserted_at).total_seconds()
    assert seconds - 1 < ahead <= seconds
    assert app.jobs(state="scheduled") == [job]
    assert app.jobs(state="available") == []
    # not due: a drain runs nothing
    assert app.drain() == {}
    assert app.get(job.id).state is kathikon.JobState.SCHEDULED


def test_schedule_in_zero_or_past_is_available_now(
    app: kathikon.Kathikon, plain: kathikon.WorkerFunction
) -> None:
    assert plain.insert({}, schedule_in=0).state is kathikon.JobState.AVAILABLE
    assert plain.insert({}, schedule_in=timedelta(0)).state is kathikon.JobState.AVAILABLE
    past = plain.insert({}, schedule_in=-30)
    assert past.state is kathikon.JobState.AVAILABLE
    assert 29 < (past.inserted_at - past.scheduled_at).total_seconds() <= 31


def test_schedule_at_is_stored_exactly_in_utc(
    app: kathikon.Kathikon, plain: kathikon.WorkerFunction
) -> None:
    plus_five = timezone(timedelta(hours=5, minutes=30))
    when = (datetime.now(timezone.utc) + timedelta(hours=1)).astimezone(plus_five)
    when = when.replace(microsecond=123_456)
    job = plain.insert({}, schedule_at=when)
    assert job.state is kathikon.JobState.SCHEDULED
    assert job.scheduled_at == when
    assert_aware_utc(job.scheduled_at)
    assert job.scheduled_at.microsecond == 123_456
    assert app.get(job.id).scheduled_at == when


def test_schedule_at_in_the_past_is_available(
    app: kathikon.Kathikon, plain: kathikon.WorkerFunction
) -> None:
    when = datetime(2001, 2, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    job = plain.insert({}, schedule_at=when)
    assert job.state is kathikon.JobState.AVAILABLE
    assert job.scheduled_at == when
    assert app.drain() == {"completed": 1}


# -- new / insert_all ---------------------------------------------------------------------


def test_new_stores_nothing(app: kathikon.Kathikon, send: kathikon.WorkerFunction) -> None:
    spec = send.new({"email": "a@b.c"})
    assert isinstance(spec, kathikon.JobSpec)
    assert spec.queue == "emails"
    assert spec.worker == send.name
    spec2 = app.new(send, {"email": "x"}, queue="default")
    assert spec2.queue == "default"
    assert app.jobs() == []


def test_insert_all_stores_every_job_in_one_commit(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction, plain: kathikon.WorkerFunction
) -> None:
    emails = ["a@b.c", "d@e.f", "g@h.i"]
    specs = [send.new({"email": e}) for e in emails]
    specs.append(app.new(plain, {"n": 1}, priority=8, schedule_in=60, meta={"m": True}))
    jobs = app.insert_all(specs)

    assert [j.args for j in jobs] == [{"email": e} for e in emails] + [{"n": 1}]
    ids = [j.id for j in jobs]
    assert ids == list(range(ids[0], ids[0] + 4))
    # one transaction: one insert time for all
    assert len({j.inserted_at for j in jobs}) == 1
    assert [j.state.value for j in jobs] == ["available"] * 3 + ["scheduled"]
    assert [(j.queue, j.priority, j.max_attempts) for j in jobs[:3]] == [("emails", 3, 7)] * 3
    assert (jobs[3].queue, jobs[3].priority, jobs[3].meta) == ("default", 8, {"m": True})
    assert [j.id for j in app.jobs()] == ids


def test_insert_all_accepts_any_iterable_and_empty(
    app: kathikon.Kathikon, plain: kathikon.WorkerFunction
) -> None:
    assert app.insert_all([]) == []
    jobs = app.insert_all(plain.new({"i": i}) for i in range(3))
    assert [j.args["i"] for j in jobs] == [0, 1, 2]


def test_insert_all_with_a_non_spec_stores_nothing(
    app: kathikon.Kathikon, plain: kathikon.WorkerFunction
) -> None:
    plain.insert({"existing": True})
    before = snapshot(app)
    with pytest.raises(kathikon.InvalidJobError, match="item 1"):
        app.insert_all([plain.new({"i": 0}), {"i": 1}, plain.new({"i": 2})])  # type: ignore[list-item]
    assert snapshot(app) == before


def test_insert_all_with_a_bad_spec_built_lazily_stores_nothing(
    app: kathikon.Kathikon, plain: kathikon.WorkerFunction
) -> None:
    """A generator whose third item is invalid: the first two must not be stored."""
    before = snapshot(app)
    values: list[Any] = [1, 2, object(), 4]
    with pytest.raises(kathikon.InvalidJobError, match=r"args\['v'\]"):
        app.insert_all(plain.new({"v": v}) for v in values)
    assert snapshot(app) == before == []


def test_insert_all_engine_rejects_the_whole_batch(
    app: kathikon.Kathikon, plain: kathikon.WorkerFunction
) -> None:
    """A spec that slips past the Python checks (priority 10, forged with the private
    constructor) is refused by the core, and the valid specs of the same batch are not stored
    either."""
    good = plain.new({"ok": True})
    forged = kathikon._native.job_spec(good.queue, good.worker, "{}", "{}", [], 20, 10, None)
    before = snapshot(app)
    with pytest.raises(kathikon.InvalidJobError, match="priority 10"):
        app.insert_all([good, forged, plain.new({"ok": 2})])
    assert snapshot(app) == before
    # the app still works afterwards
    assert len(app.insert_all([good])) == 1


def test_one_spec_inserted_twice_makes_two_jobs_and_args_never_leak_between_specs(
    app: kathikon.Kathikon, plain: kathikon.WorkerFunction
) -> None:
    """``new()`` with only args reuses the spec of the worker's defaults: the same object when
    there are no args. That must not make two inserts one job, nor give one call's args to
    another's spec."""
    with_args = plain.new({"a": 1})  # the first call, which makes the cached spec
    bare = plain.new()
    assert plain.new() is bare
    jobs = app.insert_all([bare, bare, with_args, plain.new()])
    assert len({j.id for j in jobs}) == 4
    assert [j.args for j in jobs] == [{}, {}, {"a": 1}, {}]
    assert plain.new({"a": 2}).worker == with_args.worker
    assert app.insert_all([with_args])[0].args == {"a": 1}


def test_jobs_and_specs_are_not_tracked_by_the_garbage_collector(
    app: kathikon.Kathikon, plain: kathikon.WorkerFunction
) -> None:
    """What ``new()`` and ``insert_all`` make by the thousand is not on the collector's lists
    (``untracked`` in rust/kathikon-py/src/job.rs: collections walking them cost ~0.5 µs a
    job of a bulk insert)."""
    import gc

    spec = plain.new({"n": 1})
    job = app.insert_all([spec])[0]
    assert job.args == {"n": 1}  # decoded and cached: still untracked
    assert not gc.is_tracked(spec)
    assert not gc.is_tracked(job)


def test_jobs_and_specs_copy(app: kathikon.Kathikon, plain: kathikon.WorkerFunction) -> None:
    """Immutable values: a shallow copy is the object itself; a deep copy of a job has args of
    its own."""
    import copy

    spec = plain.new({"n": [1]})
    job = app.insert_all([spec])[0]
    assert copy.copy(spec) is spec and copy.deepcopy(spec) is spec
    assert copy.copy(job) is job
    deep = copy.deepcopy({"j": job})["j"]
    assert deep == job and deep is not job
    deep.args["n"].append(2)
    assert job.args == {"n": [1]}


def test_jobs_filters(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction, plain: kathikon.WorkerFunction
) -> None:
    a = send.insert({"email": "a"})
    b = plain.insert({}, schedule_in=60)
    c = plain.insert({})
    assert [j.id for j in app.jobs(queue="emails")] == [a.id]
    assert [j.id for j in app.jobs(state="scheduled")] == [b.id]
    assert [j.id for j in app.jobs(state=kathikon.JobState.AVAILABLE)] == [a.id, c.id]
    assert [j.id for j in app.jobs(worker=plain)] == [b.id, c.id]
    assert [j.id for j in app.jobs(limit=2)] == [a.id, b.id]
    assert [j.id for j in app.jobs(after=a.id)] == [b.id, c.id]


def test_memory_store(memory_app: kathikon.Kathikon) -> None:
    @memory_app.worker
    def w(job: kathikon.Job) -> None:
        pass

    job = w.insert({"x": 1})
    assert memory_app.get(job.id).args == {"x": 1}
    assert memory_app.drain() == {"completed": 1}


def test_a_misspelt_option_is_a_type_error_and_stores_nothing(
    app: kathikon.Kathikon, send: kathikon.WorkerFunction
) -> None:
    calls = [
        lambda: send.insert({}, priorty=0),
        lambda: send.new({}, sheduled_in=5),
        lambda: app.insert(send, {}, queues="emails"),
        lambda: app.new(send, {}, tag=["a"]),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            call()
    assert app.jobs() == []
