"""kathikon.contrib.prometheus against the real prometheus_client: counters and histograms fed by
telemetry, queue gauges read at scrape time, drained and in a started app."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Callable, Optional

import pytest

pytest.importorskip(
    "prometheus_client",
    reason="prometheus-client is not installed (pip install 'kathikon[prometheus]')",
)

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import kathikon
from kathikon import telemetry
from kathikon.contrib import prometheus

WaitUntil = Callable[..., None]


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    try:
        yield reg
    finally:
        prometheus.uninstrument(reg)
    assert not [h for h in telemetry.list_handlers() if h.startswith("kathikon-contrib-prom")]


def value(registry: CollectorRegistry, name: str, **labels: str) -> Optional[float]:
    return registry.get_sample_value(name, labels)


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the text exposition, parsed back: (name, sorted labels) → value."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_and_histograms_from_a_drain(
    app: kathikon.Kathikon, registry: CollectorRegistry
) -> None:
    prometheus.instrument(app, registry)

    @app.worker
    def ok(job: kathikon.Job) -> None:
        time.sleep(0.01)

    @app.worker(queue="emails", max_attempts=2, backoff=lambda job: 0)
    def bad(job: kathikon.Job) -> None:
        raise ValueError("boom")

    @app.worker
    def cancel(job: kathikon.Job) -> None:
        raise kathikon.Cancel("stop")

    app.insert_all([ok.new({}) for _ in range(3)])
    bad.insert({})
    cancel.insert({})
    assert app.drain() == {"completed": 3, "retryable": 1, "discarded": 1, "cancelled": 1}

    assert value(registry, "kathikon_jobs_inserted_total", queue="default", worker=ok.name) == 3
    assert value(registry, "kathikon_jobs_inserted_total", queue="emails", worker=bad.name) == 1
    executed = "kathikon_jobs_executed_total"
    assert value(registry, executed, queue="default", worker=ok.name, outcome="complete") == 3
    assert value(registry, executed, queue="emails", worker=bad.name, outcome="retry") == 1
    assert value(registry, executed, queue="emails", worker=bad.name, outcome="discard") == 1
    assert value(registry, executed, queue="default", worker=cancel.name, outcome="cancel") == 1

    duration = "kathikon_job_duration_seconds"
    labels = {"queue": "default", "worker": ok.name, "outcome": "complete"}
    assert value(registry, f"{duration}_count", **labels) == 3
    total = value(registry, f"{duration}_sum", **labels)
    assert total is not None and 0.03 <= total < 5
    assert value(registry, f"{duration}_bucket", le="0.001", **labels) == 0
    assert value(registry, f"{duration}_bucket", le="+Inf", **labels) == 3
    qt = "kathikon_job_queue_time_seconds_count"
    assert value(registry, qt, queue="default", worker=ok.name) == 3
    assert value(registry, qt, queue="emails", worker=bad.name) == 2


def test_queue_gauges_are_read_at_scrape_time(registry: CollectorRegistry) -> None:
    app = kathikon.Kathikon(None, queues={"default": 1, "emails": 1}, clock="manual")
    try:
        prometheus.instrument(app, registry)

        @app.worker
        def w(job: kathikon.Job) -> None:
            pass

        gauge = "kathikon_queue_jobs"
        age = "kathikon_queue_oldest_available_age_seconds"
        for queue in ("default", "emails"):
            for state in kathikon.JobState:
                assert value(registry, gauge, queue=queue, state=state.value) == 0
            assert value(registry, age, queue=queue) == 0

        app.insert_all([w.new({}) for _ in range(4)])
        w.insert({}, schedule_in=3600)
        assert value(registry, gauge, queue="default", state="available") == 4
        assert value(registry, gauge, queue="default", state="scheduled") == 1
        app.advance_clock(45)
        assert value(registry, age, queue="default") == pytest.approx(45, abs=0.01)
        assert value(registry, age, queue="emails") == 0

        app.drain()
        samples = scrape(registry)
        assert samples[(gauge, (("queue", "default"), ("state", "available")))] == 0
        assert samples[(gauge, (("queue", "default"), ("state", "completed")))] == 4
        assert samples[(gauge, (("queue", "default"), ("state", "scheduled")))] == 1
        assert samples[(age, (("queue", "default"),))] == 0
        qt = "kathikon_job_queue_time_seconds_sum"
        assert value(registry, qt, queue="default", worker=w.name) == pytest.approx(180, abs=0.1)
    finally:
        app.close()
    # A closed app drops out of the gauges; the scrape still works.
    samples = scrape(registry)
    assert not [k for k in samples if k[0] == "kathikon_queue_jobs"]
    assert samples[("kathikon_jobs_inserted_total", (("queue", "default"), ("worker", w.name)))]


def test_the_exposition_has_every_family(
    app: kathikon.Kathikon, registry: CollectorRegistry
) -> None:
    prometheus.instrument(app, registry)
    app.worker(name="w")(lambda job: None)
    app.insert("w", {})
    app.drain()
    text = generate_latest(registry).decode()
    for line in (
        "# TYPE kathikon_jobs_inserted_total counter",
        "# TYPE kathikon_jobs_executed_total counter",
        "# TYPE kathikon_job_duration_seconds histogram",
        "# TYPE kathikon_job_queue_time_seconds histogram",
        "# TYPE kathikon_queue_jobs gauge",
        "# TYPE kathikon_queue_oldest_available_age_seconds gauge",
        'kathikon_queue_jobs{queue="emails",state="available"} 0.0',
        'kathikon_queue_jobs{queue="default",state="completed"} 1.0',
        'kathikon_jobs_executed_total{outcome="complete",queue="default",worker="w"} 1.0',
    ):
        assert line in text, line


def test_a_started_app_is_counted(
    app: kathikon.Kathikon, registry: CollectorRegistry, wait_until: WaitUntil
) -> None:
    prometheus.instrument(app, registry)

    @app.worker
    def sync_job(job: kathikon.Job) -> None:
        pass

    @app.worker(queue="emails", max_attempts=1)
    async def async_job(job: kathikon.Job) -> None:
        if job.args["fail"]:
            raise ValueError("no")

    app.start()
    for i in range(20):
        sync_job.insert({"i": i})
    for i in range(4):
        async_job.insert({"fail": i % 2 == 0})
    executed = "kathikon_jobs_executed_total"

    def count(worker: str, outcome: str, queue: str) -> float:
        return value(registry, executed, queue=queue, worker=worker, outcome=outcome) or 0

    wait_until(lambda: count(sync_job.name, "complete", "default") == 20, what="20 completed")
    wait_until(lambda: count(async_job.name, "discard", "emails") == 2, what="2 discarded")
    wait_until(lambda: count(async_job.name, "complete", "emails") == 2, what="2 completed")
    # Outcomes are counted when sent; the gauges show them once committed, a moment later.
    wait_until(
        lambda: value(registry, "kathikon_queue_jobs", queue="default", state="completed") == 20
    )
    wait_until(
        lambda: value(registry, "kathikon_queue_jobs", queue="emails", state="discarded") == 2
    )
    assert value(registry, "kathikon_queue_jobs", queue="default", state="available") == 0
    assert (
        value(
            registry,
            "kathikon_job_duration_seconds_count",
            queue="default",
            worker=sync_job.name,
            outcome="complete",
        )
        == 20
    )


def test_two_apps_on_one_registry_are_summed(registry: CollectorRegistry) -> None:
    a = kathikon.Kathikon(None, queues={"default": 1})
    b = kathikon.Kathikon(None, queues={"default": 1, "other": 1})
    try:
        for app in (a, b):
            app.worker(name="w")(lambda job: None)
            prometheus.instrument(app, registry)
        prometheus.instrument(a, registry)  # again: no change
        a.insert("w", {})
        b.insert("w", {})
        b.insert("w", {}, queue="other")
        assert value(registry, "kathikon_queue_jobs", queue="default", state="available") == 2
        assert value(registry, "kathikon_queue_jobs", queue="other", state="available") == 1
        assert value(registry, "kathikon_jobs_inserted_total", queue="default", worker="w") == 2
    finally:
        a.close()
        b.close()


def test_uninstrument_unregisters_everything(
    app: kathikon.Kathikon, registry: CollectorRegistry
) -> None:
    prometheus.instrument(app, registry)
    assert prometheus.is_instrumented(registry)
    assert any(h.startswith("kathikon-contrib-prometheus") for h in telemetry.list_handlers())
    assert prometheus.uninstrument(registry) is True
    assert prometheus.uninstrument(registry) is False
    assert not prometheus.is_instrumented(registry)
    assert generate_latest(registry) == b""
    assert not any(h.startswith("kathikon-contrib-prometheus") for h in telemetry.list_handlers())
    prometheus.instrument(app, registry)  # and it can be instrumented again
    assert value(registry, "kathikon_queue_jobs", queue="default", state="available") == 0


def test_the_default_registry(app: kathikon.Kathikon) -> None:
    prometheus.instrument(app)
    try:
        app.worker(name="w")(lambda job: None)
        app.insert("w", {})
        assert REGISTRY.get_sample_value(
            "kathikon_queue_jobs", {"queue": "default", "state": "available"}
        )
        assert prometheus.is_instrumented()
    finally:
        assert prometheus.uninstrument() is True
    assert (
        REGISTRY.get_sample_value("kathikon_queue_jobs", {"queue": "default", "state": "available"})
        is None
    )


def test_instrument_checks_its_app(registry: CollectorRegistry) -> None:
    with pytest.raises(kathikon.ConfigurationError, match="kathikon.Kathikon"):
        prometheus.instrument("app", registry)  # type: ignore[arg-type]
    closed = kathikon.Kathikon(None)
    closed.close()
    with pytest.raises(kathikon.ConfigurationError, match="closed"):
        prometheus.instrument(closed, registry)
    assert not prometheus.is_instrumented(registry)
