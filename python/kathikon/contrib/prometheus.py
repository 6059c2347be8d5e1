"""Prometheus metrics for Kathikon, built on :mod:`kathikon.telemetry` and ``app.stats()``.

Install with ``pip install 'kathikon[prometheus]'``, then::

    import prometheus_client
    from kathikon.contrib import prometheus

    prometheus.instrument(app)              # into prometheus_client's default REGISTRY
    prometheus_client.start_http_server(9100)

Metrics (the event or call each comes from in brackets):

- ``kathikon_jobs_inserted_total{queue, worker}``: counter (``job.insert``).
- ``kathikon_jobs_executed_total{queue, worker, outcome}``: counter of attempts (``job.stop``).
- ``kathikon_job_duration_seconds{queue, worker, outcome}``: histogram (``job.stop``).
- ``kathikon_job_queue_time_seconds{queue, worker}``: histogram (``job.start``).
- ``kathikon_queue_jobs{queue, state}``: gauge (``app.stats()``).
- ``kathikon_queue_oldest_available_age_seconds{queue}``: gauge (``app.oldest_available()``).

``outcome`` is ``complete``, ``retry``, ``discard``, ``cancel``, ``snooze``, ``interrupt`` or
``ignored`` (see :func:`kathikon.contrib.outcome_of`). ``duration`` is how long the worker
call took; ``queue_time`` runs from when the job was due to when its attempt started.
The two gauges are read from ``app.stats()`` and ``app.oldest_available()`` by a custom
collector at every scrape, so they are always current (as of the store's last commit): jobs
per queue for every state (``available`` is the queue depth), and how long the oldest available
job of each queue has waited (0 when none waits).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.metrics_core import Metric
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "kathikon.contrib.prometheus needs prometheus-client: pip install 'kathikon[prometheus]'"
    ) from exc

from .. import telemetry
from ..app import Kathikon
from ..errors import ConfigurationError, KathikonError
from . import DURATION_BUCKETS, QUEUE_TIME_BUCKETS, outcome_of

__all__ = ["instrument", "is_instrumented", "uninstrument"]

INSERT = ("kathikon", "job", "insert")
START = ("kathikon", "job", "start")
STOP = ("kathikon", "job", "stop")

_log = logging.getLogger("kathikon.contrib.prometheus")
_lock = threading.Lock()
# id(registry) → its instrumentation
_instrumented: dict[int, _Instrumentation] = {}


def instrument(
    app: Kathikon,
    registry: Optional[CollectorRegistry] = None,
    *,
    duration_buckets: Sequence[float] = DURATION_BUCKETS,
    queue_time_buckets: Sequence[float] = QUEUE_TIME_BUCKETS,
) -> None:
    """Export Kathikon's metrics to ``registry`` (default: ``prometheus_client.REGISTRY``).

    Registers the counters and histograms, fed by a :mod:`kathikon.telemetry` handler, and a
    collector that reads ``app.stats()`` at each scrape for the queue gauges.

    Telemetry is process-wide, so the counters and histograms count the jobs of every app in
    the process. Instrumenting a second app on the same registry adds its stats to the gauges
    (summed per queue and state); instrumenting the same app again does nothing. An app that
    is closed drops out of the gauges.

    Args:
        app: the app whose queues the gauges report.
        registry: where to register; default: the global ``prometheus_client.REGISTRY``.
        duration_buckets: histogram bucket bounds for job durations, seconds (used when the
            registry is first instrumented).
        queue_time_buckets: histogram bucket bounds for queue time, seconds (likewise).

    Raises:
        ConfigurationError: ``app`` is not a :class:`~kathikon.Kathikon` app, or is closed.
    """
    if not isinstance(app, Kathikon):
        raise ConfigurationError(f"instrument() needs a kathikon.Kathikon app, got {app!r}")
    if app.closed:
        raise ConfigurationError(f"{app!r} is closed; instrument an open app")
    registry = REGISTRY if registry is None else registry
    with _lock:
        inst = _instrumented.get(id(registry))
        if inst is None:
            inst = _Instrumentation(registry, duration_buckets, queue_time_buckets)
            _instrumented[id(registry)] = inst
    inst.collector.add(app)


def uninstrument(registry: Optional[CollectorRegistry] = None) -> bool:
    """Unregister the metrics and collector from ``registry`` (default: the global one) and
    detach from telemetry; returns whether it was instrumented."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        inst = _instrumented.pop(id(registry), None)
    if inst is None:
        return False
    inst.close()
    return True


def is_instrumented(registry: Optional[CollectorRegistry] = None) -> bool:
    """Whether :func:`instrument` is in effect for ``registry`` (default: the global one)."""
    return id(REGISTRY if registry is None else registry) in _instrumented


class _StatsCollector:
    """Queue gauges, read from the apps at each scrape."""

    def __init__(self) -> None:
        self._apps: list[Kathikon] = []
        self._lock = threading.Lock()

    def add(self, app: Kathikon) -> None:
        with self._lock:
            if all(a is not app for a in self._apps):
                self._apps.append(app)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        jobs = GaugeMetricFamily(
            "kathikon_queue_jobs",
            "Jobs per queue and state as of the store's last commit (available = queue depth).",
            labels=["queue", "state"],
        )
        age = GaugeMetricFamily(
            "kathikon_queue_oldest_available_age_seconds",
            "How long the oldest available job of the queue has waited since it became due "
            "(0 when none is available).",
            labels=["queue"],
        )
        return jobs, age

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        jobs, age = self._families()
        with self._lock:
            self._apps = [a for a in self._apps if not a.closed]
            apps = list(self._apps)
        counts: Tally[tuple[str, str]] = Tally()
        ages: dict[str, float] = {}
        for app in apps:
            try:
                stats = app.stats()
                now = app.now()
                for queue, states in stats.items():
                    for state, count in states.items():
                        counts[(queue, state)] += count
                    waited = 0.0
                    if states.get("available"):
                        oldest = app.oldest_available(queue)
                        if oldest is not None:
                            waited = max(0.0, (now - oldest).total_seconds())
                    ages[queue] = max(ages.get(queue, 0.0), waited)
            except KathikonError:  # closed meanwhile, or the store failed: skip this app
                _log.debug("reading the stats of %r failed", app, exc_info=True)
        for (queue, state), count in sorted(counts.items()):
            jobs.add_metric([queue, state], count)
        for queue, waited in sorted(ages.items()):
            age.add_metric([queue], waited)
        return [jobs, age]


class _Instrumentation:
    def __init__(
        self,
        registry: CollectorRegistry,
        duration_buckets: Sequence[float],
        queue_time_buckets: Sequence[float],
    ) -> None:
        self.registry = registry
        self.handler_id = f"kathikon-contrib-prometheus-{id(registry)}"
        self.inserted = Counter(
            "kathikon_jobs_inserted",
            "Jobs inserted.",
            ["queue", "worker"],
            registry=registry,
        )
        self.executed = Counter(
            "kathikon_jobs_executed",
            "Job executions (attempts), by outcome.",
            ["queue", "worker", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "kathikon_job_duration_seconds",
            "How long the worker call of one attempt took.",
            ["queue", "worker", "outcome"],
            registry=registry,
            buckets=list(duration_buckets),
        )
        self.queue_time = Histogram(
            "kathikon_job_queue_time_seconds",
            "From when a job was due to when its attempt started.",
            ["queue", "worker"],
            registry=registry,
            buckets=list(queue_time_buckets),
        )
        self._stopped: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._started: dict[tuple[str, str], Histogram] = {}
        self.collector = _StatsCollector()
        registry.register(self.collector)
        telemetry.attach(self.handler_id, [INSERT, START, STOP], self.handle)

    def handle(
        self,
        event: tuple[str, ...],
        measurements: Mapping[str, Any],
        metadata: Mapping[str, Any],
    ) -> None:
        try:
            if event == STOP:
                job = metadata["job"]
                key = (job.queue, job.worker, outcome_of(job, metadata.get("outcome")))
                stopped = self._stopped.get(key)
                if stopped is None:  # labels() is slow enough to matter per job: keep children
                    stopped = (self.executed.labels(*key), self.duration.labels(*key))
                    self._stopped[key] = stopped
                stopped[0].inc()
                stopped[1].observe(float(measurements.get("duration") or 0.0))
            elif event == START:
                job = metadata["job"]
                started = self._started.get((job.queue, job.worker))
                if started is None:
                    started = self.queue_time.labels(job.queue, job.worker)
                    self._started[(job.queue, job.worker)] = started
                started.observe(float(measurements.get("queue_time") or 0.0))
            elif event == INSERT:
                pairs = Tally((job.queue, job.worker) for job in metadata["jobs"])
                for (queue, worker), count in pairs.items():
                    self.inserted.labels(queue, worker).inc(count)
        except Exception:  # keep counting the other jobs rather than being detached
            _log.exception("kathikon.contrib.prometheus failed to handle %s", event)

    def close(self) -> None:
        telemetry.detach(self.handler_id)
        self.registry.unregister(self.collector)
        self.registry.unregister(self.inserted)
        self.registry.unregister(self.executed)
        self.registry.unregister(self.duration)
        self.registry.unregister(self.queue_time)
