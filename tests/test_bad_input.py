"""Every bad input of the issue raises a typed kathikon exception whose message names the
value, and stores nothing."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

import kathikon

# -- helpers ------------------------------------------------------------------------------


def snapshot(app: kathikon.Kathikon) -> list[tuple[int, str, int]]:
    return [(j.id, j.state.value, j.attempt) for j in app.jobs(limit=10_000)]


@pytest.fixture
def worker(app: kathikon.Kathikon) -> Iterator[kathikon.WorkerFunction]:
    """A registered worker, with one job already stored so that "stores nothing" is checked
    against a non-empty store."""

    @app.worker(queue="emails")
    def send(job: kathikon.Job) -> None:
        pass

    send.insert({"existing": True})
    yield send


InsertVia = Callable[[kathikon.Kathikon, Any, dict[str, Any]], object]


def via_insert(app: kathikon.Kathikon, w: Any, kwargs: dict[str, Any]) -> object:
    return app.insert(w, **kwargs)


def via_worker_insert(app: kathikon.Kathikon, w: Any, kwargs: dict[str, Any]) -> object:
    args = kwargs.pop("args", None)
    return w.insert(args, **kwargs)


def via_insert_all(app: kathikon.Kathikon, w: Any, kwargs: dict[str, Any]) -> object:
    # a valid job first: the batch must be refused as a whole
    return app.insert_all([app.new(w, {"ok": 1}), app.new(w, **kwargs)])


VIAS = pytest.mark.parametrize(
    "via", [via_insert, via_worker_insert, via_insert_all], ids=["insert", "worker", "all"]
)


class Unserialisable:
    def __repr__(self) -> str:
        return "<Unserialisable thing>"


NAIVE = datetime(2030, 1, 2, 3, 4, 5)
AWARE = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

BAD = kathikon.InvalidJobError
# (id, insert kwargs, exception, substrings the message must contain)
JOB_CASES: list[tuple[str, dict[str, Any], type[Exception], list[str]]] = [
    (
        "nested-object",
        {"args": {"a": {"b": Unserialisable()}}},
        BAD,
        ["args['a']['b']", "Unserialisable"],
    ),
    (
        "object-in-list",
        {"args": {"a": [1, {"b": {1, 2}}]}},
        BAD,
        ["args['a'][1]['b']", "set"],
    ),
    (
        "datetime-value",
        {"args": {"when": AWARE}},
        BAD,
        ["args['when']", "datetime"],
    ),
    ("bytes-value", {"args": {"raw": b"\x00"}}, BAD, ["args['raw']", "bytes"]),
    ("int-key", {"args": {1: "x"}}, BAD, ["1", "key"]),
    (
        "nested-tuple-key",
        {"args": {"a": {(1, 2): 3}}},
        BAD,
        ["args['a']", "(1, 2)"],
    ),
    ("nan", {"args": {"x": math.nan}}, BAD, ["args['x']", "nan"]),
    ("inf", {"args": {"x": [math.inf]}}, BAD, ["args['x'][0]", "inf"]),
    ("args-list", {"args": [1, 2]}, BAD, ["args", "list", "[1, 2]"]),
    ("args-str", {"args": "hello"}, BAD, ["args", "str", "hello"]),
    ("args-int", {"args": 5}, BAD, ["args", "int", "5"]),
    (
        "meta-object",
        {"args": {}, "meta": {"k": Unserialisable()}},
        BAD,
        ["meta['k']", "Unserialisable"],
    ),
    ("meta-list", {"args": {}, "meta": ["m"]}, BAD, ["meta", "list"]),
    ("unknown-queue", {"queue": "nope"}, kathikon.UnknownQueueError, ["'nope'"]),
    ("priority-10", {"priority": 10}, BAD, ["priority", "10"]),
    ("priority-neg", {"priority": -1}, BAD, ["priority", "-1"]),
    ("priority-huge", {"priority": 256}, BAD, ["priority", "256"]),
    ("priority-str", {"priority": "1"}, BAD, ["priority", "'1'"]),
    ("priority-float", {"priority": 1.0}, BAD, ["priority", "1.0"]),
    ("priority-bool", {"priority": True}, BAD, ["priority", "True"]),
    (
        "both-schedules",
        {"schedule_in": 30, "schedule_at": AWARE},
        BAD,
        ["schedule_in=30", "schedule_at", "2030"],
    ),
    (
        "naive-schedule-at",
        {"schedule_at": NAIVE},
        BAD,
        ["schedule_at", "2030-01-02T03:04:05", "naive"],
    ),
    (
        "schedule-at-date",
        {"schedule_at": date(2030, 1, 2)},
        BAD,
        ["schedule_at", "2030"],
    ),
    ("schedule-in-str", {"schedule_in": "10"}, BAD, ["schedule_in", "'10'"]),
    (
        "schedule-in-nan",
        {"schedule_in": math.nan},
        BAD,
        ["schedule_in", "nan"],
    ),
    (
        "schedule-in-inf",
        {"schedule_in": math.inf},
        BAD,
        ["schedule_in", "inf"],
    ),
    ("max-attempts-0", {"max_attempts": 0}, BAD, ["max_attempts", "0"]),
    ("max-attempts-neg", {"max_attempts": -3}, BAD, ["max_attempts", "-3"]),
    ("max-attempts-str", {"max_attempts": "3"}, BAD, ["max_attempts", "'3'"]),
    (
        "max-attempts-float",
        {"max_attempts": 2.5},
        BAD,
        ["max_attempts", "2.5"],
    ),
    ("tags-str", {"tags": "billing"}, BAD, ["tags", "'billing'"]),
    ("tag-int", {"tags": ["ok", 7]}, BAD, ["tag", "7"]),
]


@VIAS
@pytest.mark.parametrize(
    ("kwargs", "error", "needles"),
    [pytest.param(kw, err, needles, id=name) for name, kw, err, needles in JOB_CASES],
)
def test_bad_job_is_refused_and_nothing_stored(
    app: kathikon.Kathikon,
    worker: kathikon.WorkerFunction,
    via: InsertVia,
    kwargs: dict[str, Any],
    error: type[Exception],
    needles: list[str],
) -> None:
    before = snapshot(app)
    assert len(before) == 1
    with pytest.raises(error) as info:
        via(app, worker, dict(kwargs))
    assert isinstance(info.value, kathikon.InvalidJobError)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert snapshot(app) == before
    # the app is unharmed: a good insert still works and is the only new job
    good = worker.insert({"after": True})
    assert [j.id for j in app.jobs()] == [before[0][0], good.id]


def test_self_referencing_args(app: kathikon.Kathikon, worker: kathikon.WorkerFunction) -> None:
    before = snapshot(app)
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(kathikon.InvalidJobError, match="args"):
        worker.insert({"a": loop})
    assert snapshot(app) == before


def test_too_deeply_nested_args(app: kathikon.Kathikon, worker: kathikon.WorkerFunction) -> None:
    """Nesting deeper than JSON encoding can handle is bad input, not a RecursionError."""
    before = snapshot(app)
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(kathikon.InvalidJobError, match="args"):
        worker.insert({"deep": deep})
    assert snapshot(app) == before


# -- unregistered workers -----------------------------------------------------------------


def test_worker_of_another_app(app: kathikon.Kathikon, worker: kathikon.WorkerFunction) -> None:
    other = kathikon.Kathikon(None, queues={"default": 1, "emails": 1})
    try:

        @other.worker
        def elsewhere(job: kathikon.Job) -> None:
            pass

        before = snapshot(app)
        with pytest.raises(kathikon.UnknownWorkerError) as info:
            app.insert(elsewhere, {})
        assert elsewhere.name in str(info.value)
        assert "not registered" in str(info.value)
        with pytest.raises(kathikon.UnknownWorkerError):
            app.new(elsewhere, {})
        assert snapshot(app) == before
        assert other.jobs() == []
    finally:
        other.close()


def test_same_named_worker_of_another_app_is_still_refused(
    app: kathikon.Kathikon, worker: kathikon.WorkerFunction
) -> None:
    """A decorated function of another app is refused even when this app has a worker of the
    same name: it is a different registration."""
    other = kathikon.Kathikon(None, queues={"default": 1, "emails": 1})
    try:
        impostor = other.worker(name=worker.name, queue="emails")(lambda job: None)
        before = snapshot(app)
        with pytest.raises(kathikon.UnknownWorkerError, match="not registered"):
            app.insert(impostor, {})
        assert snapshot(app) == before
    finally:
        other.close()


def undecorated(job: kathikon.Job) -> None:
    pass


class NotRegistered(kathikon.Worker):
    def perform(self, job: kathikon.Job) -> None:
        pass


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        (undecorated, "undecorated"),
        (NotRegistered, f"{__name__}.NotRegistered"),
        (NotRegistered(), f"{__name__}.NotRegistered"),
        ("no.such.worker", "'no.such.worker'"),
        (42, "42"),
        (None, "None"),
    ],
    ids=["function", "worker-class", "worker-instance", "name", "int", "none"],
)
def test_unregistered_worker(
    app: kathikon.Kathikon, worker: kathikon.WorkerFunction, target: Any, needle: str
) -> None:
    before = snapshot(app)
    with pytest.raises(kathikon.UnknownWorkerError) as info:
        app.insert(target, {})
    assert needle in str(info.value)
    with pytest.raises(kathikon.UnknownWorkerError):
        app.new(target, {})
    with pytest.raises(kathikon.UnknownWorkerError):
        app.insert_all([app.new(worker, {}), app.new(target, {})])
    assert snapshot(app) == before


# -- unknown job ids ----------------------------------------------------------------------


@pytest.mark.parametrize("action", ["get", "cancel", "retry"])
def test_unknown_job_id(
    app: kathikon.Kathikon, worker: kathikon.WorkerFunction, action: str
) -> None:
    before = snapshot(app)
    missing = before[-1][0] + 1000
    with pytest.raises(kathikon.JobNotFoundError) as info:
        getattr(app, action)(missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, LookupError)
    assert isinstance(info.value, kathikon.KathikonError)
    assert snapshot(app) == before


@pytest.mark.parametrize("action", ["get", "cancel", "retry"])
def test_pruned_job_id_is_not_found(
    app: kathikon.Kathikon, worker: kathikon.WorkerFunction, action: str
) -> None:
    job = worker.insert({})
    app.drain()
    assert app.prune() >= 1
    with pytest.raises(kathikon.JobNotFoundError, match=str(job.id)):
        getattr(app, action)(job.id)


@pytest.mark.parametrize("action", ["get", "cancel", "retry"])
def test_job_id_beyond_the_id_range_is_a_typed_error(
    app: kathikon.Kathikon, worker: kathikon.WorkerFunction, action: str
) -> None:
    """An int no job can have (above u64) is still an unknown id: a kathikon error naming it,
    not a bare OverflowError from the native layer."""
    before = snapshot(app)
    huge = 2**64
    with pytest.raises((kathikon.JobNotFoundError, kathikon.InvalidJobError)) as info:
        getattr(app, action)(huge)
    assert str(huge) in str(info.value)
    assert snapshot(app) == before


@pytest.mark.parametrize("bad", [-1, "1", 1.0, True, None])
@pytest.mark.parametrize("action", ["get", "cancel", "retry"])
def test_malformed_job_id(
    app: kathikon.Kathikon, worker: kathikon.WorkerFunction, action: str, bad: Any
) -> None:
    before = snapshot(app)
    with pytest.raises((kathikon.InvalidJobError, kathikon.JobNotFoundError)) as info:
        getattr(app, action)(bad)
    assert repr(bad) in str(info.value)
    assert snapshot(app) == before


def test_bad_jobs_query(app: kathikon.Kathikon, worker: kathikon.WorkerFunction) -> None:
    with pytest.raises(kathikon.InvalidJobError, match="'running'"):
        app.jobs(state="running")
    with pytest.raises(kathikon.InvalidJobError, match="0"):
        app.jobs(limit=0)


def test_drain_of_unknown_queue(app: kathikon.Kathikon, worker: kathikon.WorkerFunction) -> None:
    with pytest.raises(kathikon.UnknownQueueError, match="'nope'"):
        app.drain(queue="nope")
    assert snapshot(app)[0][1] == "available"


# -- app configuration --------------------------------------------------------------------

CONFIG_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("queues-empty", {"queues": {}}, ["queues={}"]),
    ("queues-list", {"queues": ["default"]}, ["['default']"]),
    ("queue-name-empty", {"queues": {"": 1}}, ["''"]),
    ("queue-name-int", {"queues": {1: 1}}, ["queue name 1"]),
    ("queue-name-space", {"queues": {" a": 1}}, ["' a'"]),
    ("concurrency-0", {"queues": {"default": 0}}, ["'default'", "0"]),
    ("concurrency-neg", {"queues": {"default": -2}}, ["'default'", "-2"]),
    ("concurrency-str", {"queues": {"default": "2"}}, ["'default'", "'2'"]),
    ("concurrency-float", {"queues": {"default": 1.5}}, ["'default'", "1.5"]),
    ("concurrency-bool", {"queues": {"default": True}}, ["'default'", "True"]),
    ("concurrency-dict-0", {"queues": {"mail": {"concurrency": 0}}}, ["'mail'", "0"]),
    ("concurrency-dict-missing", {"queues": {"mail": {}}}, ["'mail'", "None"]),
    (
        "queue-unknown-setting",
        {"queues": {"mail": {"concurrency": 1, "rate": 5}}},
        ["'mail'", "rate"],
    ),
    ("max-attempts-0", {"max_attempts": 0}, ["max_attempts=0"]),
    ("max-attempts-str", {"max_attempts": "5"}, ["max_attempts='5'"]),
    ("durability", {"durability": "sometimes"}, ["'sometimes'"]),
    ("durability-none", {"durability": None}, ["None"]),
]
for _key in ("poll_interval", "scheduler_interval", "prune_interval", "retention_period"):
    for _value in (0, -1, math.nan, math.inf, "1", None):
        CONFIG_CASES.append((f"{_key}-{_value!r}", {_key: _value}, [f"{_key}={_value!r}"]))


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [pytest.param(kw, needles, id=name) for name, kw, needles in CONFIG_CASES],
)
def test_bad_app_configuration(
    store_path: Path, kwargs: dict[str, Any], needles: list[str]
) -> None:
    with pytest.raises(kathikon.ConfigurationError) as info:
        kathikon.Kathikon(store_path, **kwargs)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, kathikon.KathikonError)
    for needle in needles:
        assert needle in str(info.value), f"{needle!r} not in {str(info.value)!r}"
    assert not store_path.exists(), "a refused configuration must not create the store"
    # the path is not left locked either
    kathikon.Kathikon(store_path).close()


def test_good_queue_spec_forms() -> None:
    app = kathikon.Kathikon(None, queues={"a": 3, "b": {"concurrency": 5}})
    try:
        assert app.config.queues == {"a": 3, "b": 5}
    finally:
        app.close()


# -- worker configuration -----------------------------------------------------------------


def test_a_sync_workers_timeout_is_refused_where_no_worker_process_can_enforce_it(
    app: kathikon.Kathikon,
) -> None:
    @app.worker(timeout=5)
    def slow(job: kathikon.Job) -> None:
        pass

    class Slower(kathikon.Worker):
        timeout = 2.5

        def perform(self, job: kathikon.Job) -> None:
            pass

    app.register(Slower)
    with pytest.raises(kathikon.ConfigurationError) as info:
        app.start()
    message = str(info.value)
    assert slow.name in message and "Slower" in message
    assert "processes=N" in message and "async def" in message
    assert app.worker_pids == []
    app.stop()  # nothing runs: stopping is a no-op


@pytest.mark.parametrize("timeout", [0, -1, "5", True])
def test_bad_timeout_on_a_worker(app: kathikon.Kathikon, timeout: Any) -> None:
    with pytest.raises(kathikon.ConfigurationError) as info:

        @app.worker(timeout=timeout)
        async def fetch(job: kathikon.Job) -> None:
            pass

    assert f"timeout={timeout!r}" in str(info.value)
    with pytest.raises(kathikon.ConfigurationError, match=r"must be seconds above 0"):

        @app.worker(timeout=timeout)
        def work(job: kathikon.Job) -> None:
            pass

    assert app.workers == {}


@pytest.mark.parametrize("cancel", ["KILL", "terminate", 1, True, ["kill"]])
def test_a_cancel_mode_other_than_kill_is_refused_naming_it(
    app: kathikon.Kathikon, cancel: Any
) -> None:
    with pytest.raises(kathikon.ConfigurationError) as info:

        @app.worker(cancel=cancel)
        def work(job: kathikon.Job) -> None:
            pass

    message = str(info.value)
    assert f"cancel={cancel!r}" in message and 'cancel="kill"' in message, message

    class Worker(kathikon.Worker):
        def perform(self, job: kathikon.Job) -> None:
            pass

    Worker.cancel = cancel
    with pytest.raises(kathikon.ConfigurationError, match=re.escape(f"cancel={cancel!r}")):
        app.register(Worker)
    assert app.workers == {}


def test_cancel_kill_on_an_async_worker_is_refused(app: kathikon.Kathikon) -> None:
    with pytest.raises(kathikon.ConfigurationError) as info:

        @app.worker(cancel="kill")
        async def fetch(job: kathikon.Job) -> None:
            pass

    assert "async" in str(info.value) and 'drop cancel="kill"' in str(info.value)
    assert app.workers == {}


def test_start_without_worker_processes_refuses_a_sync_worker_with_cancel_kill(
    app: kathikon.Kathikon,
) -> None:
    @app.worker(cancel="kill")
    def hangs(job: kathikon.Job) -> None:
        pass

    class Hangs(kathikon.Worker):
        cancel = "kill"

        def perform(self, job: kathikon.Job) -> None:
            pass

    app.register(Hangs)
    with pytest.raises(kathikon.ConfigurationError) as info:
        app.start()
    message = str(info.value)
    assert hangs.name in message and "Hangs" in message and "processes=N" in message
    assert app.worker_pids == []
    app.insert(hangs, {})
    assert app.drain() == {"completed": 1}, "drain runs it, as with a timeout"


@pytest.mark.parametrize(
    ("options", "needles"),
    [
        ({"queue": "nope"}, ["'nope'"]),
        ({"priority": 10}, ["priority", "10"]),
        ({"priority": -1}, ["priority", "-1"]),
        ({"max_attempts": 0}, ["max_attempts", "0"]),
        ({"tags": [1]}, ["tag", "1"]),
        ({"backoff": 5}, ["backoff=5"]),
    ],
)
def test_bad_worker_settings(
    app: kathikon.Kathikon, options: dict[str, Any], needles: list[str]
) -> None:
    with pytest.raises(kathikon.ConfigurationError) as info:

        @app.worker(**options)
        def w(job: kathikon.Job) -> None:
            pass

    for needle in needles:
        assert needle in str(info.value)
    assert app.workers == {}


def test_duplicate_worker_name(app: kathikon.Kathikon) -> None:
    @app.worker(name="jobs.same")
    def first(job: kathikon.Job) -> None:
        pass

    with pytest.raises(kathikon.ConfigurationError, match="'jobs.same'"):

        @app.worker(name="jobs.same")
        def second(job: kathikon.Job) -> None:
            pass

    assert list(app.workers) == ["jobs.same"]
    # the first registration still works and is the one jobs run with
    assert app.workers["jobs.same"].perform is first.__wrapped__
    job = first.insert({})
    assert job.worker == "jobs.same"
    assert app.drain() == {"completed": 1}


def test_duplicate_worker_class(app: kathikon.Kathikon) -> None:
    app.register(NotRegistered)
    with pytest.raises(kathikon.ConfigurationError, match=f"'{__name__}.NotRegistered'"):
        app.register(NotRegistered)


def test_duplicate_between_function_and_class(app: kathikon.Kathikon) -> None:
    app.register(NotRegistered)
    with pytest.raises(kathikon.ConfigurationError, match="already registered"):
        app.worker(name=f"{__name__}.NotRegistered")(undecorated)


@pytest.mark.parametrize("target", [undecorated, object, 3])
def test_register_needs_a_worker(app: kathikon.Kathikon, target: Any) -> None:
    with pytest.raises(kathikon.ConfigurationError) as info:
        app.register(target)
    assert repr(target) in str(info.value)
    assert app.workers == {}


def test_worker_decorator_needs_a_callable(app: kathikon.Kathikon) -> None:
    with pytest.raises(kathikon.ConfigurationError, match="42"):
        app.worker()(42)  # type: ignore[arg-type]


def test_start_twice(memory_app: kathikon.Kathikon) -> None:
    memory_app.start()
    try:
        with pytest.raises(kathikon.ConfigurationError, match="already running"):
            memory_app.start()
    finally:
        assert memory_app.stop(timeout=5)


# -- stores -------------------------------------------------------------------------------


def test_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    content = b"these are my notes, not a job store\n" * 200
    path.write_bytes(content)
    with pytest.raises(kathikon.NotAStoreError) as info:
        kathikon.Kathikon(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, kathikon.StorageError)
    assert path.read_bytes() == content, "a refused file must be left untouched"


def test_closed_app(store_path: Path) -> None:
    app = kathikon.Kathikon(store_path)

    @app.worker
    def w(job: kathikon.Job) -> None:
        pass

    job = w.insert({})
    app.close()
    for call in (lambda: w.insert({}), lambda: app.get(job.id), app.drain):
        with pytest.raises(kathikon.EngineClosedError):
            call()


# -- the exception tree -------------------------------------------------------------------


def test_exception_tree() -> None:
    k = kathikon
    assert issubclass(k.InvalidJobError, ValueError)
    assert issubclass(k.ConfigurationError, ValueError)
    assert issubclass(k.JobNotFoundError, LookupError)
    assert issubclass(k.UnknownQueueError, k.InvalidJobError)
    assert issubclass(k.UnknownWorkerError, k.InvalidJobError)
    for cls in (
        k.ConfigurationError,
        k.InvalidJobError,
        k.JobNotFoundError,
        k.JobStateError,
        k.StorageError,
        k.EngineClosedError,
    ):
        assert issubclass(cls, k.KathikonError)
    for cls in (k.StorageLockedError, k.NotAStoreError, k.CorruptStoreError, k.StoreVersionError):
        assert issubclass(cls, k.StorageError)
    assert not issubclass(k.JobNotFoundError, ValueError)
    # catchable as the builtin bases in practice
    app = kathikon.Kathikon(None)
    try:
        with pytest.raises(ValueError):
            app.insert("nope", {})
        with pytest.raises(LookupError):
            app.get(1)
    finally:
        app.close()


def test_time_values_are_not_mistaken(memory_app: kathikon.Kathikon) -> None:
    """timedelta schedule_in and aware schedule_at in another zone are valid, not bad input."""

    @memory_app.worker
    def w(job: kathikon.Job) -> None:
        pass

    tz = timezone(timedelta(hours=-7))
    assert w.insert({}, schedule_in=timedelta(seconds=5)).state is kathikon.JobState.SCHEDULED
    at = datetime.now(tz) + timedelta(hours=1)
    assert w.insert({}, schedule_at=at).scheduled_at == at


def test_max_args_bytes_counts_utf8_bytes_and_must_be_sane(store_path: Path) -> None:
    for bad in (0, 1, -5, True, 1.5, "1k"):
        with pytest.raises(kathikon.ConfigurationError, match="max_args_bytes"):
            kathikon.Kathikon(store_path, max_args_bytes=bad)
    app = kathikon.Kathikon(store_path, max_args_bytes=100)
    try:

        @app.worker
        def w(job: kathikon.Job) -> None:
            pass

        w.insert({"t": "é" * 40})  # 80 bytes of text + 8 of JSON: fits
        with pytest.raises(kathikon.InvalidJobError, match="max_args_bytes=100"):
            w.insert({"t": "é" * 50})  # 50 characters, but 108 bytes
        assert len(app.jobs()) == 1
    finally:
        app.close()
