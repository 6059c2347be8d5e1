"""Telemetry: attach/detach, every documented event with its measurements and metadata,
engine events from the scheduler and pruner, misbehaving handlers, the default logger."""

from __future__ import annotations

import json
import logging
import shlex
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Callable

import pytest

import kathikon
from kathikon import telemetry

WaitUntil = Callable[..., None]
Event = tuple[str, ...]
S = kathikon.JobState

INSERT = ("kathikon", "job", "insert")
START = ("kathikon", "job", "start")
STOP = ("kathikon", "job", "stop")
RETRY = ("kathikon", "job", "retry")
DISCARD = ("kathikon", "job", "discard")
CANCEL = ("kathikon", "job", "cancel")
SNOOZE = ("kathikon", "job", "snooze")
PRUNE = ("kathikon", "job", "prune")
SCHEDULER_TICK = ("kathikon", "scheduler", "tick")
PRUNER_TICK = ("kathikon", "pruner", "tick")
POLL = ("kathikon", "dispatcher", "poll")
JOB_EVENTS = [INSERT, START, STOP, RETRY, DISCARD, CANCEL, SNOOZE]


class Recorder:
    """A handler that keeps every call; safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[Event, dict[str, Any], dict[str, Any]]] = []

    def __call__(
        self, event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        with self._lock:
            self.calls.append((event, dict(measurements), dict(metadata)))

    def of(self, event: Event) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        with self._lock:
            return [(m, md) for e, m, md in self.calls if e == event]

    def events(self) -> list[Event]:
        with self._lock:
            return [e for e, _, _ in self.calls]


@pytest.fixture(autouse=True)
def no_leftover_handlers() -> Iterator[None]:
    assert telemetry.list_handlers() == {}, "a previous test left telemetry handlers attached"
    try:
        yield
    finally:
        leftover = list(telemetry.list_handlers())
        for handler_id in leftover:
            telemetry.detach(handler_id)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A Recorder attached to every job event as "test-recorder"."""
    rec = Recorder()
    telemetry.attach("test-recorder", JOB_EVENTS, rec)
    try:
        yield rec
    finally:
        telemetry.detach("test-recorder")


def only(items: list[Any]) -> Any:
    assert len(items) == 1, items
    return items[0]


# -- attach / detach ----------------------------------------------------------------------


def test_attach_and_detach(app: kathikon.Kathikon) -> None:
    @app.worker
    def w(job: kathikon.Job) -> None:
        pass

    rec = Recorder()
    telemetry.attach("t1", [INSERT, STOP], rec)
    try:
        assert sorted(telemetry.list_handlers()["t1"]) == sorted([INSERT, STOP])
        job = w.insert({})
        assert rec.events() == [INSERT]
        app.drain()
        assert rec.events() == [INSERT, STOP]
        assert rec.of(STOP)[0][1]["job"].id == job.id
    finally:
        assert telemetry.detach("t1") is True
    assert "t1" not in telemetry.list_handlers()
    w.insert({})
    app.drain()
    assert rec.events() == [INSERT, STOP]  # nothing after detaching
    assert telemetry.detach("t1") is False


def test_events_may_be_given_as_lists(app: kathikon.Kathikon) -> None:
    @app.worker
    def w(job: kathikon.Job) -> None:
        pass

    rec = Recorder()
    telemetry.attach("as-list", [["kathikon", "job", "insert"]], rec)  # type: ignore[list-item]
    try:
        w.insert({})
        assert rec.events() == [INSERT]
    finally:
        telemetry.detach("as-list")


def test_two_handlers_on_one_event(app: kathikon.Kathikon) -> None:
    @app.worker
    def w(job: kathikon.Job) -> None:
        pass

    a, b = Recorder(), Recorder()
    telemetry.attach("a", [INSERT], a)
    telemetry.attach("b", [INSERT], b)
    try:
        w.insert({})
        telemetry.detach("a")
        w.insert({})
    finally:
        telemetry.detach("a")
        telemetry.detach("b")
    assert len(a.of(INSERT)) == 1
    assert len(b.of(INSERT)) == 2


def test_unknown_event_is_refused(app: kathikon.Kathikon) -> None:
    with pytest.raises(kathikon.ConfigurationError) as info:
        telemetry.attach("x", [INSERT, ("kathikon", "job", "explode")], Recorder())
    assert "explode" in str(info.value)
    assert telemetry.list_handlers() == {}, "nothing may be attached after a refusal"
    with pytest.raises(kathikon.ConfigurationError):
        telemetry.attach("y", ["nope"], Recorder())  # type: ignore[list-item]
    assert telemetry.list_handlers() == {}


def test_duplicate_handler_id_is_refused(app: kathikon.Kathikon) -> None:
    @app.worker
    def w(job: kathikon.Job) -> None:
        pass

    first, second = Recorder(), Recorder()
    telemetry.attach("dup", [INSERT], first)
    try:
        with pytest.raises(kathikon.ConfigurationError, match="'dup'"):
            telemetry.attach("dup", [STOP], second)
        assert telemetry.list_handlers()["dup"] == [INSERT]
        w.insert({})
        app.drain()
        assert first.events() == [INSERT]
        assert second.events() == []
    finally:
        telemetry.detach("dup")


def test_handler_must_be_callable() -> None:
    with pytest.raises(kathikon.ConfigurationError, match="42"):
        telemetry.attach("nc", [INSERT], 42)  # type: ignore[arg-type]
    assert telemetry.list_handlers() == {}


# -- job events ---------------------------------------------------------------------------


def test_insert_event(app: kathikon.Kathikon, recorder: Recorder) -> None:
    @app.worker
    def w(job: kathikon.Job) -> None:
        pass

    job = w.insert({"a": 1})
    measurements, metadata = only(recorder.of(INSERT))
    assert measurements["count"] == 1
    assert isinstance(measurements["duration"], float) and measurements["duration"] >= 0
    assert [j.id for j in metadata["jobs"]] == [job.id]
    assert metadata["jobs"][0].args == {"a": 1}

    jobs = app.insert_all([w.new({"i": i}) for i in range(3)])
    measurements, metadata = recorder.of(INSERT)[1]
    assert len(recorder.of(INSERT)) == 2  # one event for the whole batch
    assert measurements["count"] == 3
    assert [j.id for j in metadata["jobs"]] == [j.id for j in jobs]


def test_refused_insert_emits_nothing(app: kathikon.Kathikon, recorder: Recorder) -> None:
    @app.worker
    def w(job: kathikon.Job) -> None:
        pass

    with pytest.raises(kathikon.InvalidJobError):
        w.insert({"x": object()})
    assert recorder.calls == []


def test_start_and_stop_events_on_completion(app: kathikon.Kathikon, recorder: Recorder) -> None:
    @app.worker
    def w(job: kathikon.Job) -> None:
        threading.Event().wait(0.05)

    job = w.insert({})
    app.drain()
    assert recorder.events() == [INSERT, START, STOP]
    (m_start, md_start) = only(recorder.of(START))
    assert md_start["job"].id == job.id
    assert md_start["job"].state is S.EXECUTING
    assert md_start["job"].attempt == 1
    assert isinstance(m_start["queue_time"], float) and m_start["queue_time"] >= 0
    (m_stop, md_stop) = only(recorder.of(STOP))
    assert md_stop["job"].id == job.id
    assert md_stop["outcome"] == "complete"
    assert m_stop["duration"] >= 0.05
    assert m_stop["duration"] < 5
    assert m_stop["queue_time"] == m_start["queue_time"]


def test_retry_event(app: kathikon.Kathikon, recorder: Recorder) -> None:
    @app.worker(backoff=lambda job: 30)
    def w(job: kathikon.Job) -> None:
        raise RuntimeError("flaky upstream")

    job = w.insert({})
    app.drain()
    assert recorder.events() == [INSERT, START, STOP, RETRY]
    assert only(recorder.of(STOP))[1]["outcome"] == "fail"
    measurements, metadata = only(recorder.of(RETRY))
    assert metadata["job"].id == job.id
    assert metadata["job"].state is S.RETRYABLE
    assert "Traceback" in metadata["error"]
    assert "RuntimeError: flaky upstream" in metadata["error"]
    assert 30 <= measurements["delay"] < 31
    assert measurements["duration"] >= 0


def test_discard_event_when_attempts_run_out(app: kathikon.Kathikon, recorder: Recorder) -> None:
    @app.worker(max_attempts=1)
    def w(job: kathikon.Job) -> None:
        raise RuntimeError("fatal")

    job = w.insert({})
    app.drain()
    assert recorder.of(RETRY) == []
    measurements, metadata = only(recorder.of(DISCARD))
    assert metadata["job"].id == job.id
    assert metadata["job"].state is S.DISCARDED
    assert "RuntimeError: fatal" in metadata["reason"]
    assert measurements["duration"] >= 0


def test_discard_event_from_the_job(app: kathikon.Kathikon, recorder: Recorder) -> None:
    @app.worker
    def w(job: kathikon.Job) -> Any:
        return kathikon.Discard("bad payload")

    w.insert({})
    app.drain()
    measurements, metadata = only(recorder.of(DISCARD))
    assert metadata["reason"] == "bad payload"
    assert metadata["job"].state is S.DISCARDED
    assert "duration" in measurements
    assert only(recorder.of(STOP))[1]["outcome"] == "discard"


def test_cancel_event(app: kathikon.Kathikon, recorder: Recorder) -> None:
    @app.worker
    def w(job: kathikon.Job) -> Any:
        raise kathikon.Cancel("no longer wanted")

    job = w.insert({})
    app.drain()
    measurements, metadata = only(recorder.of(CANCEL))
    assert metadata["reason"] == "no longer wanted"
    assert metadata["job"].id == job.id
    assert metadata["job"].state is S.CANCELLED
    assert measurements["duration"] >= 0
    assert only(recorder.of(STOP))[1]["outcome"] == "cancel"


def test_snooze_event(app: kathikon.Kathikon, recorder: Recorder) -> None:
    @app.worker
    def w(job: kathikon.Job) -> Any:
        return kathikon.Snooze(45)

    job = w.insert({})
    app.drain()
    measurements, metadata = only(recorder.of(SNOOZE))
    assert metadata["job"].id == job.id
    assert metadata["job"].state is S.SCHEDULED
    assert 45 <= measurements["delay"] < 46
    assert measurements["duration"] >= 0
    assert recorder.of(RETRY) == []


def test_events_from_the_background_runner(
    app: kathikon.Kathikon, recorder: Recorder, wait_until: WaitUntil
) -> None:
    polls = Recorder()
    telemetry.attach("polls", [POLL], polls)
    try:

        @app.worker(queue="emails")
        async def w(job: kathikon.Job) -> None:
            pass

        job = w.insert({})
        app.start()
        try:
            wait_until(lambda: len(recorder.of(STOP)) == 1, what="the stop event")
        finally:
            assert app.stop(timeout=5)
    finally:
        telemetry.detach("polls")
    assert recorder.events() == [INSERT, START, STOP]
    assert only(recorder.of(STOP))[1]["job"].id == job.id
    claimed = [(m, md) for m, md in polls.of(POLL) if m["claimed"] > 0]
    m, md = only(claimed)
    assert md["queue"] == "emails"
    assert m["claimed"] == 1
    # An idle lane asks for one job; it claims ahead only once jobs prove quick.
    assert m["demand"] == 1
    assert {md["queue"] for _, md in polls.of(POLL)} <= {"default", "emails"}


# -- engine events ------------------------------------------------------------------------


def test_scheduler_ticks(tmp_path: Path, wait_until: WaitUntil) -> None:
    ticks = Recorder()
    app = kathikon.Kathikon(tmp_path / "s.redb", scheduler_interval=0.1)
    try:
        telemetry.attach("ticks", [SCHEDULER_TICK], ticks)

        @app.worker
        def w(job: kathikon.Job) -> None:
            pass

        wait_until(lambda: len(ticks.of(SCHEDULER_TICK)) >= 2, what="two idle ticks")
        for m, md in ticks.of(SCHEDULER_TICK):
            assert set(m) == {"promoted", "duration"}
            assert m["promoted"] >= 0
            assert m["duration"] >= 0
            assert md == {}
        job = w.insert({}, schedule_in=0.2)
        wait_until(
            lambda: any(m["promoted"] >= 1 for m, _ in ticks.of(SCHEDULER_TICK)),
            what="a tick that promoted the job",
        )
        assert app.get(job.id).state is S.AVAILABLE
        assert sum(m["promoted"] for m, _ in ticks.of(SCHEDULER_TICK)) == 1
    finally:
        telemetry.detach("ticks")
        app.close()


def test_pruner_tick_and_job_prune(tmp_path: Path, wait_until: WaitUntil) -> None:
    ticks, prunes = Recorder(), Recorder()
    app = kathikon.Kathikon(
        tmp_path / "p.redb", prune_interval=0.2, retention_period=0.1, scheduler_interval=0.2
    )
    try:
        telemetry.attach("pruner", [PRUNER_TICK], ticks)
        telemetry.attach("prunes", [PRUNE], prunes)

        @app.worker
        def w(job: kathikon.Job) -> Any:
            return {"cancel": kathikon.Cancel(), "discard": kathikon.Discard()}.get(job.args["do"])

        kept = w.insert({"do": "later"}, schedule_in=600)
        app.insert_all([w.new({"do": do}) for do in ("complete", "cancel", "discard")])
        assert app.drain() == {"completed": 1, "cancelled": 1, "discarded": 1}
        wait_until(
            lambda: sum(m["pruned"] for m, _ in ticks.of(PRUNER_TICK)) >= 3,
            what="the pruner to delete the completed, cancelled and discarded jobs",
        )
        wait_until(lambda: sum(m["count"] for m, _ in prunes.of(PRUNE)) >= 3)
        assert sum(m["pruned"] for m, _ in ticks.of(PRUNER_TICK)) == 3
        assert sum(m["count"] for m, _ in prunes.of(PRUNE)) == 3
        for m, md in ticks.of(PRUNER_TICK):
            assert set(m) == {"pruned", "duration"}
            assert m["duration"] >= 0
            assert md == {}
        assert [j.id for j in app.jobs()] == [kept.id]  # unfinished jobs are never pruned
    finally:
        telemetry.detach("pruner")
        telemetry.detach("prunes")
        app.close()


# -- misbehaving handlers -----------------------------------------------------------------


def test_raising_handler_is_detached_and_logged(
    app: kathikon.Kathikon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="kathikon.telemetry")
    calls: list[Event] = []

    def broken(event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        calls.append(event)
        raise ZeroDivisionError("handler bug")

    good = Recorder()
    telemetry.attach("broken", [STOP], broken)
    telemetry.attach("good", [STOP], good)
    try:

        @app.worker
        def w(job: kathikon.Job) -> None:
            pass

        jobs = app.insert_all([w.new({}), w.new({})])
        assert app.drain() == {"completed": 2}
        assert [app.get(j.id).state for j in jobs] == [S.COMPLETED, S.COMPLETED]
        assert calls == [STOP]  # called once, then detached
        assert "broken" not in telemetry.list_handlers()
        assert len(good.of(STOP)) == 2  # the other handler is unaffected
    finally:
        telemetry.detach("good")
        telemetry.detach("broken")
    records = [r for r in caplog.records if r.name == "kathikon.telemetry"]
    record = only(records)
    assert record.levelno == logging.ERROR
    assert "'broken'" in record.getMessage()
    assert "detached" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError


def test_raising_handler_in_a_worker_thread(
    app: kathikon.Kathikon, caplog: pytest.LogCaptureFixture, wait_until: WaitUntil
) -> None:
    caplog.set_level(logging.ERROR, logger="kathikon.telemetry")

    def broken(event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        raise RuntimeError("handler bug in a worker thread")

    telemetry.attach("broken-start", [START], broken)
    try:

        @app.worker
        def w(job: kathikon.Job) -> None:
            pass

        job = w.insert({})
        app.start()
        try:
            wait_until(lambda: app.get(job.id).state is S.COMPLETED)
        finally:
            assert app.stop(timeout=5)
    finally:
        telemetry.detach("broken-start")
    assert app.get(job.id).errors == []
    assert any("'broken-start'" in r.getMessage() for r in caplog.records)


def test_raising_engine_event_handler(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, wait_until: WaitUntil
) -> None:
    """A handler that raises on scheduler ticks is detached; other tick handlers keep
    receiving ticks (the engine event pump survives)."""
    caplog.set_level(logging.ERROR, logger="kathikon.telemetry")
    calls: list[Event] = []

    def broken(event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        calls.append(event)
        raise RuntimeError("tick handler bug")

    good = Recorder()
    app = kathikon.Kathikon(tmp_path / "t.redb", scheduler_interval=0.05)
    try:
        telemetry.attach("broken-tick", [SCHEDULER_TICK], broken)
        telemetry.attach("good-tick", [SCHEDULER_TICK], good)
        wait_until(lambda: len(good.of(SCHEDULER_TICK)) >= 3)
        assert calls == [SCHEDULER_TICK]
        assert "broken-tick" not in telemetry.list_handlers()
    finally:
        telemetry.detach("broken-tick")
        telemetry.detach("good-tick")
        app.close()
    assert any("'broken-tick'" in r.getMessage() for r in caplog.records)


# -- the default logger -------------------------------------------------------------------


def logfmt(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in shlex.split(line))


def run_one_job(app: kathikon.Kathikon) -> kathikon.Job:
    @app.worker(name="jobs.logged")
    def w(job: kathikon.Job) -> None:
        pass

    job = w.insert({"to": "someone"})
    assert app.drain() == {"completed": 1}
    return job


def test_default_logger_logfmt(app: kathikon.Kathikon, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kathikon")
    telemetry.attach_default_logger()
    try:
        assert "kathikon-default-logger" in telemetry.list_handlers()
        job = run_one_job(app)
    finally:
        assert telemetry.detach("kathikon-default-logger")
    lines = [r.getMessage() for r in caplog.records if r.name == "kathikon"]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "kathikon")
    parsed = [logfmt(line) for line in lines]
    assert [p["event"] for p in parsed] == ["job.insert", "job.start", "job.stop"]
    insert, start, stop = parsed
    assert insert["count"] == "1"
    assert float(insert["duration"]) >= 0
    assert start["job.id"] == str(job.id)
    assert start["job.worker"] == "jobs.logged"
    assert start["job.queue"] == "default"
    assert start["job.attempt"] == "1"
    assert start["job.state"] == "executing"
    assert stop["job.id"] == str(job.id)
    assert stop["outcome"] == "complete"
    assert float(stop["duration"]) >= 0
    assert float(stop["queue_time"]) >= 0


def test_default_logger_quotes_values_with_spaces(
    app: kathikon.Kathikon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kathikon")
    telemetry.attach_default_logger()
    try:

        @app.worker
        def w(job: kathikon.Job) -> Any:
            return kathikon.Cancel('not "needed" any more')

        w.insert({})
        app.drain()
    finally:
        telemetry.detach("kathikon-default-logger")
    cancel = only([r.getMessage() for r in caplog.records if "event=job.cancel" in r.getMessage()])
    assert logfmt(cancel)["reason"] == 'not "needed" any more'


def test_default_logger_json(app: kathikon.Kathikon, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="kathikon")
    telemetry.attach_default_logger(logging.DEBUG, format="json", handler_id="json-log")
    try:
        job = run_one_job(app)
    finally:
        assert telemetry.detach("json-log")
    records = [r for r in caplog.records if r.name == "kathikon"]
    assert all(r.levelno == logging.DEBUG for r in records)
    parsed = [json.loads(r.getMessage()) for r in records]
    assert [p["event"] for p in parsed] == ["job.insert", "job.start", "job.stop"]
    stop = parsed[2]
    assert stop["job.id"] == job.id
    assert stop["job.worker"] == "jobs.logged"
    assert stop["outcome"] == "complete"
    assert isinstance(stop["duration"], float)
    assert parsed[0]["count"] == 1


def test_default_logger_to_another_logger(
    app: kathikon.Kathikon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="myapp.jobs")
    telemetry.attach_default_logger(
        logging.WARNING, logger=logging.getLogger("myapp.jobs"), handler_id="mine"
    )
    try:
        run_one_job(app)
    finally:
        telemetry.detach("mine")
    mine = [r for r in caplog.records if r.name == "myapp.jobs"]
    assert len(mine) == 3
    assert all(r.levelno == logging.WARNING for r in mine)
    assert not [r for r in caplog.records if r.name == "kathikon"]


def test_default_logger_bad_format() -> None:
    with pytest.raises(kathikon.ConfigurationError, match="'xml'"):
        telemetry.attach_default_logger(format="xml")
    assert telemetry.list_handlers() == {}


def test_default_logger_twice_is_a_duplicate() -> None:
    telemetry.attach_default_logger()
    try:
        with pytest.raises(kathikon.ConfigurationError, match="kathikon-default-logger"):
            telemetry.attach_default_logger()
    finally:
        telemetry.detach("kathikon-default-logger")
