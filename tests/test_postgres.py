"""``Kathikon(url=...)``: the same app on a PostgreSQL database (a throwaway server, see
tests/pg_server.py). The schema is created by ``kathikon migrate --url`` or ``migrate=True``
and refused when missing; jobs run with their outcomes, retries and snoozes; two apps on one
database are two nodes sharing the jobs; queue control, unique jobs and cron work as on a store
file; bad settings are refused naming the value. (The Rust conformance suite runs every verb of
the job-store contract on PostgreSQL; these tests go through the Python API.)"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

import kathikon
from kathikon import JobState, Unique


@pytest.fixture
def db(pg_db: str) -> str:
    """A fresh database with Kathikon's schema."""
    return pg_db


@pytest.fixture
def app(db: str) -> Iterator[kathikon.Kathikon]:
    a = kathikon.Kathikon(url=db, queues={"default": 4, "other": 2}, poll_interval=0.2)
    try:
        yield a
    finally:
        a.close(timeout=5)


def test_a_database_without_the_schema_is_refused_until_migrated(pg_url: str) -> None:
    with pytest.raises(kathikon.StoreVersionError, match="kathikon migrate --url"):
        kathikon.Kathikon(url=pg_url)
    cli = [sys.executable, "-m", "kathikon.cli", "migrate", "--url", pg_url]
    first = subprocess.run(cli, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    assert "created Kathikon's schema" in first.stdout
    again = subprocess.run(cli, capture_output=True, text=True, timeout=60, check=False)
    assert "nothing to do" in again.stdout
    app = kathikon.Kathikon(url=pg_url)
    try:
        assert app.role == "node" and app.url == pg_url and app.path is None
    finally:
        app.close()


def test_migrate_true_creates_the_schema_at_open(pg_url: str) -> None:
    app = kathikon.Kathikon(url=pg_url, migrate=True)
    try:
        app.worker(name="w")(lambda job: None)
        assert app.insert("w", {}).state == JobState.AVAILABLE
    finally:
        app.close()


def test_jobs_run_to_their_outcomes(app: kathikon.Kathikon) -> None:
    runs: list[int] = []

    @app.worker(max_attempts=2)
    def flaky(job: kathikon.Job) -> None:
        runs.append(job.attempt)
        if job.args["fail"]:
            raise RuntimeError("boom")

    ok = flaky.insert({"fail": False})
    bad = flaky.insert({"fail": True})
    app.drain(with_scheduled=True)
    assert app.get(ok.id).state == JobState.COMPLETED
    failed = app.get(bad.id)
    assert failed.state == JobState.DISCARDED and failed.attempt == 2
    assert "boom" in failed.errors[-1]["error"]
    assert sorted(runs) == [1, 1, 2]


def test_two_apps_on_one_database_are_two_nodes_sharing_the_jobs(
    app: kathikon.Kathikon, db: str
) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def work(job: kathikon.Job) -> None:
        with lock:
            seen.append(job.args["n"])

    other = kathikon.Kathikon(url=db, queues={"default": 4}, poll_interval=0.2)
    try:
        for a in (app, other):
            a.worker(name="work")(work)
        app.insert_all([app.new("work", {"n": n}) for n in range(200)])
        app.start()
        other.start()
        deadline = time.monotonic() + 60
        while app.count(state="completed") < 200:
            assert time.monotonic() < deadline, app.stats()
            time.sleep(0.05)
        assert sorted(seen) == list(range(200)), "each job ran exactly once"
        assert {p.role for p in app.processes()} == {"node"}
    finally:
        other.close(timeout=5)


def test_a_paused_queue_runs_nothing_on_any_node_until_resumed(
    app: kathikon.Kathikon, db: str
) -> None:
    done = threading.Event()
    app.worker(name="tick")(lambda job: done.set())
    other = kathikon.Kathikon(url=db, poll_interval=0.2)
    try:
        other.pause_queue("default")
        app.insert("tick", {})
        app.start()
        assert not done.wait(1.0), "a job of a paused queue ran"
        assert app.check_queue("default").paused
        other.resume_queue("default")
        assert done.wait(30), "the resume did not reach the running node"
    finally:
        other.close()


def test_unique_jobs_and_cron_work_as_on_a_store_file(app: kathikon.Kathikon) -> None:
    @app.worker(unique=Unique(fields=("worker", "args"), states=Unique.INCOMPLETE))
    def sync(job: kathikon.Job) -> None:
        pass

    first = sync.insert({"user": 1})
    again = sync.insert({"user": 1})
    assert again.id == first.id and again.conflict and not first.conflict
    app.cron("* * * * * *", sync, {"user": 2}, name="every-second")
    deadline = time.monotonic() + 30
    while not any(e.last_slot for e in app.crontab()):
        assert time.monotonic() < deadline, "the leader never fired the entry"
        time.sleep(0.05)
    fired = [j for j in app.jobs(worker=sync.name) if j.meta.get("cron")]
    assert fired and fired[0].meta["cron"]["name"] == "every-second"


def test_bad_settings_are_refused_naming_the_value(tmp_path: object, db: str) -> None:
    with pytest.raises(kathikon.ConfigurationError, match="url=123"):
        kathikon.Kathikon(url=123)  # type: ignore[arg-type]
    with pytest.raises(kathikon.ConfigurationError, match="path=.*url="):
        kathikon.Kathikon("jobs.redb", url=db)
    with pytest.raises(kathikon.StorageError, match="could not connect"):
        kathikon.Kathikon(url="postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(kathikon.ConfigurationError, match="PostgreSQL url is not valid"):
        kathikon.Kathikon(url="postgresql://[bad")


def test_the_open_is_logged_without_the_password(db: str, caplog: pytest.LogCaptureFixture) -> None:
    # The test server trusts every local connection, so any password is accepted (and must
    # never reach a log line), in a URL and in a key=value string alike.
    parts = urlsplit(db)
    urls = [
        db.replace("postgres@", "postgres:hunter2@", 1),
        f"host={parts.hostname} port={parts.port} user=postgres dbname={parts.path[1:]} "
        "password=hunter2",
    ]
    for url in urls:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="kathikon.store"):
            app = kathikon.Kathikon(url=url)
            app.close()
        opened = [r.getMessage() for r in caplog.records if "PostgreSQL" in r.getMessage()]
        assert opened and "hunter2" not in opened[0] and "***" in opened[0], opened
        assert "hunter2" not in repr(app)
