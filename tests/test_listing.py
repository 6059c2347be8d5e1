"""``app.jobs`` filters, order and cursors, ``app.count``, and the bulk actions
(``cancel_jobs``, ``retry_jobs``, ``delete_jobs``), checked against a model of the jobs the
test inserted, on a real store file; bad filter values refused by name."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import kathikon
from kathikon import InvalidJobError, JobPage, JobState

S = JobState


def register(app: kathikon.Kathikon, *names: str) -> None:
    """Workers of these names (the tests insert jobs, nothing runs them)."""
    for name in names:
        app.worker(name=name)(lambda job: None)


def fill(app: kathikon.Kathikon, n: int) -> list[kathikon.Job]:
    """``n`` jobs of two queues and two workers, tagged and with nested args."""
    register(app, "send", "build")
    out = []
    for i in range(n):
        queue = "default" if i % 2 == 0 else "emails"
        worker = "send" if i % 3 == 0 else "build"
        tags = ["all", "red" if i % 4 == 0 else "blue"]
        args = {"user": {"id": i % 5, "roles": ["x", f"r{i % 2}"]}, "n": i}
        out.append(app.insert(worker, args, queue=queue, tags=tags))
    return out


def ids(jobs: list[kathikon.Job]) -> list[int]:
    return [j.id for j in jobs]


def test_a_page_is_a_list_with_a_cursor_that_walks_every_job_in_both_orders(
    app: kathikon.Kathikon,
) -> None:
    every = ids(fill(app, 23))
    for order, want in (("asc", every), ("desc", every[::-1])):
        seen: list[int] = []
        cursor = None
        while True:
            page = app.jobs(limit=5, order=order, cursor=cursor)  # type: ignore[arg-type]
            assert isinstance(page, JobPage) and isinstance(page, list)
            seen += ids(page)
            cursor = page.cursor
            if cursor is None:
                break
            assert len(page) == 5
        assert seen == want
    # Today's `after=` keeps working, and so do plain-list callers.
    assert ids(app.jobs(after=every[2], limit=2)) == every[3:5]
    assert app.jobs(limit=100).cursor is None


def test_filters_match_the_model_and_count_agrees(app: kathikon.Kathikon) -> None:
    jobs = fill(app, 40)
    executing = app._engine.claim("default", 2, 0.0)
    running = {j.id for j in executing}
    state_of = {j.id: (S.EXECUTING if j.id in running else j.state) for j in jobs}

    def check(want: list[int], **filters: Any) -> None:
        assert ids(app.jobs(limit=1000, **filters)) == want, filters
        assert ids(app.jobs(limit=1000, order="desc", **filters)) == want[::-1], filters
        assert app.count(**filters) == len(want), filters

    check([j.id for j in jobs])
    check([j.id for j in jobs if j.queue == "emails"], queue="emails")
    check(sorted(running), state="executing")
    check(
        [j.id for j in jobs if state_of[j.id] in (S.EXECUTING, S.AVAILABLE)],
        state=["executing", S.AVAILABLE],
    )
    check([j.id for j in jobs if j.worker == "send" and "red" in j.tags], worker="send", tags="red")
    check([j.id for j in jobs if "red" in j.tags], tags=["all", "red"])
    check([j.id for j in jobs if j.args["user"]["id"] == 3], args={"user": {"id": 3}})
    check([j.id for j in jobs if "r1" in j.args["user"]["roles"]], args={"user": {"roles": ["r1"]}})
    check([], args={"user": {"id": 3}, "n": 0})
    check([j.id for j in jobs], meta={})
    middle = jobs[20].inserted_at
    check([j.id for j in jobs if j.inserted_at >= middle], inserted_after=middle)
    check([j.id for j in jobs if j.inserted_at < middle], inserted_before=middle.timestamp())
    check([], finished_after=0)


def test_finished_time_ranges_select_by_when_jobs_finished(store_path: Any) -> None:
    app = kathikon.Kathikon(store_path, clock="manual")
    try:
        register(app, "w")
        first, second, third = (app.insert("w", {"i": i}) for i in range(3))
        app.cancel(first)
        app.advance_clock(60)
        app.cancel(second)
        cutoff = app.now()
        app.advance_clock(60)
        app.cancel(third)
        assert ids(app.jobs(finished_after=cutoff)) == [second.id, third.id]
        assert ids(app.jobs(finished_before=cutoff)) == [first.id]
        assert ids(app.jobs(finished_after=cutoff, finished_before=app.now())) == [second.id]
        assert app.count(finished_after=cutoff, state="cancelled") == 2
        assert app.delete_jobs(finished_before=cutoff) == 1
        assert ids(app.jobs()) == [second.id, third.id]
    finally:
        app.close(timeout=5)


def test_bulk_actions_span_several_chunks(app: kathikon.Kathikon) -> None:
    n = 2_300  # more than two writer commands of 1,000 jobs
    register(app, "w")
    app.insert_all(
        [app.new("w", {"i": i}, queue="emails" if i % 2 else "default") for i in range(n)]
    )
    assert app.count() == n
    assert app.cancel_jobs(queue="default") == n // 2
    assert app.count(queue="default", state="cancelled") == n // 2
    assert app.cancel_jobs(queue="default") == 0
    # Delete refuses unfinished jobs unless forced.
    assert app.delete_jobs(queue="emails") == 0
    assert app.count(queue="emails") == n // 2
    assert app.retry_jobs(queue="default", args={"i": 0}) == 1
    assert app.get(app.jobs(args={"i": 0})[0]).state is S.AVAILABLE
    assert app.delete_jobs(queue="default") == n // 2 - 1
    assert app.delete_jobs(queue="emails", force=True) == n // 2
    assert ids(app.jobs()) == ids(app.jobs(args={"i": 0}))
    assert app.stats()["emails"]["available"] == 0
    assert app.count() == 1


@pytest.mark.parametrize(
    ("filters", "named"),
    [
        ({"state": "done-ish"}, "done-ish"),
        ({"state": ["available", 7]}, "7"),
        ({"state": []}, "state=[]"),
        ({"queue": 5}, "queue 5"),
        ({"tags": [1]}, "tags [1]"),
        ({"args": [1, 2]}, "list"),
        ({"meta": {"x": object()}}, "meta filter"),
        ({"inserted_after": datetime(2026, 1, 1)}, "naive"),
        ({"finished_before": "yesterday"}, "'yesterday'"),
        ({"scheduled_after": float("nan")}, "nan"),
        ({"order": "newest"}, "'newest'"),
        ({"cursor": "garbage!"}, "'garbage!'"),
        ({"nope": 1}, "unknown filter nope"),
    ],
)
def test_bad_filter_values_are_refused_by_name(
    app: kathikon.Kathikon, filters: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidJobError, match=None) as caught:
        app.jobs(**filters)
    assert named in str(caught.value)
    if "order" not in filters and "cursor" not in filters:
        with pytest.raises(InvalidJobError):
            app.count(**filters)
        with pytest.raises(InvalidJobError):
            app.cancel_jobs(**filters)


def test_a_cursor_is_refused_for_the_other_order(app: kathikon.Kathikon) -> None:
    fill(app, 3)
    cursor = app.jobs(limit=1).cursor
    assert cursor is not None
    with pytest.raises(InvalidJobError, match="order='asc', not order='desc'"):
        app.jobs(limit=1, order="desc", cursor=cursor)
    with pytest.raises(InvalidJobError, match="pass one"):
        app.jobs(after=1, cursor=cursor)


def test_times_may_be_aware_datetimes_or_epoch_seconds(app: kathikon.Kathikon) -> None:
    register(app, "w")
    job = app.insert("w", {})
    at = job.inserted_at
    later = at + timedelta(seconds=1)
    other_zone = later.astimezone(timezone(timedelta(hours=5)))
    assert ids(app.jobs(inserted_before=later)) == [job.id]
    assert ids(app.jobs(inserted_before=other_zone)) == [job.id]
    assert ids(app.jobs(inserted_before=later.timestamp())) == [job.id]
    assert ids(app.jobs(inserted_after=later)) == []
