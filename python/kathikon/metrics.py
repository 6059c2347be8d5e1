"""Metrics history: per queue and per minute, the jobs that ended and how long attempts took.

The engine counts each ended attempt in memory and writes one record per (queue, minute)
when the minute is over (and when read, and when the store closes); records are kept for 24
hours. A crash of the process that owns the store loses the counts it had not written yet:
at most the running minute's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional, Union

from ._native import Engine
from .errors import ConfigurationError
from .job import from_micros
from .options import shown

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class MetricPoint:
    """One queue's minute: jobs ``completed``; attempts ``failed`` with a retry left; jobs
    ``discarded`` (attempts exhausted, or discarded by their worker) and ``cancelled``; and
    attempt durations in seconds at the 50th, 95th and 99th percentiles (within about 6%;
    ``None`` when no attempt ended in the minute). ``minute`` is its start, an aware UTC
    datetime on the store's clock."""

    queue: str
    minute: datetime
    completed: int
    failed: int
    discarded: int
    cancelled: int
    p50: Optional[float]
    p95: Optional[float]
    p99: Optional[float]


def _seconds(us: Optional[int]) -> Optional[float]:
    return None if us is None else us / 1_000_000


def _since_micros(engine: Engine, since: Union[datetime, timedelta, None]) -> Optional[int]:
    if since is None:
        return None
    if isinstance(since, timedelta):
        return int(engine.now() - since // _MICROSECOND)
    if isinstance(since, datetime):
        if since.tzinfo is None or since.utcoffset() is None:
            raise ConfigurationError(
                f"metrics(since={since.isoformat()}): the datetime is naive (no timezone); "
                "pass an aware one, e.g. datetime.now(timezone.utc) - timedelta(hours=1), "
                "or a timedelta such as timedelta(hours=1)"
            )
        return int((since - _EPOCH) // _MICROSECOND)
    raise ConfigurationError(
        f"metrics(since={shown(since)}): pass an aware datetime, a timedelta (that long ago), "
        "or None (the last 24 hours)"
    )


def read(
    engine: Engine,
    since: Union[datetime, timedelta, None],
    queue: Optional[str],
) -> list[MetricPoint]:
    """The stored minutes from ``since``'s minute on, of ``queue`` (all when ``None``), oldest
    first; what ended before the call counts, the running minute's too."""
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise ConfigurationError(f"metrics(queue={shown(queue)}): pass a queue name (a str)")
    rows = engine.metrics(_since_micros(engine, since), queue)
    return [
        MetricPoint(
            queue=q,
            minute=from_micros(minute),
            completed=completed,
            failed=failed,
            discarded=discarded,
            cancelled=cancelled,
            p50=_seconds(p50),
            p95=_seconds(p95),
            p99=_seconds(p99),
        )
        for q, minute, completed, failed, discarded, cancelled, p50, p95, p99 in rows
    ]
