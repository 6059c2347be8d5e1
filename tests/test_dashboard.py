"""The web dashboard (kathikon.web) over HTTP with Starlette's TestClient: every page and
action, escaping, CSRF, read-only and auth refusals, mounting under a prefix; and the
dashboard as a client of a real `kathikon worker` subprocess, and `kathikon dashboard` served
by uvicorn in a real subprocess."""

from __future__ import annotations

import base64
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from starlette.testclient import TestClient
from worker_project import Project, wait_for, worker

import kathikon
from kathikon.web import asgi_app

TOKEN = "s3cret-dashboard-token"
XSS = "<script>alert('owned')</script>"


@pytest.fixture
def failed(app: kathikon.Kathikon) -> kathikon.Job:
    """A discarded job whose args, tags and error hold markup."""

    @app.worker(name="explode", max_attempts=1, queue="emails")
    def explode(job: kathikon.Job) -> None:
        raise ValueError(f"bad payload {job.args['html']}")

    job = app.insert(explode, {"html": XSS}, tags=["<b>tag</b>"], meta={"who": "<i>me</i>"})
    app.drain()
    return app.get(job.id)


def client(app: kathikon.Kathikon, **kwargs: object) -> TestClient:
    return TestClient(asgi_app(app, **kwargs))  # type: ignore[arg-type]


def csrf(c: TestClient) -> str:
    """The CSRF token of the client's session (set by the first page it gets)."""
    assert c.get("/").status_code == 200
    token = c.cookies.get("kathikon_csrf")
    assert token
    return token


# -- pages ----------------------------------------------------------------------------------


def test_the_overview_shows_every_queue_with_its_counts(app: kathikon.Kathikon) -> None:
    app.worker(name="noop", queue="emails")(lambda job: None)
    for _ in range(3):
        app.insert("noop")
    app.insert("noop", schedule_in=3600)
    app.pause_queue("default")
    page = client(app).get("/")
    assert page.status_code == 200
    row = re.search(r'<tr data-queue="emails">(.*?)</tr>', page.text, re.S)
    assert row is not None
    assert '<td class="num" data-count="available">3</td>' in row.group(1)
    assert '<td class="num" data-count="scheduled">1</td>' in row.group(1)
    assert "oldest wait" in page.text
    paused = re.search(r'<tr data-queue="default">(.*?)</tr>', page.text, re.S)
    assert paused is not None and ">paused<" in paused.group(1)
    assert 'data-live="1.0"' in page.text  # live refresh, once a second


def test_the_job_list_filters_by_state_queue_and_worker_and_pages_by_cursor(
    app: kathikon.Kathikon,
) -> None:
    app.worker(name="a")(lambda job: None)
    app.worker(name="b", queue="emails")(lambda job: None)
    ids = [app.insert("a").id for _ in range(5)] + [app.insert("b").id for _ in range(2)]
    c = client(app)

    def listed(url: str) -> list[int]:
        page = c.get(url)
        assert page.status_code == 200, page.text
        return [int(i) for i in re.findall(r'<tr data-job="(\d+)">', page.text)]

    newest = ids[::-1]
    assert listed("/jobs") == newest
    assert listed("/jobs?order=asc") == ids
    assert listed("/jobs?queue=emails") == newest[:2]
    assert listed("/jobs?worker=a") == newest[2:]
    assert listed("/jobs?state=completed") == []
    first = c.get("/jobs?worker=a&limit=2").text
    found = re.search(r'id="next-page" rel="next" href="/jobs\?([^"]+)"', first)
    assert found is not None
    second = found.group(1).replace("&amp;", "&")
    assert second.startswith("worker=a&limit=2&cursor=")
    assert listed(f"/jobs?{second}") == newest[4:6]
    third = re.search(
        r'id="next-page" rel="next" href="/jobs\?([^"]+)"', c.get(f"/jobs?{second}").text
    )
    assert third is not None
    last = c.get("/jobs?" + third.group(1).replace("&amp;", "&")).text
    assert re.findall(r'<tr data-job="(\d+)">', last) == [str(newest[6])]
    assert 'id="next-page"' not in last


@pytest.mark.parametrize(
    ("query", "named"),
    [("state=bogus", "bogus"), ("cursor=x", "cursor 'x'"), ("limit=0", "limit='0'")],
)
def test_a_bad_filter_is_a_400_naming_the_value(
    app: kathikon.Kathikon, query: str, named: str
) -> None:
    page = client(app).get(f"/jobs?{query}")
    assert page.status_code == 400
    assert named.replace("'", "&#39;") in page.text


def test_the_job_page_shows_args_meta_tags_errors_and_times(
    app: kathikon.Kathikon, failed: kathikon.Job
) -> None:
    page = client(app).get(f"/jobs/{failed.id}")
    assert page.status_code == 200
    text = page.text
    assert "discarded" in text and "explode" in text and "1 of 1" in text
    assert "Traceback (most recent call last)" in text
    assert "ValueError: bad payload" in text
    assert "&lt;b&gt;tag&lt;/b&gt;" in text
    assert "&lt;i&gt;me&lt;/i&gt;" in text
    assert failed.inserted_at.strftime("%Y-%m-%d %H:%M:%S UTC") in text


def test_an_unknown_job_is_a_404(app: kathikon.Kathikon) -> None:
    page = client(app).get("/jobs/999")
    assert page.status_code == 404
    assert "no job with id 999" in page.text


def test_markup_in_args_errors_tags_and_meta_is_shown_escaped_never_run(
    app: kathikon.Kathikon, failed: kathikon.Job
) -> None:
    c = client(app, read_only=False)
    for url in ("/", "/jobs", "/jobs?queue=emails", f"/jobs/{failed.id}", "/queues"):
        page = c.get(url)
        assert page.status_code == 200
        assert "<script>alert" not in page.text, url
        assert "<b>tag" not in page.text and "<i>me" not in page.text, url
        # The only scripts are the dashboard's own file, and the policy allows no other.
        assert re.findall(r"<script[^>]*>", page.text) == [
            '<script src="/static/dashboard.js" defer>'
        ]
        assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "&lt;script&gt;alert(" in c.get(f"/jobs/{failed.id}").text


def test_the_cron_page_lists_entries_with_next_and_last_run(app: kathikon.Kathikon) -> None:
    app.worker(name="nightly", cron="0 3 * * *")(lambda job: None)
    page = client(app).get("/cron")
    assert page.status_code == 200
    assert "<code>0 3 * * *</code>" in page.text
    entry = app.crontab()[0]
    assert entry.next_at is not None
    assert entry.next_at.strftime("%Y-%m-%d %H:%M:%S UTC") in page.text
    assert "never" in page.text


def test_the_assets_are_served_from_the_package(app: kathikon.Kathikon) -> None:
    c = client(app)
    js = c.get("/static/dashboard.js")
    assert js.status_code == 200 and "data-live" in js.text
    assert c.get("/static/dashboard.css").status_code == 200


# -- actions --------------------------------------------------------------------------------


def test_retry_and_cancel_from_the_job_page(app: kathikon.Kathikon, failed: kathikon.Job) -> None:
    c = client(app, read_only=False)
    token = csrf(c)
    assert f'action="/jobs/{failed.id}/retry"' in c.get(f"/jobs/{failed.id}").text
    done = c.post(f"/jobs/{failed.id}/retry", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == f"/jobs/{failed.id}?done=retry"
    assert app.get(failed.id).state == "available"
    assert "Retried" in c.get(done.headers["location"]).text
    done = c.post(f"/jobs/{failed.id}/cancel", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303
    assert app.get(failed.id).state == "cancelled"


def test_pause_resume_and_scale_from_the_queues_page(app: kathikon.Kathikon) -> None:
    c = client(app, read_only=False)
    token = csrf(c)
    assert c.post("/queues/pause", data={"csrf": token, "queue": "emails"}).status_code == 200
    assert app.check_queue("emails").paused
    assert c.post("/queues/resume", data={"csrf": token, "queue": "emails"}).status_code == 200
    assert not app.check_queue("emails").paused
    scaled = c.post("/queues/scale", data={"csrf": token, "queue": "emails", "concurrency": "7"})
    assert scaled.status_code == 200 and "Scaled" in scaled.text
    assert app.check_queue("emails").concurrency == 7
    c.post("/queues/scale", data={"csrf": token, "queue": "emails", "concurrency": ""})
    assert app.check_queue("emails").concurrency == 2


@pytest.mark.parametrize(
    ("form", "status", "says"),
    [
        ({"queue": "nosuch"}, 400, "nosuch"),
        ({"queue": "emails", "concurrency": "-1"}, 400, "-1"),
        ({"queue": "emails", "concurrency": "0"}, 400, "0"),
        ({}, 400, "names no queue"),
    ],
)
def test_a_bad_queue_action_is_refused_with_the_reason(
    app: kathikon.Kathikon, form: dict[str, str], status: int, says: str
) -> None:
    c = client(app, read_only=False)
    refused = c.post("/queues/scale", data={"csrf": csrf(c), **form})
    assert refused.status_code == status
    assert says in refused.text
    assert app.check_queue("emails").concurrency == 2


def test_retrying_an_executing_job_is_a_409(app: kathikon.Kathikon) -> None:
    release = threading.Event()
    app.worker(name="hold")(lambda job: release.wait(30))
    job = app.insert("hold")
    app.start()
    try:
        wait_for("the job to start", lambda: app.get(job.id).state == "executing")
        c = client(app, read_only=False)
        refused = c.post(f"/jobs/{job.id}/retry", data={"csrf": csrf(c)})
        assert refused.status_code == 409
        assert "executing" in refused.text
        assert app.get(job.id).state == "executing"
    finally:
        release.set()
        app.stop()


def test_an_action_without_the_csrf_token_or_with_another_is_refused(
    app: kathikon.Kathikon, failed: kathikon.Job
) -> None:
    c = client(app, read_only=False)
    token = csrf(c)
    for form in ({"queue": "emails"}, {"csrf": ""}, {"csrf": token + "x"}):
        refused = c.post(f"/jobs/{failed.id}/retry", data=form)
        assert refused.status_code == 403 and "CSRF" in refused.text
    # A browser without the cookie (another site's form posting here) is refused too.
    fresh = client(app, read_only=False)
    assert fresh.post(f"/jobs/{failed.id}/retry", data={"csrf": token}).status_code == 403
    # A JSON body is not a form.
    assert c.post(f"/jobs/{failed.id}/retry", json={"csrf": token}).status_code == 415
    assert app.get(failed.id).state == "discarded"


def test_no_action_on_a_get(app: kathikon.Kathikon, failed: kathikon.Job) -> None:
    c = client(app, read_only=False)
    csrf(c)
    assert c.get(f"/jobs/{failed.id}/retry").status_code == 405
    assert c.get(f"/jobs/{failed.id}/cancel").status_code == 405
    assert c.get("/queues/pause?queue=emails").status_code == 405
    assert app.get(failed.id).state == "discarded"
    assert not app.check_queue("emails").paused


def test_read_only_by_default_refuses_actions_and_shows_no_buttons(
    app: kathikon.Kathikon, failed: kathikon.Job
) -> None:
    c = client(app)
    token = csrf(c)
    page = c.get(f"/jobs/{failed.id}").text
    assert "read-only" in page and '<form method="post"' not in page
    assert '<form method="post"' not in c.get("/queues").text
    refused = c.post(f"/jobs/{failed.id}/retry", data={"csrf": token})
    assert refused.status_code == 403 and "read-only" in refused.text
    refused = c.post("/queues/pause", data={"csrf": token, "queue": "emails"})
    assert refused.status_code == 403
    assert app.get(failed.id).state == "discarded"
    assert not app.check_queue("emails").paused
    # With auth configured, read_only=True still refuses.
    locked = TestClient(asgi_app(app, auth=TOKEN, read_only=True))
    locked.headers["Authorization"] = f"Bearer {TOKEN}"
    assert locked.post(f"/jobs/{failed.id}/retry", data={"csrf": csrf(locked)}).status_code == 403


def test_a_token_is_required_and_allows_actions(
    app: kathikon.Kathikon, failed: kathikon.Job
) -> None:
    c = client(app, auth=TOKEN)
    assert c.get("/").status_code == 401
    assert c.get("/").headers["www-authenticate"].startswith("Basic")
    assert c.get("/", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    assert c.get("/static/dashboard.js").status_code == 401
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    c.headers["Authorization"] = f"Basic {basic}"
    assert c.get("/").status_code == 200
    done = c.post(f"/jobs/{failed.id}/retry", data={"csrf": csrf(c)}, follow_redirects=False)
    assert done.status_code == 303
    assert app.get(failed.id).state == "available"


def test_an_auth_callback_decides_each_request(app: kathikon.Kathikon) -> None:
    seen: list[str] = []

    async def only_admins(request: Request) -> bool:
        seen.append(request.url.path)
        return request.headers.get("x-user") == "admin"

    c = client(app, auth=only_admins)
    assert c.get("/").status_code == 403
    c.headers["x-user"] = "admin"
    assert c.get("/queues").status_code == 200
    assert c.post("/queues/pause", data={"csrf": csrf(c), "queue": "emails"}).status_code == 200
    assert app.check_queue("emails").paused
    assert seen[:2] == ["/", "/queues"]


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"auth": 12345}, "auth=12345"),
        ({"auth": "short"}, "shorter than 8"),
        ({"refresh": 0.5}, "refresh=0.5"),
        ({"read_only": "yes"}, "read_only='yes'"),
    ],
)
def test_bad_settings_are_a_configuration_error(
    app: kathikon.Kathikon, kwargs: dict[str, object], says: str
) -> None:
    with pytest.raises(kathikon.ConfigurationError, match=re.escape(says)):
        asgi_app(app, **kwargs)  # type: ignore[arg-type]


def test_mounted_under_a_prefix_its_links_forms_and_cookie_stay_under_it(
    app: kathikon.Kathikon, failed: kathikon.Job
) -> None:
    host = Starlette(routes=[Mount("/admin/jobs", asgi_app(app, read_only=False))])
    c = TestClient(host)
    page = c.get(f"/admin/jobs/jobs/{failed.id}")
    assert page.status_code == 200
    assert 'href="/admin/jobs/static/dashboard.css"' in page.text
    assert f'action="/admin/jobs/jobs/{failed.id}/retry"' in page.text
    assert "Path=/admin/jobs;" in page.headers["set-cookie"]
    assert c.get("/admin/jobs/static/dashboard.js").status_code == 200
    token = c.cookies.get("kathikon_csrf")
    done = c.post(
        f"/admin/jobs/jobs/{failed.id}/retry", data={"csrf": token}, follow_redirects=False
    )
    assert done.headers["location"] == f"/admin/jobs/jobs/{failed.id}?done=retry"


# -- real processes -------------------------------------------------------------------------


def test_the_dashboard_is_a_client_of_a_running_worker(tmp_path: Path) -> None:
    project = Project(tmp_path)
    with worker(project, "--queues", "default,slow"):
        dash = kathikon.Kathikon(project.store)
        try:
            assert dash.role == "client"
            # The worker process runs its own "last" (raises KeyError, one attempt).
            dash.worker(name="last", max_attempts=1)(lambda job: None)
            job = dash.insert("last", {"n": 1})
            wait_for("the job to fail", lambda: dash.get(job.id).state == "discarded")
            c = client(dash, read_only=False)
            overview = c.get("/")
            assert "the store's client" in overview.text
            assert 'data-count="discarded">1<' in overview.text
            page = c.get(f"/jobs/{job.id}").text
            assert "KeyError: &#39;gone&#39;" in page
            token = csrf(c)
            retried = c.post(f"/jobs/{job.id}/retry", data={"csrf": token})
            assert retried.status_code == 200
            wait_for("the retry to run", lambda: len(dash.get(job.id).errors) == 2)
            paused = c.post("/queues/pause", data={"csrf": token, "queue": "default"})
            assert paused.status_code == 200 and "Paused" in paused.text
            assert dash.check_queue("default").paused
            after = dash.insert("last")
            assert dash.get(after.id).state == "available"  # the worker starts nothing now
            c.post("/queues/resume", data={"csrf": token, "queue": "default"})
            wait_for("the resumed queue to run", lambda: dash.get(after.id).state == "discarded")
        finally:
            dash.close(timeout=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def served(store_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    kathikon.Kathikon(store_path).close()
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kathikon.cli",
            "dashboard",
            "--path",
            str(store_path),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(base + "/", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            return False

    try:
        wait_for("the dashboard to answer", up)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stderr is not None:
            proc.stderr.close()


def test_kathikon_dashboard_serves_read_only_on_loopback_by_default(
    served: tuple[str, subprocess.Popen[str]], store_path: Path
) -> None:
    base, proc = served
    with urllib.request.urlopen(base + "/jobs", timeout=5) as r:
        assert r.status == 200
        assert "read-only" in r.read().decode()
        assert "script-src 'self'" in r.headers["content-security-policy"]
    refused = urllib.request.Request(
        base + "/queues/pause",
        data=b"queue=default&csrf=x",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": "kathikon_csrf=x"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(refused, timeout=5)
    assert e.value.code == 403
    e.value.close()
    proc.terminate()
    assert proc.wait(30) == 0
    assert proc.stderr is not None
    assert "http://127.0.0.1:" in proc.stderr.read()


def test_kathikon_dashboard_without_a_store_is_a_usage_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kathikon.cli", "dashboard"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "--path FILE" in out.stderr


def test_the_queues_page_shows_each_queues_limits_escaped(app: kathikon.Kathikon) -> None:
    partition = {"fields": ["args"], "keys": ["<b>user</b>"]}
    app.scale_queue(
        "emails", global_limit=3, rate_limit={"allowed": 10, "period": 60, "partition": partition}
    )
    page = client(app).get("/queues").text
    assert "≤ 3 at once (0 running); 10 per 60 s per args[&lt;b&gt;user&lt;/b&gt;]" in page
    assert "<b>user</b>" not in page
