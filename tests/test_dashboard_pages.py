"""The dashboard's job list (every filter, cursor pages, counts, bulk actions), the overview's
charts, the job's timeline and progress, and the workers page, over HTTP with Starlette's
TestClient against a real store file."""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient
from worker_project import wait_for

import kathikon
from kathikon.web import asgi_app

XSS = "<script>alert('owned')</script>"


def client(app: kathikon.Kathikon, **kwargs: Any) -> TestClient:
    return TestClient(asgi_app(app, **kwargs))


def csrf(c: TestClient) -> str:
    assert c.get("/").status_code == 200
    token = c.cookies.get("kathikon_csrf")
    assert token
    return token


def listed(c: TestClient, url: str) -> list[int]:
    page = c.get(url)
    assert page.status_code == 200, page.text
    return [int(i) for i in re.findall(r'<tr data-job="(\d+)">', page.text)]


def total(c: TestClient, url: str) -> int:
    found = re.search(r'data-count="total">(\d+)<', c.get(url).text)
    assert found is not None
    return int(found.group(1))


@pytest.fixture
def mixed(app: kathikon.Kathikon) -> dict[str, list[int]]:
    """Jobs of two workers in several states, with tags, args and meta to filter on."""
    app.worker(name="ok", queue="emails")(lambda job: None)

    @app.worker(name="boom", max_attempts=1)
    def boom(job: kathikon.Job) -> None:
        raise RuntimeError("boom")

    done = [app.insert("ok", {"user": {"id": 7}}, tags=["vip", "eu"]).id for _ in range(2)]
    failed = [app.insert("boom", {"user": {"id": 8}}, meta={"team": "a"}).id for _ in range(3)]
    app.drain()
    waiting = [app.insert("ok", {"user": {"id": 7}}, tags=["eu"]).id for _ in range(2)]
    later = [app.insert("ok", schedule_in=3600).id]
    return {"done": done, "failed": failed, "waiting": waiting, "later": later}


# -- the job list -------------------------------------------------------------------------


def test_the_job_list_filters_by_every_filter_and_counts_the_matches(
    app: kathikon.Kathikon, mixed: dict[str, list[int]]
) -> None:
    c = client(app)
    desc = sorted
    assert listed(c, "/jobs?state=discarded&order=asc") == mixed["failed"]
    both = "/jobs?state=discarded&state=scheduled&order=asc"
    assert listed(c, both) == desc(mixed["failed"] + mixed["later"])
    assert total(c, both) == 4
    assert listed(c, "/jobs?tags=vip&order=asc") == mixed["done"]
    assert listed(c, "/jobs?tags=eu,+vip&order=asc") == mixed["done"]
    assert total(c, "/jobs?tags=eu") == 4
    args = quote('{"user": {"id": 7}}')
    assert listed(c, f"/jobs?args={args}&state=available&order=asc") == mixed["waiting"]
    meta = quote('{"team": "a"}')
    assert listed(c, f"/jobs?meta={meta}&order=asc") == mixed["failed"]
    assert total(c, "/jobs?worker=boom") == 3
    assert total(c, "/jobs?queue=emails") == 5
    assert total(c, "/jobs") == 8
    # Time bounds: the finished jobs finished before now; none was inserted in the future.
    now = app.now().isoformat()
    assert total(c, f"/jobs?finished_before={quote(now)}") == 5
    assert total(c, f"/jobs?inserted_after={quote(now)}") == 0
    assert (
        total(c, "/jobs?scheduled_after=" + quote(app.now().replace(tzinfo=None).isoformat())) == 1
    )
    # The form shows the filter back.
    page = c.get(f"/jobs?state=discarded&worker=boom&args={args}").text
    assert '<option value="discarded" selected>' in page
    assert 'id="filter-worker" list="workers" value="boom"' in page
    assert "value='{&#34;user&#34;: {&#34;id&#34;: 7}}'" in page or (
        'value="{&#34;user&#34;: {&#34;id&#34;: 7}}"' in page
    )


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("args=%7Bnot+json", "args=&#39;{not json&#39; is not JSON"),
        ("meta=%5B1%5D", "is not a JSON object"),
        ("inserted_after=yesterday", "inserted_after=&#39;yesterday&#39; is not a time"),
        ("order=sideways", "order=&#39;sideways&#39;"),
        ("state=discarded&cursor=bogus", "cursor &#39;bogus&#39;"),
    ],
)
def test_bad_filter_input_is_a_400_with_the_message(
    app: kathikon.Kathikon, query: str, says: str
) -> None:
    page = client(app).get(f"/jobs?{query}")
    assert page.status_code == 400
    assert says in page.text


def test_markup_in_filters_queue_names_and_tags_is_escaped(app: kathikon.Kathikon) -> None:
    app.start_queue(XSS, concurrency=1)
    app.worker(name="w")(lambda job: None)
    app.insert("w", {"x": XSS}, tags=[XSS], queue=XSS)
    c = client(app, read_only=False)
    for url in (
        "/jobs",
        f"/jobs?queue={quote(XSS)}",
        f"/jobs?tags={quote(XSS)}&args={quote(json.dumps({'x': XSS}))}",
        "/",
        f"/?queue={quote(XSS)}",
        "/workers",
    ):
        page = c.get(url)
        assert page.status_code == 200, (url, page.text)
        assert "<script>alert" not in page.text, url
        assert re.findall(r"<script[^>]*>", page.text) == [
            '<script src="/static/dashboard.js" defer>'
        ]
    assert "&lt;script&gt;alert(" in c.get(f"/jobs?queue={quote(XSS)}").text


# -- bulk actions ---------------------------------------------------------------------------


def bulk(c: TestClient, token: str, **fields: Any) -> Any:
    return c.post("/jobs/bulk", data={"csrf": token, **fields}, follow_redirects=False)


def test_bulk_retry_of_the_selected_jobs_only(
    app: kathikon.Kathikon, mixed: dict[str, list[int]]
) -> None:
    c = client(app, read_only=False)
    token = csrf(c)
    page = c.get("/jobs?state=discarded").text
    for job_id in mixed["failed"]:
        assert f'class="select-job" name="id" value="{job_id}" form="bulk-form"' in page
    assert 'id="bulk-form"' in page and 'id="bulk-retry"' in page
    picked = mixed["failed"][:2]
    done = bulk(
        c, token, action="retry", scope="selected", id=[str(i) for i in picked], state="discarded"
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith("/jobs?state=discarded&done=retry&n=2")
    assert [app.get(i).state for i in mixed["failed"]] == ["available", "available", "discarded"]
    assert "Retried 2 jobs." in c.get(done.headers["location"]).text


def test_bulk_cancel_of_every_job_matching_the_filter(
    app: kathikon.Kathikon, mixed: dict[str, list[int]]
) -> None:
    c = client(app, read_only=False)
    page = c.get("/jobs?queue=emails&state=available&state=scheduled").text
    assert 'all <span data-count="matching">3</span> matching this filter' in page
    done = bulk(
        c,
        csrf(c),
        action="cancel",
        scope="filter",
        queue="emails",
        state=["available", "scheduled"],
    )
    assert done.status_code == 303 and "n=3" in done.headers["location"]
    assert {app.get(i).state for i in mixed["waiting"] + mixed["later"]} == {"cancelled"}
    assert {app.get(i).state for i in mixed["done"]} == {"completed"}
    assert {app.get(i).state for i in mixed["failed"]} == {"discarded"}


def test_bulk_delete_takes_finished_jobs_unless_forced(
    app: kathikon.Kathikon, mixed: dict[str, list[int]]
) -> None:
    c = client(app, read_only=False)
    token = csrf(c)
    picked = [mixed["done"][0], mixed["waiting"][0]]
    done = bulk(c, token, action="delete", scope="selected", id=[str(i) for i in picked])
    assert "n=1&skipped=1" in done.headers["location"]
    assert "Skipped 1" in c.get(done.headers["location"]).text
    with pytest.raises(kathikon.JobNotFoundError):
        app.get(mixed["done"][0])
    assert app.get(mixed["waiting"][0]).state == "available"
    forced = bulk(c, token, action="delete", scope="selected", id=str(picked[1]), force="1")
    assert "n=1" in forced.headers["location"] and "skipped" not in forced.headers["location"]
    with pytest.raises(kathikon.JobNotFoundError):
        app.get(picked[1])
    # By filter: only the finished jobs of the worker, then all of them with force.
    assert (
        "n=3" in bulk(c, token, action="delete", scope="filter", worker="boom").headers["location"]
    )
    assert app.count(worker="ok") == 3
    kept = bulk(c, token, action="delete", scope="filter", worker="ok", state="available")
    assert "n=0" in kept.headers["location"] and app.count(worker="ok") == 3
    gone = bulk(c, token, action="delete", scope="filter", worker="ok", force="1")
    assert "n=3" in gone.headers["location"] and app.count() == 0


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"action": "retry", "scope": "selected"}, "no job is selected"),
        ({"action": "explode", "scope": "filter"}, "action=&#39;explode&#39;"),
        ({"action": "retry", "scope": "everything"}, "scope=&#39;everything&#39;"),
        ({"action": "retry", "scope": "selected", "id": "x1"}, "id=&#39;x1&#39;"),
        ({"action": "retry", "scope": "filter", "args": "{oops"}, "is not JSON"),
        ({"action": "retry", "scope": "filter", "state": "nope"}, "state &#39;nope&#39;"),
    ],
)
def test_a_bad_bulk_form_is_a_400_and_changes_nothing(
    app: kathikon.Kathikon, mixed: dict[str, list[int]], fields: dict[str, str], says: str
) -> None:
    c = client(app, read_only=False)
    refused = bulk(c, csrf(c), **fields)
    assert refused.status_code == 400
    assert says in refused.text
    assert {app.get(i).state for i in mixed["failed"]} == {"discarded"}


def test_bulk_without_csrf_or_read_only_is_refused_and_changes_nothing(
    app: kathikon.Kathikon, mixed: dict[str, list[int]]
) -> None:
    form = {"action": "retry", "scope": "filter", "state": "discarded"}
    c = client(app, read_only=False)
    csrf(c)
    assert c.post("/jobs/bulk", data=form).status_code == 403
    assert c.post("/jobs/bulk", data={**form, "csrf": "forged"}).status_code == 403
    assert c.get("/jobs/bulk?action=retry&scope=filter").status_code in (404, 405)
    ro = client(app)
    refused = ro.post("/jobs/bulk", data={**form, "csrf": csrf(ro)})
    assert refused.status_code == 403 and "read-only" in refused.text
    page = ro.get("/jobs").text
    assert 'id="bulk-form"' not in page and "select-job" not in page
    assert {app.get(i).state for i in mixed["failed"]} == {"discarded"}


def test_delete_from_the_job_page(app: kathikon.Kathikon, mixed: dict[str, list[int]]) -> None:
    c = client(app, read_only=False)
    token = csrf(c)
    waiting = mixed["waiting"][0]
    assert 'id="job-force"' in c.get(f"/jobs/{waiting}").text
    refused = c.post(f"/jobs/{waiting}/delete", data={"csrf": token})
    assert refused.status_code == 409 and "force" in refused.text
    forced = c.post(
        f"/jobs/{waiting}/delete", data={"csrf": token, "force": "1"}, follow_redirects=False
    )
    assert forced.headers["location"] == "/jobs?done=delete&n=1"
    finished = mixed["done"][0]
    assert c.post(f"/jobs/{finished}/delete", data={"csrf": token}).status_code == 200
    for job_id in (waiting, finished):
        with pytest.raises(kathikon.JobNotFoundError):
            app.get(job_id)


def test_app_delete_takes_one_finished_job_or_any_with_force(
    app: kathikon.Kathikon, mixed: dict[str, list[int]]
) -> None:
    finished, neighbour = mixed["done"]
    app.delete(finished)
    with pytest.raises(kathikon.JobNotFoundError):
        app.get(finished)
    assert app.get(neighbour).state == "completed"
    waiting = mixed["waiting"][0]
    with pytest.raises(kathikon.JobStateError, match="force=True"):
        app.delete(waiting)
    app.delete(waiting, force=True)
    with pytest.raises(kathikon.JobNotFoundError):
        app.delete(waiting)
    with pytest.raises(kathikon.InvalidJobError, match="force"):
        app.delete(neighbour, force="yes")  # type: ignore[arg-type]
    assert app.count() == 6


# -- overview charts ------------------------------------------------------------------------


def test_the_overview_charts_throughput_and_failures_per_queue(
    app: kathikon.Kathikon, mixed: dict[str, list[int]]
) -> None:
    c = client(app)
    page = c.get("/").text
    for metric in ("completed", "failed", "discarded", "cancelled", "duration"):
        assert f'<svg class="chart" id="chart-{metric}"' in page
    assert 'data-total="completed">2<' in page
    assert 'data-total="discarded">3<' in page
    assert re.search(r"<title>\d\d:\d\d UTC: 3 discarded</title>", page)
    assert 'class="line line-p95"' in page
    assert 'id="chart-queue"' in page and 'id="chart-window"' in page
    emails = c.get("/?queue=emails").text
    assert 'data-total="completed">2<' in emails and 'data-total="discarded">0<' in emails
    day = c.get("/?window=day").text
    assert "Last day" in day and 'data-total="discarded">3<' in day
    assert re.search(r"<title>\d\d:\d\d UTC: 3 discarded</title>", day)
    bad = c.get("/?window=week")
    assert bad.status_code == 400 and "window=&#39;week&#39;" in bad.text


# -- the job page ---------------------------------------------------------------------------


def test_the_job_page_shows_a_timeline_of_attempts_and_errors(app: kathikon.Kathikon) -> None:
    @app.worker(name="twice", max_attempts=2, backoff=lambda job: 0)
    def twice(job: kathikon.Job) -> None:
        raise KeyError(f"missing {job.attempt}")

    job = app.insert("twice", schedule_in=0)
    app.drain()
    app.drain()
    assert app.get(job.id).state == "discarded"
    page = client(app).get(f"/jobs/{job.id}").text
    timeline = re.search(r'<ol class="timeline" id="job-timeline">(.*?)</ol>', page, re.S)
    assert timeline is not None
    events = re.findall(r'data-event="(\w+)"', timeline.group(1))
    assert events == ["inserted", "failed", "started", "failed", "discarded"]
    assert "KeyError: &#39;missing 1&#39;" in timeline.group(1)
    assert 'href="#attempt-2"' in timeline.group(1) and 'id="attempt-2"' in page


def test_the_job_page_shows_progress_when_the_job_reported_one(app: kathikon.Kathikon) -> None:
    @app.worker
    def quiet(job: kathikon.Job) -> None:
        pass

    @app.worker
    def reporting(job: kathikon.Job) -> None:
        job.progress(0.25, XSS)

    silent, reported = quiet.insert(), reporting.insert()
    app.drain()
    assert 'id="job-progress"' not in client(app).get(f"/jobs/{silent.id}").text
    page = client(app).get(f"/jobs/{reported.id}").text
    assert 'id="job-progress"' in page and '<progress max="1" value="0.25">' in page
    assert "25%" in page and "(attempt 1," in page
    assert "&lt;script&gt;" in page and "<script>alert" not in page


# -- the workers page -----------------------------------------------------------------------


def test_the_workers_page_shows_each_queues_claimer(app: kathikon.Kathikon) -> None:
    release = threading.Event()
    app.worker(name="hold", queue="emails")(lambda job: release.wait(30))
    job = app.insert("hold")
    c = client(app)
    before = c.get("/workers")
    assert before.status_code == 200 and 'id="claimer-table"' in before.text
    app.start()
    try:
        wait_for("the job to start", lambda: app.get(job.id).state == "executing")
        page = c.get("/workers").text
        row = re.search(r'<tr data-queue="emails">(.*?)</tr>', page, re.S)
        assert row is not None
        assert f'data-pid="{os.getpid()}"' in row.group(1)
        assert 'data-count="executing">1<' in row.group(1)
        assert 'href="/workers" aria-current="page"' in page
    finally:
        release.set()
        app.stop()


def test_the_workers_page_lists_each_process_with_the_jobs_it_runs(
    app: kathikon.Kathikon,
) -> None:
    release = threading.Event()
    app.worker(name="hold", queue="emails")(lambda job: release.wait(30))
    job = app.insert("hold")
    c = client(app)
    idle = c.get("/workers").text
    row = re.search(rf'<tr data-pid="{os.getpid()}">(.*?)</tr>', idle, re.S)
    assert row is not None and "owner" in row.group(1) and "idle" in row.group(1)
    app.start()
    try:
        wait_for("the job to start", lambda: app.get(job.id).state == "executing")
        page = c.get("/workers").text
        row = re.search(rf'<tr data-pid="{os.getpid()}">(.*?)</tr>', page, re.S)
        assert row is not None
        assert f'data-running="{job.id}" href="/jobs/{job.id}"' in row.group(1)
        assert 'href="/jobs?queue=emails">emails</a>' in row.group(1)
    finally:
        release.set()
        app.stop()


def test_the_live_script_pauses_while_rows_are_ticked(app: kathikon.Kathikon) -> None:
    js = client(app).get("/static/dashboard.js").text
    assert "input.select-job:checked" in js and "select-all" in js


def test_a_batch_page_shows_its_progress_and_callbacks(app: kathikon.Kathikon) -> None:
    @app.worker(name="member", max_attempts=1)
    def member(job: kathikon.Job) -> int:
        if job.args["n"] == 0:
            raise RuntimeError("first fails")
        return job.args["n"]

    app.worker(name="done", queue="emails")(lambda job: None)
    batch = app.insert_batch(
        [member.new({"n": n}) for n in range(4)],
        batch_id=XSS,
        on_completed="done",
        on_discarded="done",
    )
    c = client(app)
    url = f"/batches/{quote(XSS)}"
    page = c.get(url)
    assert page.status_code == 200, page.text
    assert XSS not in page.text and "&lt;script&gt;" in page.text
    assert 'id="batch-done">0 of 4<' in page.text
    assert re.findall(r'data-state="available" data-count="(\d+)"', page.text) == ["4"]
    assert 'data-event="completed"><span class="dim">waiting' in page.text

    app.drain()
    page = c.get(url).text
    assert 'id="batch-done">4 of 4<' in page
    bar = dict(re.findall(r'data-state="(\w+)" data-count="(\d+)"', page))
    assert bar == {"completed": "3", "discarded": "1"}
    fired = app.batch(XSS).callbacks["discarded"]
    assert f'href="/jobs/{fired}"' in page
    assert 'data-event="completed"><span class="dim">not inserted' in page
    # A member's page links its batch, and shows its result.
    job_page = c.get(f"/jobs/{batch.jobs[2].id}").text
    assert f'href="{url}"' in job_page
    assert re.search(r'id="job-result">2\s*<', job_page)
    assert c.get("/batches/never").status_code == 404
