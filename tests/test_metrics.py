"""Metrics history through the public API: ``app.metrics()`` per queue and minute of the
engine clock (``clock="manual"``, so durations are exact), its filters, 24-hour expiry, the
counts kept across a close, read from a client of another process's store, and bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import kathikon
from kathikon import ConfigurationError, MetricPoint

MINUTE = timedelta(minutes=1)


def manual_app(path: Any = None) -> kathikon.Kathikon:
    """An app on the manual clock, at the start of a minute, whose jobs take the seconds
    they are given (``takes``) on that clock, or fail (``fails``)."""
    app = kathikon.Kathikon(path, clock="manual", queues={"default": 1, "other": 1})
    now = app.now()
    app.advance_clock(60 - now.second - now.microsecond / 1e6)

    @app.worker(name="takes", queue="default")
    def takes(job: kathikon.Job) -> None:
        app.advance_clock(job.args["seconds"])

    @app.worker(name="fails", queue="default", max_attempts=2)
    def fails(job: kathikon.Job) -> None:
        app.advance_clock(0.5)
        raise RuntimeError("boom")

    return app


def near(got: float | None, want: float) -> bool:
    """Within the histogram's 6.25%."""
    return got is not None and abs(got - want) <= want / 16


def test_counts_and_percentiles_per_queue_and_minute_on_the_manual_clock() -> None:
    app = manual_app()
    start = app.now()
    # One at a time: a drain acks the attempts it ran when it is done, and a duration runs
    # from the claim to the ack.
    for ms in range(1, 101):
        app.insert("takes", {"seconds": ms / 1000})
        app.drain()
    app.insert("takes", {"seconds": 0.25}, queue="other")
    app.drain()
    app.insert("fails")
    app.drain()
    cancelled = app.insert("takes", {"seconds": 1}, schedule_in=3600)
    app.cancel(cancelled)
    app.drain(with_scheduled=start + timedelta(seconds=59))  # the retry: discarded
    assert start.second == 0 and app.now() < start + MINUTE

    points = app.metrics()
    assert [(p.queue, p.minute) for p in points] == [("default", start), ("other", start)]
    default, other = points
    assert isinstance(default, MetricPoint) and default.minute.tzinfo is not None
    counts = (default.completed, default.failed, default.discarded, default.cancelled)
    assert counts == (100, 1, 1, 1)
    # 1 ms … 100 ms and two 0.5 s attempts, 102 in all; nearest rank: the 51st, the 97th
    # and the 101st.
    assert near(default.p50, 0.051) and near(default.p95, 0.097) and near(default.p99, 0.5)
    assert (other.completed, other.failed) == (1, 0)
    assert near(other.p50, 0.25) and other.p50 == other.p95 == other.p99

    # The next minute is a point of its own; `since` and `queue` choose among them.
    app.advance_clock((start + MINUTE - app.now()).total_seconds())
    app.insert("takes", {"seconds": 2})
    app.drain()
    later = app.metrics(since=start + MINUTE)
    assert [(p.queue, p.minute, p.completed) for p in later] == [("default", start + MINUTE, 1)]
    assert near(later[0].p50, 2.0)
    assert app.metrics(since=timedelta(seconds=1)) == later
    assert [p.minute for p in app.metrics(queue="default")] == [start, start + MINUTE]
    assert app.metrics(queue="other") == [other]
    assert app.metrics(queue="nobody") == []
    app.close()


def test_points_are_kept_across_a_close_and_for_24_hours(tmp_path: Path) -> None:
    path = tmp_path / "store.kathikon"
    app = manual_app(path)
    start = app.now()
    app.insert("takes", {"seconds": 1})
    app.drain()
    at = app.now()
    app.close()  # writes the running minute

    app = kathikon.Kathikon(path, clock="manual")
    app.advance_clock((at - app.now()).total_seconds())
    [point] = app.metrics()
    assert (point.minute, point.completed) == (start, 1)
    app.advance_clock(24 * 3600)
    assert app.metrics() == [point], "kept for 24 hours after its minute"
    app.advance_clock(60)
    assert app.metrics() == [], "gone once 24 hours have passed"
    app.close()


OWNER = textwrap.dedent(
    """
    import sys, time
    import kathikon
    app = kathikon.Kathikon(sys.argv[1], queues={"default": 1})
    app.metrics()
    print("owner", flush=True)
    time.sleep(120)
    """
)


def test_a_client_reads_the_owners_counts(store_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", OWNER, str(store_path)], stdout=subprocess.PIPE, text=True
    ) as owner:
        try:
            assert owner.stdout is not None and owner.stdout.readline().strip() == "owner"
            app = kathikon.Kathikon(store_path, queues={"default": 1})
            assert app.role == "client", app.role

            @app.worker(name="naps")
            def naps(job: kathikon.Job) -> None:
                import time

                time.sleep(0.05)

            for _ in range(3):
                app.insert("naps")
            assert app.drain() == {"completed": 3}
            [point] = app.metrics(queue="default")
            assert point.completed == 3
            assert point.p50 is not None and 0.05 * 15 / 16 <= point.p50 < 30
            app.close()
        finally:
            owner.kill()
            owner.wait(10)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"since": datetime(2026, 1, 1)}, "naive"),
        ({"since": "yesterday"}, "'yesterday'"),
        ({"since": 3600}, "3600"),
        ({"queue": 7}, "7"),
        ({"queue": ""}, "''"),
    ],
)
def test_bad_arguments_are_refused_naming_the_value(kwargs: dict[str, Any], named: str) -> None:
    app = kathikon.Kathikon(None)
    with pytest.raises(ConfigurationError, match="metrics") as raised:
        app.metrics(**kwargs)
    assert named in str(raised.value)
    app.close()


def test_an_aware_since_in_any_zone_is_the_same_instant() -> None:
    app = manual_app()
    app.insert("takes", {"seconds": 1})
    app.drain()
    minute = app.metrics()[0].minute
    zone = timezone(timedelta(hours=5))
    assert app.metrics(since=minute.astimezone(zone)) == app.metrics()
    assert app.metrics(since=minute + MINUTE) == []
    app.close()
