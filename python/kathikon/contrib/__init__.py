"""Optional integrations built on :mod:`kathikon.telemetry` events.

- :mod:`kathikon.contrib.otel` — OpenTelemetry spans and metrics (``pip install 'kathikon[otel]'``).
- :mod:`kathikon.contrib.prometheus` — Prometheus metrics (``pip install 'kathikon[prometheus]'``).

Importing this package imports neither library; each submodule needs its own extra.
"""

from __future__ import annotations

from typing import Optional

from ..job import Job
from ..vocabulary import CANCEL, COMPLETE, DISCARD, FAIL, RETRY

#: Outcomes that end a job: it will not run again unless retried by hand.
TERMINAL_OUTCOMES = frozenset({COMPLETE, CANCEL, DISCARD})

#: Default histogram bucket bounds for job durations, seconds.
DURATION_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

#: Default histogram bucket bounds for queue time (due → started), seconds.
QUEUE_TIME_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    21600.0,
    86400.0,
)


def outcome_of(job: Job, kind: Optional[str]) -> str:
    """The outcome of one attempt from a ``("kathikon", "job", "stop")`` event.

    The stop event's ``outcome`` is what the worker produced (``complete``, ``fail``,
    ``snooze``, ``cancel``, ``discard``), ``interrupt`` (handed back by a shutdown whose grace
    period ran out) or ``ignored`` (the store refused a stale result, e.g. the job was
    cancelled while it ran). A ``fail`` is reported here as ``retry``, or as
    ``discard`` when it used the job's last attempt (the engine then discards the job), so the
    values match the outcome events' names.
    """
    if kind == FAIL:
        return DISCARD if job.attempt >= job.max_attempts else RETRY
    return kind or "unknown"
