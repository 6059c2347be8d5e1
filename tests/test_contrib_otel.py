"""kathikon.contrib.otel against the real OpenTelemetry SDK: spans per job execution with the
link to the insert, status and outcome, errors, metrics; drained and in a started app."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip(
    "opentelemetry.sdk",
    reason="opentelemetry-sdk is not installed (pip install 'kathikon[otel]')",
)

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

import kathikon
from kathikon import telemetry
from kathikon.contrib import DURATION_BUCKETS, QUEUE_TIME_BUCKETS, otel

WaitUntil = Callable[..., None]


@dataclass
class Otel:
    tracer_provider: TracerProvider
    exporter: InMemorySpanExporter
    meter_provider: MeterProvider
    reader: InMemoryMetricReader

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def processed(self) -> list[ReadableSpan]:
        return sorted(
            (s for s in self.spans() if s.kind == SpanKind.CONSUMER),
            key=lambda s: (attr(s, "kathikon.job.id"), attr(s, "kathikon.job.attempt")),
        )

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        out: list[Any] = []
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        out.extend(metric.data.data_points)
        return out

    def counts(self, name: str, key: str) -> dict[str, int]:
        """A counter's values keyed by one attribute (summed over the others)."""
        out: dict[str, int] = {}
        for p in self.points(name):
            value = p.attributes[key]
            out[value] = out.get(value, 0) + p.value
        return out


def attr(span: ReadableSpan, key: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(key)


@pytest.fixture
def make_otel() -> Iterator[Callable[..., Otel]]:
    """``make_otel(record_errors=False)``: fresh SDK providers, instrumented; all undone after."""
    made: list[Otel] = []

    def make(**kwargs: Any) -> Otel:
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        otel.instrument(tracer_provider, meter_provider, **kwargs)
        env = Otel(tracer_provider, exporter, meter_provider, reader)
        made.append(env)
        return env

    try:
        yield make
    finally:
        otel.uninstrument()
        for env in made:
            env.tracer_provider.shutdown()
            env.meter_provider.shutdown()
    assert otel.HANDLER_ID not in telemetry.list_handlers()


@pytest.fixture
def ot(make_otel: Callable[..., Otel]) -> Otel:
    return make_otel()


# -- spans --------------------------------------------------------------------------------


def test_one_span_per_execution_linked_to_the_insert(app: kathikon.Kathikon, ot: Otel) -> None:
    @app.worker(queue="emails", tags=["mail"])
    def send(job: kathikon.Job) -> None:
        time.sleep(0.05)

    tracer = ot.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        job = send.insert({"to": "a@b.c"}, priority=3)
    assert app.drain() == {"completed": 1}

    (insert,) = ot.spans(f"{send.name} send")
    assert insert.kind == SpanKind.PRODUCER
    assert insert.parent is not None
    assert insert.parent.span_id == request.get_span_context().span_id
    assert attr(insert, "kathikon.job.id") == job.id
    assert attr(insert, "kathikon.job.queue") == "emails"

    (span,) = ot.spans(f"{send.name} process")
    assert span.kind == SpanKind.CONSUMER
    assert span.parent is None, "a job's span is the root of its own trace"
    assert [link.context.span_id for link in span.links] == [insert.context.span_id]
    assert [link.context.trace_id for link in span.links] == [insert.context.trace_id]
    assert attr(span, "kathikon.job.id") == job.id
    assert attr(span, "kathikon.job.worker") == send.name
    assert attr(span, "kathikon.job.queue") == "emails"
    assert attr(span, "kathikon.job.attempt") == 1
    assert attr(span, "kathikon.job.max_attempts") == job.max_attempts
    assert attr(span, "kathikon.job.priority") == 3
    assert attr(span, "kathikon.job.tags") == ("mail",)
    assert attr(span, "kathikon.job.outcome") == "complete"
    assert attr(span, "messaging.system") == "kathikon"
    assert attr(span, "messaging.destination.name") == "emails"
    assert attr(span, "messaging.message.id") == str(job.id)
    assert attr(span, "kathikon.job.queue_time") >= 0.0
    assert span.status.status_code == StatusCode.UNSET
    assert span.start_time is not None and span.end_time is not None
    took = (span.end_time - span.start_time) / 1e9
    assert 0.05 <= took < 5, took


def test_insert_all_is_one_span_linked_from_every_job(app: kathikon.Kathikon, ot: Otel) -> None:
    @app.worker
    def a(job: kathikon.Job) -> None:
        pass

    @app.worker(queue="emails")
    def b(job: kathikon.Job) -> None:
        pass

    app.insert_all([a.new({}), a.new({}), b.new({})])
    app.drain()
    (insert,) = ot.spans("kathikon send")  # mixed workers
    assert attr(insert, "kathikon.insert.count") == 3
    assert attr(insert, "messaging.batch.message_count") == 3
    assert attr(insert, "kathikon.job.queue") is None  # mixed queues
    processed = ot.processed()
    assert len(processed) == 3
    for span in processed:
        assert [link.context.span_id for link in span.links] == [insert.context.span_id]


def test_failure_then_discard_set_error_status(app: kathikon.Kathikon, ot: Otel) -> None:
    @app.worker(max_attempts=2, backoff=lambda job: 0)
    def flaky(job: kathikon.Job) -> None:
        raise ValueError("boom")

    job = flaky.insert({})
    assert app.drain() == {"retryable": 1, "discarded": 1}
    assert app.get(job.id).state == kathikon.JobState.DISCARDED
    first, second = ot.processed()
    assert [attr(s, "kathikon.job.attempt") for s in (first, second)] == [1, 2]
    assert attr(first, "kathikon.job.outcome") == "retry"
    assert attr(second, "kathikon.job.outcome") == "discard"
    for span in (first, second):
        assert span.status.status_code == StatusCode.ERROR
        assert span.links, "every attempt links to the insert"
        assert not span.events, "without record_errors there is no exception event"
    assert first.status.description == "attempt 1 of 2 failed"
    assert second.status.description == "attempt 2 of 2 failed; the job was discarded"
    assert first.links[0].context == second.links[0].context


def test_record_errors_puts_the_exception_on_the_span(
    app: kathikon.Kathikon, make_otel: Callable[..., Otel]
) -> None:
    ot = make_otel(record_errors=True)

    @app.worker(max_attempts=2, backoff=lambda job: 0)
    def flaky(job: kathikon.Job) -> None:
        raise ValueError("boom")

    @app.worker
    def refuse(job: kathikon.Job) -> None:
        raise kathikon.Discard("not for us")

    flaky.insert({})
    refuse.insert({})
    app.drain(with_scheduled=True)
    first, second = ot.spans(f"{flaky.name} process")
    for span in (first, second):
        assert span.status.status_code == StatusCode.ERROR
        assert span.status.description == "ValueError: boom"
        (event,) = span.events
        assert event.name == "exception"
        assert event.attributes is not None
        assert event.attributes["exception.type"] == "ValueError"
        assert event.attributes["exception.message"] == "boom"
        assert "Traceback" in str(event.attributes["exception.stacktrace"])
        assert span.end_time is not None and event.timestamp == span.end_time
    (discarded,) = ot.spans(f"{refuse.name} process")
    assert attr(discarded, "kathikon.job.outcome") == "discard"
    assert discarded.status.status_code == StatusCode.ERROR
    assert discarded.status.description == "discarded: not for us"
    assert not discarded.events


def test_cancel_snooze_and_complete_are_not_errors(app: kathikon.Kathikon, ot: Otel) -> None:
    @app.worker
    def cancel(job: kathikon.Job) -> Any:
        return kathikon.Cancel("no longer needed")

    @app.worker
    def snooze(job: kathikon.Job) -> None:
        raise kathikon.Snooze(60)

    @app.worker
    async def done(job: kathikon.Job) -> None:
        pass

    for w in (cancel, snooze, done):
        w.insert({})
    app.drain()
    outcomes = {attr(s, "kathikon.job.worker"): attr(s, "kathikon.job.outcome") for s in ot.spans()}
    assert outcomes[cancel.name] == "cancel"
    assert outcomes[snooze.name] == "snooze"
    assert outcomes[done.name] == "complete"
    for span in ot.processed():
        assert span.status.status_code == StatusCode.UNSET


def test_queue_time_is_an_attribute_and_a_histogram(
    make_otel: Callable[..., Otel],
) -> None:
    ot = make_otel()
    app = kathikon.Kathikon(None, queues={"default": 1}, clock="manual")
    try:

        @app.worker
        def w(job: kathikon.Job) -> None:
            pass

        w.insert({})
        app.advance_clock(30)
        app.drain()
    finally:
        app.close()
    (span,) = ot.processed()
    assert attr(span, "kathikon.job.queue_time") == pytest.approx(30.0, abs=0.01)
    (point,) = ot.points("kathikon.job.queue_time")
    assert point.count == 1
    assert point.sum == pytest.approx(30.0, abs=0.01)
    assert point.attributes == {"kathikon.job.queue": "default", "kathikon.job.worker": w.name}
    assert tuple(point.explicit_bounds) == QUEUE_TIME_BUCKETS


def test_metrics_count_jobs_by_outcome(app: kathikon.Kathikon, ot: Otel) -> None:
    @app.worker
    def ok(job: kathikon.Job) -> None:
        time.sleep(0.01)

    @app.worker(queue="emails", max_attempts=3)
    def bad(job: kathikon.Job) -> None:
        raise RuntimeError("nope")

    app.insert_all([ok.new({}) for _ in range(3)])
    bad.insert({})
    app.drain()

    assert ot.counts("kathikon.jobs.inserted", "kathikon.job.worker") == {ok.name: 3, bad.name: 1}
    executed = ot.points("kathikon.jobs.executed")
    by = {
        (p.attributes["kathikon.job.worker"], p.attributes["kathikon.job.outcome"]): p.value
        for p in executed
    }
    assert by == {(ok.name, "complete"): 3, (bad.name, "retry"): 1}
    assert {p.attributes["kathikon.job.queue"] for p in executed} == {"default", "emails"}

    durations = {p.attributes["kathikon.job.worker"]: p for p in ot.points("kathikon.job.duration")}
    assert durations[ok.name].count == 3
    assert durations[ok.name].sum >= 0.03
    assert durations[ok.name].attributes["kathikon.job.outcome"] == "complete"
    assert durations[bad.name].count == 1
    assert tuple(durations[ok.name].explicit_bounds) == DURATION_BUCKETS
    assert sum(p.count for p in ot.points("kathikon.job.queue_time")) == 4


@pytest.mark.parametrize("record_errors", [False, True])
def test_a_started_app_is_traced(
    app: kathikon.Kathikon,
    make_otel: Callable[..., Otel],
    wait_until: WaitUntil,
    record_errors: bool,
) -> None:
    # With record_errors the runner waits for stored outcomes (and acks async jobs off the
    # loop); without, outcomes are sent without waiting. Both must give the same spans.
    ot = make_otel(record_errors=record_errors)

    @app.worker
    def sync_job(job: kathikon.Job) -> None:
        time.sleep(0.01)

    @app.worker(queue="emails", max_attempts=1)
    async def async_job(job: kathikon.Job) -> None:
        if job.args["fail"]:
            raise ValueError("async boom")

    app.start()
    tracer = ot.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request"):
        jobs = [sync_job.insert({"i": i}) for i in range(5)]
        jobs += [async_job.insert({"fail": i == 0}) for i in range(3)]
    wait_until(lambda: len(ot.processed()) == 8, what="8 job spans")
    wait_until(
        lambda: sum(ot.counts("kathikon.jobs.executed", "kathikon.job.worker").values()) == 8
    )

    inserts = {attr(s, "kathikon.job.id"): s for s in ot.spans() if s.kind == SpanKind.PRODUCER}
    outcomes: dict[str, int] = {}
    for span in ot.processed():
        job_id = attr(span, "kathikon.job.id")
        assert [link.context.span_id for link in span.links] == [inserts[job_id].context.span_id]
        outcomes[attr(span, "kathikon.job.outcome")] = (
            outcomes.get(attr(span, "kathikon.job.outcome"), 0) + 1
        )
        if attr(span, "kathikon.job.outcome") == "discard":
            assert span.status.status_code == StatusCode.ERROR
            assert [e.name for e in span.events] == (["exception"] if record_errors else [])
    assert outcomes == {"complete": 7, "discard": 1}
    assert {attr(s, "kathikon.job.id") for s in ot.processed()} == {j.id for j in jobs}
    assert ot.counts("kathikon.jobs.executed", "kathikon.job.outcome") == {
        "complete": 7,
        "discard": 1,
    }


def test_trace_meta_keeps_the_link_across_a_restart(
    store_path: Path, make_otel: Callable[..., Otel], wait_until: WaitUntil
) -> None:
    ot = make_otel()
    tracer = ot.tracer_provider.get_tracer("test")
    first = kathikon.Kathikon(store_path, queues={"default": 1})
    first.worker(name="w")(lambda job: None)
    with tracer.start_as_current_span("request") as request:
        meta = otel.trace_meta({"user": 7})
        first.insert("w", {}, meta=meta)
        first.insert("w", {})  # no trace context in its meta
    first.close()
    assert meta["user"] == 7 and meta["traceparent"].startswith("00-")

    ot = make_otel()  # a fresh instrumentation remembers no insert, as after a restart
    second = kathikon.Kathikon(store_path, queues={"default": 1})
    try:
        second.worker(name="w")(lambda job: None)
        second.drain()
    finally:
        second.close()
    # The job without trace context was inserted moments ago: its span waits up to
    # otel.WAIT_SECONDS for an insert event that might still come, then ends without a link.
    wait_until(lambda: len(ot.processed()) == 2, what="both spans")
    with_meta, without = ot.processed()
    assert [link.context.span_id for link in with_meta.links] == [
        request.get_span_context().span_id
    ]
    assert without.links == ()


@pytest.mark.parametrize("insert_after", ["start", "stop"])
def test_an_insert_event_after_the_job_ran_still_links(
    memory_app: kathikon.Kathikon, make_otel: Callable[..., Otel], insert_after: str
) -> None:
    """In a started app a job can start, even finish, before the inserting thread emits the
    insert event; the span gets its link when the event comes."""
    memory_app.worker(name="w")(lambda job: None)
    job = memory_app.insert("w", {})  # not instrumented yet: no insert event seen
    ot = make_otel()
    (claimed,) = memory_app._engine.claim("default", 1, 0.0)
    insert = (("kathikon", "job", "insert"), {"count": 1, "duration": 0.001}, {"jobs": [job]})
    telemetry.execute(("kathikon", "job", "start"), {"queue_time": 0.0}, {"job": claimed})
    if insert_after == "start":
        telemetry.execute(*insert)
    telemetry.execute(
        ("kathikon", "job", "stop"),
        {"duration": 0.002, "queue_time": 0.0},
        {"job": claimed, "outcome": "complete"},
    )
    if insert_after == "stop":
        assert ot.processed() == [], "the span waits for the insert event"
        telemetry.execute(*insert)
    (send,) = ot.spans("w send")
    (span,) = ot.processed()
    assert [link.context.span_id for link in span.links] == [send.context.span_id]
    assert span.end_time is not None and span.start_time is not None
    assert span.end_time - span.start_time == 2_000_000


def test_trace_meta_without_a_span_changes_nothing() -> None:
    assert otel.trace_meta() == {}
    assert otel.trace_meta({"a": 1}) == {"a": 1}


def test_a_job_stopped_without_a_start_still_gets_a_span(store_path: Path, ot: Otel) -> None:
    first = kathikon.Kathikon(store_path, queues={"default": 1})
    first.worker(name="gone")(lambda job: None)
    job = first.insert("gone", {})
    first.close()
    second = kathikon.Kathikon(store_path, queues={"default": 1})  # "gone" is not registered
    try:
        assert second.drain() == {"retryable": 1}
    finally:
        second.close()
    (span,) = ot.processed()
    assert attr(span, "kathikon.job.id") == job.id
    assert attr(span, "kathikon.job.outcome") == "retry"
    assert span.status.status_code == StatusCode.ERROR
    assert span.links, "the insert was made by this process, so the link is remembered"


def test_instrument_replaces_and_uninstrument_detaches(
    app: kathikon.Kathikon, make_otel: Callable[..., Otel]
) -> None:
    @app.worker
    def w(job: kathikon.Job) -> None:
        pass

    old = make_otel()
    new = make_otel()
    assert otel.is_instrumented()
    assert telemetry.list_handlers()[otel.HANDLER_ID]
    w.insert({})
    app.drain()
    assert old.spans() == []
    assert len(new.processed()) == 1
    assert otel.uninstrument() is True
    assert otel.uninstrument() is False
    assert not otel.is_instrumented()
    assert otel.HANDLER_ID not in telemetry.list_handlers()
    w.insert({})
    app.drain()
    assert len(new.spans()) == 2  # one insert and one process span, nothing after


def test_uninstrument_ends_spans_of_running_jobs(
    app: kathikon.Kathikon, ot: Otel, wait_until: WaitUntil
) -> None:
    import threading

    started, release = threading.Event(), threading.Event()

    @app.worker
    def slow(job: kathikon.Job) -> None:
        started.set()
        release.wait(5)

    slow.insert({})
    app.start()
    try:
        assert started.wait(5)
        otel.uninstrument()
        (span,) = ot.processed()
        assert attr(span, "kathikon.job.outcome") == "unknown"
    finally:
        release.set()
        app.stop(5)


def test_without_providers_the_global_ones_are_used(
    app: kathikon.Kathikon, caplog: pytest.LogCaptureFixture
) -> None:
    """No SDK configured globally: spans and metrics are no-ops, and nothing breaks."""
    app.worker(name="w")(lambda job: None)
    otel.instrument()
    try:
        app.insert("w", {})
        assert app.drain() == {"completed": 1}
    finally:
        assert otel.uninstrument() is True
    assert not [r for r in caplog.records if r.name.startswith("kathikon.contrib")]
