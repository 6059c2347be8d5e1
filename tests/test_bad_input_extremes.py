"""Extreme values — times past what ``datetime`` holds, lists nested 10,000 deep, ids and
limits past 64 bits — are typed kathikon errors naming the value, and store nothing; every
time a job can be stored with reads back. Each runs in the process that owns the store and in
a client of an owner in another process, since a client's values cross the socket."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import kathikon
from kathikon.options import MAX_DEPTH

UTC = timezone.utc

#: An owner that runs no jobs: it opens the store, says so, and waits for its stdin to close.
OWNER = """
import sys, kathikon
app = kathikon.Kathikon(sys.argv[1])
assert app.role == "owner", app.role
print("ready", flush=True)
sys.stdin.read()
app.close(timeout=5)
"""


@pytest.fixture(params=["owner", "client"])
def side(request: pytest.FixtureRequest, store_path: Path) -> Iterator[kathikon.Kathikon]:
    """An app in this process: the store's owner, or a client of an owner in another one."""
    owner = None
    if request.param == "client":
        owner = subprocess.Popen(
            [sys.executable, "-c", OWNER, str(store_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert owner.stdout is not None and owner.stdout.readline() == "ready\n"
    app = kathikon.Kathikon(store_path, queues={"default": 2})
    try:
        assert app.role == request.param
        yield app
    finally:
        app.close(timeout=5)
        if owner is not None:
            assert owner.stdin is not None and owner.stdout is not None
            owner.stdin.close()
            assert owner.wait(timeout=30) == 0
            owner.stdout.close()


@pytest.fixture
def worker(side: kathikon.Kathikon) -> kathikon.WorkerFunction:
    """A registered worker, with one job stored, so "nothing stored" is checked against a
    store that has something."""

    @side.worker(name="extremes.w")
    def w(job: kathikon.Job) -> None:
        pass

    w.insert({"existing": True})
    return w


def stored(app: kathikon.Kathikon) -> list[tuple[int, str]]:
    return [(j.id, j.state.value) for j in app.jobs(limit=10_000)]


def deep_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


DEEP = deep_list(10_000)
FAR_WEST = timezone(timedelta(hours=-5))
FAR_EAST = timezone(timedelta(hours=5))

# (id, insert options, substrings the message must hold: the value and the fix's words)
CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("in-3e11", {"schedule_in": 3e11}, ["schedule_in=300000000000.0", "9999-12-31", "shorter"]),
    ("in-1e15", {"schedule_in": 1e15}, ["schedule_in=1000000000000000.0", "9999"]),
    ("in-1e30", {"schedule_in": 1e30}, ["schedule_in=1e+30", "9999"]),
    ("in-1e303", {"schedule_in": 1e303}, ["schedule_in=1e+303", "9999"]),
    ("in-2**63", {"schedule_in": 2**63}, ["schedule_in=9223372036854775808", "9999"]),
    ("in-timedelta.max", {"schedule_in": timedelta.max}, ["days=999999999", "9999"]),
    ("in--3e11", {"schedule_in": -3e11}, ["schedule_in=-300000000000.0", "0001-01-01"]),
    ("in-timedelta.min", {"schedule_in": timedelta.min}, ["days=-999999999", "0001-01-01"]),
    (
        "at-past-9999",
        {"schedule_at": datetime(9999, 12, 31, 23, tzinfo=FAR_WEST)},
        ["schedule_at 9999-12-31T23:00:00-05:00", "latest"],
    ),
    (
        "at-before-year-1",
        {"schedule_at": datetime(1, 1, 1, 1, tzinfo=FAR_EAST)},
        ["schedule_at 0001-01-01T01:00:00+05:00", "earliest"],
    ),
    ("args-deep-list", {"args": DEEP}, ["args must be a dict", "list", "[[["]),
    ("meta-deep-list", {"meta": DEEP}, ["meta must be a dict", "list", "[[["]),
    ("tags-deep-list", {"tags": DEEP}, ["tag [[[", "must be a string"]),
    ("args-deep-in-dict", {"args": {"v": DEEP}}, ["args['v']", f"more than {MAX_DEPTH}"]),
    ("priority-deep-list", {"priority": DEEP}, ["priority [[[", "must be an int"]),
    ("attempts-deep-list", {"max_attempts": DEEP}, ["max_attempts [[[", "must be an int"]),
    ("schedule-in-deep-list", {"schedule_in": DEEP}, ["schedule_in [[[", "seconds"]),
]


@pytest.mark.parametrize(("options", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_extreme_values_are_typed_errors_naming_them_and_store_nothing(
    side: kathikon.Kathikon,
    worker: kathikon.WorkerFunction,
    options: dict[str, Any],
    words: list[str],
) -> None:
    before = stored(side)
    options = dict(options)
    args = options.pop("args", {"ok": 1})
    with pytest.raises(kathikon.InvalidJobError) as err:
        worker.insert(args, **options)
    for word in words:
        assert word in str(err.value), str(err.value)
    with pytest.raises(kathikon.InvalidJobError):
        side.insert_all([worker.new({"ok": 1}), worker.new(args, **options)])
    assert stored(side) == before


EDGE_TIMES = [
    datetime.max.replace(tzinfo=UTC),
    datetime.min.replace(tzinfo=UTC),
    datetime(9999, 12, 31, 18, 59, tzinfo=FAR_WEST),
    datetime(1, 1, 1, 5, tzinfo=FAR_EAST),
]


@pytest.mark.parametrize("at", EDGE_TIMES, ids=lambda at: at.isoformat())
def test_every_time_that_can_be_stored_reads_back(
    side: kathikon.Kathikon, worker: kathikon.WorkerFunction, at: datetime
) -> None:
    job = worker.insert({}, schedule_at=at)
    assert job.scheduled_at == at
    assert side.get(job.id).scheduled_at == at
    assert [j.scheduled_at for j in side.jobs() if j.id == job.id] == [at]


def test_the_longest_delay_accepted_reads_back(
    side: kathikon.Kathikon, worker: kathikon.WorkerFunction
) -> None:
    latest = datetime.max.replace(tzinfo=UTC)
    # The clock moves between now() and the insert: a day to spare, and a day too many.
    delay = latest - side.now() - timedelta(days=1)
    job = worker.insert({}, schedule_in=delay)
    assert latest - timedelta(days=1) <= job.scheduled_at <= latest
    assert side.get(job.id).scheduled_at == job.scheduled_at
    with pytest.raises(kathikon.InvalidJobError, match="latest"):
        worker.insert({}, schedule_in=delay + timedelta(days=2))


def test_args_nested_to_the_limit_round_trip(
    side: kathikon.Kathikon, worker: kathikon.WorkerFunction
) -> None:
    # Deeper than serde_json's parsing limit (128): the core checks the text without
    # building it, so the limit is Python's own (MAX_DEPTH).
    for kind in (list, dict):
        value: Any = "leaf"
        for _ in range(MAX_DEPTH - 1):
            value = [value] if kind is list else {"n": value}
        args = {"v": value}
        job = worker.insert(args, meta=args)
        got = side.get(job.id)
        assert got.args == args
        assert got.meta == args


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"limit": 2**64}, ["limit 18446744073709551616", "2**64 - 1"]),
        ({"limit": -1}, ["limit -1", "from 1"]),
        ({"limit": DEEP}, ["limit [[[", "an int"]),
        ({"after": -1}, ["after -1", "job id"]),
        ({"after": 2**64}, ["after 18446744073709551616", "job id"]),
        ({"after": "7"}, ["after '7'", "job id"]),
        ({"after": True}, ["after True", "job id"]),
        ({"state": DEEP}, ["state [[[", "job state"]),
        ({"queue": DEEP}, ["queue [[[", "queue name"]),
        ({"worker": DEEP}, ["[[[", "not a worker"]),
    ],
    ids=[
        "limit-2**64",
        "limit--1",
        "limit-deep",
        "after--1",
        "after-2**64",
        "after-str",
        "after-bool",
        "state-deep",
        "queue-deep",
        "worker-deep",
    ],
)
def test_bad_jobs_queries_are_typed_errors_naming_the_value(
    side: kathikon.Kathikon,
    worker: kathikon.WorkerFunction,
    query: dict[str, Any],
    words: list[str],
) -> None:
    with pytest.raises(kathikon.InvalidJobError) as err:
        side.jobs(**query)
    for word in words:
        assert word in str(err.value), str(err.value)


@pytest.mark.parametrize("verb", ["get", "cancel", "retry"])
def test_a_deep_list_as_a_job_id_is_a_typed_error_naming_it(
    side: kathikon.Kathikon, worker: kathikon.WorkerFunction, verb: str
) -> None:
    before = stored(side)
    with pytest.raises(kathikon.InvalidJobError) as err:
        getattr(side, verb)(DEEP)
    assert "job id [[[" in str(err.value), str(err.value)
    assert stored(side) == before


def test_largest_jobs_query_values_are_accepted(
    side: kathikon.Kathikon, worker: kathikon.WorkerFunction
) -> None:
    assert len(side.jobs(limit=2**64 - 1)) == 1
    assert side.jobs(after=2**64 - 1) == []
    assert len(side.jobs(after=0)) == 1


def test_cli_lists_and_shows_a_job_stored_past_year_9999(store_path: Path) -> None:
    """A store written before inserts were bounded may hold such a time (``schedule_in=3e11``
    was accepted): it reads as the latest ``datetime``, and no command calls it a bug."""
    from kathikon._native import job_spec

    app = kathikon.Kathikon(store_path)
    try:
        far = app._engine.now() + 300_000_000_000 * 1_000_000
        (job,) = app._engine.insert([job_spec("default", "w", "{}", "{}", [], 3, 1, far)])
        assert app.get(job.id).scheduled_at == datetime.max.replace(tzinfo=UTC)
    finally:
        app.close(timeout=5)
    for command in (
        ["jobs"],
        ["jobs", "--json"],
        ["job", str(job.id)],
        ["job", str(job.id), "--json"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "kathikon.cli", *command, "--path", str(store_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (command, result.stderr)
        assert "a bug in kathikon" not in result.stderr + result.stdout
        assert "9999-12-31" in result.stdout, (command, result.stdout)
