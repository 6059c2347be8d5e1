"""OpenTelemetry spans and metrics for Kathikon jobs, built only on :mod:`kathikon.telemetry`.

Install with ``pip install 'kathikon[otel]'``, configure OpenTelemetry as usual, then::

    from kathikon.contrib import otel

    otel.instrument()                       # the global tracer and meter providers
    otel.instrument(tracer_provider=tp, meter_provider=mp)   # or explicit ones

**Spans.** Each insert call (``insert`` or ``insert_all``) makes a ``PRODUCER`` span named
``"{worker} send"`` (``"kathikon send"`` when a batch mixes workers), a child of the span
current where the insert was made. Each execution of a job makes a ``CONSUMER`` span named
``"{worker} process"``. It is the root of its own trace and carries a *link* to the span of the
insert that created the job, so a trace viewer leads from the insert to every attempt of the
job. Its attributes are ``kathikon.job.id``, ``.worker``, ``.queue``, ``.attempt``,
``.max_attempts``, ``.priority``, ``.tags``, ``.queue_time`` (seconds from when the job was due
to when it started) and ``.outcome`` (``complete``, ``retry``, ``discard``, ``cancel``,
``snooze``, ``interrupt`` or ``ignored``; see :func:`kathikon.contrib.outcome_of`), plus the
``messaging.system`` / ``messaging.destination.name`` / ``messaging.message.id`` /
``messaging.operation.type`` attributes of the messaging conventions. Its status is ``ERROR``
when the attempt failed (``retry``) or the job was discarded; the span runs from the
``job.start`` event for the measured ``duration`` of the worker call.

The link to the insert comes from memory: the insert span of each job inserted by this process
while instrumented (the newest 65,536 jobs still to run are remembered). For a job inserted
before a restart, the link comes from ``traceparent`` in the job's ``meta`` if it was put there
with :func:`trace_meta` (``app.insert(w, args, meta=otel.trace_meta())``); otherwise the span
has no link. (The insert event comes after the insert has committed, so in a started app a
job can start, or even finish, before it: a running span gets its link when the event comes,
and a finished span of a job inserted moments ago waits up to :data:`WAIT_SECONDS` for it
before it is ended, at the time it finished.)

The span is not made the current span while the worker runs (no telemetry event marks the
end of the worker call, so its context could not be restored in time): spans started by the
job's own code are not its children.

**Metrics** (attributes ``kathikon.job.queue``, ``kathikon.job.worker`` and, where noted,
``kathikon.job.outcome``):

- ``kathikon.jobs.inserted`` (counter, ``{job}``),
- ``kathikon.jobs.executed`` (counter, ``{job}``, with outcome): one per attempt,
- ``kathikon.job.duration`` (histogram, ``s``, with outcome): how long the worker call took,
- ``kathikon.job.queue_time`` (histogram, ``s``): from due to started, recorded at the start.

Queue depths are not events; read them with ``app.stats()`` (an observable gauge over it is a
few lines) or use :mod:`kathikon.contrib.prometheus`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

try:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.metrics import MeterProvider, get_meter
    from opentelemetry.trace import (
        Link,
        Span,
        SpanContext,
        SpanKind,
        Status,
        StatusCode,
        TracerProvider,
    )
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from opentelemetry.util.types import AttributeValue
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "kathikon.contrib.otel needs OpenTelemetry (opentelemetry-api and opentelemetry-sdk): "
        "pip install 'kathikon[otel]'"
    ) from exc

from .. import __version__, telemetry, vocabulary
from ..job import Job
from . import DURATION_BUCKETS, QUEUE_TIME_BUCKETS, TERMINAL_OUTCOMES, outcome_of

__all__ = ["HANDLER_ID", "instrument", "is_instrumented", "trace_meta", "uninstrument"]

#: The telemetry handler id this module attaches under.
HANDLER_ID = "kathikon-contrib-otel"

INSERT = ("kathikon", "job", "insert")
START = ("kathikon", "job", "start")
STOP = ("kathikon", "job", "stop")
RETRY = ("kathikon", "job", "retry")
DISCARD = ("kathikon", "job", "discard")

#: How many inserted jobs' span contexts are remembered for the insert → process link.
MAX_REMEMBERED_INSERTS = 65_536
#: How many started, not yet stopped, spans are kept; beyond it the oldest are ended.
MAX_OPEN_SPANS = 65_536
#: How long a stopped span waits for the insert or outcome event it needs before it is ended.
WAIT_SECONDS = 1.0

_log = logging.getLogger("kathikon.contrib.otel")
_ROOT = Context()  # an empty context: spans started in it are trace roots
_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_current: Optional[_Instrumentation] = None


@dataclass
class _Open:
    """A started span."""

    span: Span
    attempt: int
    start_ns: int
    linked: bool


@dataclass
class _Pending:
    """A stopped span not ended yet: it waits for the insert event of its job (the job ran
    before the insert call reported it), for its outcome event (``record_errors``), or both."""

    span: Span
    job: Job
    kind: str
    outcome: str
    end_ns: int
    wait_link: bool = False
    wait_error: bool = False
    text: Optional[str] = None
    since: float = 0.0


def instrument(
    tracer_provider: Optional[TracerProvider] = None,
    meter_provider: Optional[MeterProvider] = None,
    *,
    record_errors: bool = False,
) -> None:
    """Trace and measure every job of this process through OpenTelemetry.

    Attaches one :mod:`kathikon.telemetry` handler (id :data:`HANDLER_ID`) to the insert, start
    and stop events. Calling it again replaces the previous instrumentation. Telemetry is
    process-wide, so this covers every :class:`~kathikon.Kathikon` app in the process.

    Args:
        tracer_provider: where spans go; default: the global tracer provider.
        meter_provider: where metrics go; default: the global meter provider.
        record_errors: also put the error of a failed attempt on its span (an ``exception``
            span event with the type, message and traceback, and the message as the status
            description). The ``job.stop`` event does not carry the error, so this attaches to
            the ``job.retry`` and ``job.discard`` events too; while anyone listens to those,
            the background runner waits for each batch's outcomes to be committed before it
            reports them and claims again, which costs throughput when jobs are very short.
            Default ``False``: failed spans still get status ``ERROR``, without the message.
    """
    global _current
    new = _Instrumentation(tracer_provider, meter_provider, record_errors)
    events = [INSERT, START, STOP] + ([RETRY, DISCARD] if record_errors else [])
    with _lock:
        old, _current = _current, new
        if old is not None:
            telemetry.detach(HANDLER_ID)
        telemetry.attach(HANDLER_ID, events, new.handle)
    if old is not None:
        old.close()


def uninstrument() -> bool:
    """Detach from telemetry; returns whether it was instrumented.

    Spans of jobs still running are ended now, with ``kathikon.job.outcome`` ``"unknown"``.
    """
    global _current
    with _lock:
        old, _current = _current, None
        if old is not None:
            telemetry.detach(HANDLER_ID)
    if old is None:
        return False
    old.close()
    return True


def is_instrumented() -> bool:
    """Whether :func:`instrument` is in effect."""
    return _current is not None


def trace_meta(meta: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """``meta`` (a copy) plus the current span's W3C ``traceparent`` (and ``tracestate``).

    Pass it as a job's ``meta`` to keep the link from the job's spans to the inserting span
    across restarts: ``app.insert(worker, args, meta=otel.trace_meta())``. Without a current
    span, ``meta`` is returned unchanged (as a new dict).
    """
    out = dict(meta or {})
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    out.update(carrier)
    return out


def _link_from_meta(job: Job) -> Optional[Link]:
    try:
        meta = job.meta
    except ValueError:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("traceparent"), str):
        return None
    carrier = {k: meta[k] for k in ("traceparent", "tracestate") if isinstance(meta.get(k), str)}
    ctx = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
    return Link(ctx) if ctx.is_valid else None


def _recent(job: Job) -> bool:
    """Whether the job was inserted moments ago (so its insert event may still come)."""
    return abs(time.time() - job.inserted_at.timestamp()) < WAIT_SECONDS


def _ns(seconds: Any) -> int:
    try:
        return max(0, round(float(seconds) * 1e9))
    except (TypeError, ValueError):
        return 0


def _exception_attributes(text: str) -> dict[str, AttributeValue]:
    """``exception.*`` attributes from a formatted traceback (or a plain message)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    attrs: dict[str, AttributeValue] = {"exception.stacktrace": text}
    head, sep, message = last.partition(": ")
    if sep and head.replace(".", "").replace("_", "").isalnum() and " " not in head:
        attrs["exception.type"] = head
        attrs["exception.message"] = message
    elif last and " " not in last and last.replace(".", "").replace("_", "").isalnum():
        attrs["exception.type"] = last  # an exception raised without a message
        attrs["exception.message"] = ""
    else:
        attrs["exception.message"] = last
    return attrs


class _Instrumentation:
    def __init__(
        self,
        tracer_provider: Optional[TracerProvider],
        meter_provider: Optional[MeterProvider],
        record_errors: bool,
    ) -> None:
        self.tracer = trace.get_tracer(__name__, __version__, tracer_provider)
        meter = get_meter(__name__, __version__, meter_provider)
        self.record_errors = record_errors
        self.inserted = meter.create_counter(
            "kathikon.jobs.inserted", unit="{job}", description="Jobs inserted."
        )
        self.executed = meter.create_counter(
            "kathikon.jobs.executed",
            unit="{job}",
            description="Job executions (attempts), by outcome.",
        )
        self.duration = meter.create_histogram(
            "kathikon.job.duration",
            unit="s",
            description="How long the worker call of one attempt took.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.queue_time = meter.create_histogram(
            "kathikon.job.queue_time",
            unit="s",
            description="From when a job was due to when its attempt started.",
            explicit_bucket_boundaries_advisory=QUEUE_TIME_BUCKETS,
        )
        self._lock = threading.Lock()
        self._inserts: OrderedDict[int, SpanContext] = OrderedDict()
        self._open: OrderedDict[int, _Open] = OrderedDict()
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._timer: Optional[threading.Timer] = None
        self._closed = False

    # -- dispatch --------------------------------------------------------------------------

    def handle(
        self,
        event: tuple[str, ...],
        measurements: Mapping[str, Any],
        metadata: Mapping[str, Any],
    ) -> None:
        try:
            self._dispatch(event, measurements, metadata)
        except Exception:  # keep tracing the other jobs rather than being detached
            _log.exception("kathikon.contrib.otel failed to handle %s", event)

    def _dispatch(
        self,
        event: tuple[str, ...],
        measurements: Mapping[str, Any],
        metadata: Mapping[str, Any],
    ) -> None:
        if event == START:
            self._start(metadata["job"], measurements)
        elif event == STOP:
            self._stop(metadata["job"], metadata.get("outcome"), measurements)
        elif event == INSERT:
            self._insert(metadata["jobs"], measurements)
        elif event in (RETRY, DISCARD):
            text = metadata.get("error") if event == RETRY else metadata.get("reason")
            self._outcome_event(metadata["job"], text if isinstance(text, str) else None)

    def close(self) -> None:
        """End what is still open (jobs running when uninstrumented)."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            opened = list(self._open.values())
            pending = list(self._pending.values())
            self._open.clear()
            self._pending.clear()
            self._inserts.clear()
        for entry in opened:
            entry.span.set_attribute("kathikon.job.outcome", "unknown")
            entry.span.end()
        for waiting in pending:
            self._finish(waiting)

    # -- insert ----------------------------------------------------------------------------

    def _insert(self, jobs: Sequence[Job], measurements: Mapping[str, Any]) -> None:
        if not jobs:
            return
        end = time.time_ns()
        workers = {job.worker for job in jobs}
        queues = {job.queue for job in jobs}
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "kathikon",
            "messaging.operation.type": "send",
            "kathikon.insert.count": len(jobs),
        }
        if len(jobs) > 1:
            attributes["messaging.batch.message_count"] = len(jobs)
        else:
            attributes["kathikon.job.id"] = jobs[0].id
            attributes["messaging.message.id"] = str(jobs[0].id)
        if len(queues) == 1:
            (queue,) = queues
            attributes["kathikon.job.queue"] = queue
            attributes["messaging.destination.name"] = queue
        if len(workers) == 1:
            (worker,) = workers
            attributes["kathikon.job.worker"] = worker
            name = f"{worker} send"
        else:
            name = "kathikon send"
        span = self.tracer.start_span(
            name,
            kind=SpanKind.PRODUCER,
            attributes=attributes,
            start_time=end - _ns(measurements.get("duration", 0.0)),
        )
        span.end(end)
        ctx = span.get_span_context()
        if ctx.is_valid:
            self._remember_insert(jobs, ctx)
        for (queue, worker), count in Tally((job.queue, job.worker) for job in jobs).items():
            self.inserted.add(count, {"kathikon.job.queue": queue, "kathikon.job.worker": worker})

    def _remember_insert(self, jobs: Sequence[Job], ctx: SpanContext) -> None:
        """Keep the insert span for the jobs' spans to link to. In a started app a job can
        start, or even finish, before its insert event arrives: link those now."""
        late: list[Span] = []
        done: list[_Pending] = []
        with self._lock:
            for job in jobs:
                self._inserts[job.id] = ctx
                self._inserts.move_to_end(job.id)
            while len(self._inserts) > MAX_REMEMBERED_INSERTS:
                self._inserts.popitem(last=False)
            if self._open or self._pending:
                for job in jobs:
                    running = self._open.get(job.id)
                    if running is not None and not running.linked:
                        running.linked = True
                        late.append(running.span)
                    stopped = self._pending.get(job.id)
                    if stopped is not None and stopped.wait_link:
                        stopped.wait_link = False
                        late.append(stopped.span)
                        if not stopped.wait_error:
                            done.append(self._pending.pop(job.id))
        for span in late:
            span.add_link(ctx)
        for stopped in done:
            self._finish(stopped)

    # -- execution -------------------------------------------------------------------------

    def _open_span(self, job: Job, queue_time: Any, start_ns: int) -> tuple[Span, bool]:
        with self._lock:
            inserted = self._inserts.get(job.id)
        link = Link(inserted) if inserted is not None else _link_from_meta(job)
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "kathikon",
            "messaging.operation.type": "process",
            "messaging.destination.name": job.queue,
            "messaging.message.id": str(job.id),
            "kathikon.job.id": job.id,
            "kathikon.job.worker": job.worker,
            "kathikon.job.queue": job.queue,
            "kathikon.job.attempt": job.attempt,
            "kathikon.job.max_attempts": job.max_attempts,
            "kathikon.job.priority": job.priority,
            "kathikon.job.queue_time": float(queue_time or 0.0),
        }
        if job.tags:
            attributes["kathikon.job.tags"] = list(job.tags)
        span = self.tracer.start_span(
            f"{job.worker} process",
            context=_ROOT,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=[link] if link is not None else None,
            start_time=start_ns,
        )
        return span, link is not None

    def _start(self, job: Job, measurements: Mapping[str, Any]) -> None:
        start_ns = time.time_ns()
        queue_time = measurements.get("queue_time", 0.0)
        span, linked = self._open_span(job, queue_time, start_ns)
        with self._lock:
            previous = self._open.pop(job.id, None)
            self._open[job.id] = _Open(span, job.attempt, start_ns, linked)
            evicted = []
            while len(self._open) > MAX_OPEN_SPANS:
                evicted.append(self._open.popitem(last=False)[1])
        if previous is not None:  # an earlier attempt that never stopped (e.g. cancelled)
            evicted.append(previous)
        for entry in evicted:
            entry.span.set_attribute("kathikon.job.outcome", "unknown")
            entry.span.end()
        self.queue_time.record(
            float(queue_time or 0.0),
            {"kathikon.job.queue": job.queue, "kathikon.job.worker": job.worker},
        )

    def _stop(self, job: Job, kind: Optional[str], measurements: Mapping[str, Any]) -> None:
        duration = measurements.get("duration", 0.0)
        outcome = outcome_of(job, kind)
        with self._lock:
            entry = self._open.get(job.id)
            if entry is not None and entry.attempt == job.attempt:
                del self._open[job.id]
            else:
                entry = None
            if outcome in TERMINAL_OUTCOMES:
                self._inserts.pop(job.id, None)
        if entry is None:  # no start event seen (instrumented mid-run, unregistered worker)
            start_ns = time.time_ns() - _ns(duration)
            span, linked = self._open_span(job, measurements.get("queue_time", 0.0), start_ns)
        else:
            span, start_ns, linked = entry.span, entry.start_ns, entry.linked
        span.set_attribute("kathikon.job.outcome", outcome)
        pending = _Pending(
            span,
            job,
            kind or "",
            outcome,
            start_ns + _ns(duration),
            # The insert event may still be on its way (a started app ran the job before the
            # insert call reported it): wait a moment for it, for the link.
            wait_link=not linked and job.attempt == 1 and _recent(job),
            # The retry/discard event with the error follows this one (in the same call).
            wait_error=self.record_errors and outcome in (vocabulary.RETRY, vocabulary.DISCARD),
            since=time.monotonic(),
        )
        if pending.wait_link or pending.wait_error:
            self._hold(pending)
        else:
            self._finish(pending)
        attrs = {
            "kathikon.job.queue": job.queue,
            "kathikon.job.worker": job.worker,
            "kathikon.job.outcome": outcome,
        }
        self.executed.add(1, attrs)
        self.duration.record(float(duration or 0.0), attrs)

    def _outcome_event(self, job: Job, text: Optional[str]) -> None:
        with self._lock:
            pending = self._pending.get(job.id)
            if pending is None or not pending.wait_error or pending.job.attempt != job.attempt:
                return
            pending.wait_error = False
            pending.text = text
            if pending.wait_link:
                return  # ended by the insert event or the sweep
            del self._pending[job.id]
        self._finish(pending)

    # -- spans waiting for an event --------------------------------------------------------

    def _hold(self, pending: _Pending) -> None:
        with self._lock:
            if self._closed:
                replaced = [pending]
            else:
                replaced = [p for p in [self._pending.pop(pending.job.id, None)] if p]
                self._pending[pending.job.id] = pending
                while len(self._pending) > MAX_OPEN_SPANS:
                    replaced.append(self._pending.popitem(last=False)[1])
                if self._timer is None:
                    self._timer = threading.Timer(WAIT_SECONDS, self._sweep)
                    self._timer.daemon = True
                    self._timer.start()
        for stale in replaced:
            self._finish(stale)

    def _sweep(self) -> None:
        """End the spans that waited long enough for an event that did not come."""
        now = time.monotonic()
        with self._lock:
            self._timer = None
            due = [k for k, p in self._pending.items() if now - p.since >= WAIT_SECONDS]
            expired = [self._pending.pop(k) for k in due]
            if self._pending and not self._closed:
                self._timer = threading.Timer(WAIT_SECONDS, self._sweep)
                self._timer.daemon = True
                self._timer.start()
        for pending in expired:
            self._finish(pending)

    def _finish(self, pending: _Pending) -> None:
        span, job, outcome, text = pending.span, pending.job, pending.outcome, pending.text
        if outcome in (vocabulary.RETRY, vocabulary.DISCARD):
            if pending.kind == vocabulary.FAIL:
                description = f"attempt {job.attempt} of {job.max_attempts} failed" + (
                    "; the job was discarded" if outcome == vocabulary.DISCARD else ""
                )
                if text:
                    exception = _exception_attributes(text)
                    span.add_event("exception", exception, timestamp=pending.end_ns)
                    description = str(exception.get("exception.type", "")) or description
                    message = exception.get("exception.message")
                    if message:
                        description = f"{description}: {message}"
            else:
                description = f"discarded: {text}" if text else "discarded"
            span.set_status(Status(StatusCode.ERROR, description[:1024]))
        span.end(pending.end_ns)
