"""app.stats(), queue_depths(), oldest_available() and the manual clock."""

from __future__ import annotations

from datetime import timedelta

import kathikon


def test_stats_count_every_state_per_queue(app: kathikon.Kathikon) -> None:
    @app.worker
    def ok(job: kathikon.Job) -> None:
        pass

    @app.worker(queue="emails", max_attempts=1)
    def boom(job: kathikon.Job) -> None:
        raise RuntimeError("no")

    for _ in range(3):
        ok.insert()
    ok.insert(schedule_in=3600)
    boom.insert()
    assert app.stats()["default"]["available"] == 3
    assert app.queue_depths() == {"default": 3, "emails": 1}
    app.drain()
    stats = app.stats()
    assert stats["default"] == {
        "scheduled": 1,
        "available": 0,
        "executing": 0,
        "retryable": 0,
        "completed": 3,
        "cancelled": 0,
        "discarded": 0,
    }
    assert stats["emails"]["discarded"] == 1
    assert app.queue_depths() == {"default": 0, "emails": 0}


def test_oldest_available_is_the_longest_waiting(app: kathikon.Kathikon) -> None:
    @app.worker
    def ok(job: kathikon.Job) -> None:
        pass

    assert app.oldest_available("default") is None
    first = ok.insert(priority=9)
    ok.insert(priority=0)
    assert app.oldest_available("default") == first.scheduled_at


def test_manual_clock_moves_only_when_told() -> None:
    app = kathikon.Kathikon(None, clock="manual")
    try:

        @app.worker
        def ok(job: kathikon.Job) -> None:
            pass

        start = app.now()
        job = ok.insert(schedule_in=timedelta(hours=1))
        assert app.drain() == {}
        assert app.now() == start
        app.advance_clock(3599)
        assert app.get(job.id).state is kathikon.JobState.SCHEDULED
        app.advance_clock(1)
        assert app.get(job.id).state is kathikon.JobState.AVAILABLE
        assert app.drain() == {"completed": 1}
        assert app.get(job.id).completed_at == start + timedelta(hours=1)
    finally:
        app.close()
