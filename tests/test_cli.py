"""The ``kathikon`` command line, run for real as a subprocess (``python -m kathikon.cli``)
against an app module written into a temporary directory."""

from __future__ import annotations

import json
import os
import pty
import re
import runpy
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import kathikon
from kathikon import JobState

S = JobState
TIMEOUT = 30.0

APP = textwrap.dedent(
    """
    import pathlib, time
    import kathikon

    HERE = pathlib.Path(__file__).resolve().parent
    MARKS = HERE / "marks"
    MARKS.mkdir(exist_ok=True)

    app = kathikon.Kathikon(
        HERE / "jobs.redb",
        queues={"default": 2, "emails": 1},
        poll_interval=0.1,
        scheduler_interval=0.1,
    )

    def mark(job, what):
        (MARKS / f"{job.id}.{what}").write_text("")

    @app.worker(name="ok")
    def ok(job):
        mark(job, "done")

    @app.worker(name="boom", max_attempts=3)
    def boom(job):
        raise ValueError("boom [bold]not markup[/bold]")

    @app.worker(name="slow", queue="emails")
    def slow(job):
        mark(job, "start")
        time.sleep(job.args["seconds"])
        mark(job, "done")

    not_an_app = 42
    """
)

BROKEN = 'raise RuntimeError("no settings\\nfor this environment")\n'
NEEDS_MISSING = "import kathikon_no_such_dependency\n"


class Project:
    """A directory with the app module ``cliapp`` and its store ``jobs.redb``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = root / "jobs.redb"
        self.marks = root / "marks"

    @contextmanager
    def app(self) -> Iterator[dict[str, Any]]:
        """The app module's namespace, loaded in this process (the store is held meanwhile)."""
        ns = runpy.run_path(str(self.root / "cliapp.py"), run_name="cliapp_in_test")
        try:
            yield ns
        finally:
            ns["app"].close(timeout=5)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("COLUMNS", "LINES", "KATHIKON_DEBUG"):
            env.pop(name, None)
        env["RUST_BACKTRACE"] = "0"
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "kathikon.cli", *args]

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``kathikon ARGS`` in the project, with ``env`` added to the environment."""
        return subprocess.run(
            self.command(*args),
            cwd=self.root,
            env={**self.env(), **env},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )

    def json(self, *args: str) -> Any:
        result = self.cli(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def marked(self, job_id: int, what: str) -> bool:
        return (self.marks / f"{job_id}.{what}").exists()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    (tmp_path / "cliapp.py").write_text(APP)
    (tmp_path / "broken.py").write_text(BROKEN)
    (tmp_path / "needs_missing.py").write_text(NEEDS_MISSING)
    return Project(tmp_path)


def assert_error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """One line on stderr, nothing on stdout, the exit status ``code``; returns the line."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kathikon: error: "), lines[0]
    assert result.stdout == ""
    return lines[0]


def wait_for(what: str, check: Any, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen[str], log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def stderr(self) -> str:
        return self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(TIMEOUT)


@contextmanager
def worker(project: Project, *args: str) -> Iterator[WorkerProcess]:
    """``kathikon worker cliapp:app ARGS`` running, once it has logged its start line."""
    log = project.root / f"worker-{time.monotonic_ns()}.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            project.command("worker", "cliapp:app", *args),
            cwd=project.root,
            env=project.env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    w = WorkerProcess(proc, log)
    try:
        wait_for(
            "the worker's start line",
            lambda: "worker started" in w.stderr or proc.poll() is not None,
        )
        assert proc.poll() is None, w.stderr
        yield w
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)


def insert_sample(project: Project) -> dict[str, list[int]]:
    """Three completed "ok" jobs, a retryable "boom", a scheduled "slow" and an available
    "ok"; returns their ids by kind."""
    with project.app() as ns:
        app = ns["app"]
        done = [ns["ok"].insert({"n": n}).id for n in range(3)]
        failed = ns["boom"].insert({"n": 9}, tags=["t"]).id
        app.drain()
        later = ns["slow"].insert({"seconds": 0}, schedule_in=3600).id
        waiting = ns["ok"].insert({"n": 5}, priority=3).id
    return {"completed": done, "retryable": [failed], "scheduled": [later], "available": [waiting]}


def store_jobs(project: Project) -> dict[int, kathikon.Job]:
    app = kathikon.Kathikon(project.store)
    try:
        return {j.id: j for j in app.jobs(limit=10_000)}
    finally:
        app.close()


# -- help -----------------------------------------------------------------------------------


def test_help_lists_the_commands_and_version_prints_it(project: Project) -> None:
    result = project.cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("worker", "insert", "jobs", "job", "retry", "cancel", "stats", "prune"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), result.stdout
    version = project.cli("--version")
    assert version.returncode == 0
    assert kathikon.__version__ in version.stdout


# -- jobs / job -----------------------------------------------------------------------------


def test_jobs_json_matches_the_store_and_filters(project: Project) -> None:
    ids = insert_sample(project)
    stored = store_jobs(project)
    listed = project.json("jobs", "--app", "cliapp:app")
    assert [j["id"] for j in listed] == sorted(stored)
    for row in listed:
        job = stored[row["id"]]
        assert row["state"] == job.state.value
        assert (row["queue"], row["worker"], row["args"]) == (job.queue, job.worker, job.args)
        assert (row["attempt"], row["max_attempts"], row["priority"]) == (
            job.attempt,
            job.max_attempts,
            job.priority,
        )
        assert row["tags"] == job.tags
        assert row["inserted_at"] == job.inserted_at.isoformat()
        assert row["scheduled_at"] == job.scheduled_at.isoformat()
    # --path reads the same store the same way.
    assert project.json("jobs", "--path", str(project.store)) == listed
    # Filters.
    by_state = project.json("jobs", "--path", "jobs.redb", "--state", "completed")
    assert [j["id"] for j in by_state] == ids["completed"]
    by_queue = project.json("jobs", "--path", "jobs.redb", "--queue", "emails")
    assert [j["id"] for j in by_queue] == ids["scheduled"]
    by_worker = project.json("jobs", "--path", "jobs.redb", "--worker", "boom")
    assert [j["id"] for j in by_worker] == ids["retryable"]
    page = project.json("jobs", "--path", "jobs.redb", "--limit", "2", "--after", "1")
    assert [j["id"] for j in page] == sorted(stored)[1:3]
    assert project.json("jobs", "--path", "jobs.redb", "--state", "discarded") == []
    # The short column headings of `kathikon stats` are accepted too.
    assert project.json("jobs", "--path", "jobs.redb", "--state", "done") == by_state


def test_jobs_table(project: Project) -> None:
    ids = insert_sample(project)
    result = project.cli("jobs", "--app", "cliapp:app")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATE", "QUEUE"]
    (boom_line,) = [line for line in lines if line.split()[:1] == [str(ids["retryable"][0])]]
    assert "retryable" in boom_line and "boom" in boom_line
    # The last error's line, with user text printed as it is (not read as markup).
    assert "ValueError: boom [bold]not markup[/bold]" in boom_line
    assert len(lines) == 1 + 6
    limited = project.cli("jobs", "--app", "cliapp:app", "--limit", "2")
    assert "--after 2" in limited.stdout


def test_job_shows_every_field_and_the_tracebacks(project: Project) -> None:
    (job_id,) = insert_sample(project)["retryable"]
    (job,) = [j for j in store_jobs(project).values() if j.id == job_id]
    data = project.json("job", str(job_id), "--path", "jobs.redb")
    assert set(data) == {
        "id",
        "state",
        "queue",
        "worker",
        "args",
        "meta",
        "tags",
        "attempt",
        "max_attempts",
        "priority",
        "errors",
        "inserted_at",
        "scheduled_at",
        "attempted_at",
        "completed_at",
        "cancelled_at",
        "discarded_at",
        "result",
        "batch_id",
        "progress",
    }
    assert data["progress"] is None, "it never reported progress"
    assert data["result"] is None, "it has not completed"
    assert data["state"] == "retryable"
    assert data["args"] == {"n": 9} and data["tags"] == ["t"]
    assert job.attempted_at is not None
    assert data["attempted_at"] == job.attempted_at.isoformat()
    assert data["completed_at"] is None
    (error,) = data["errors"]
    assert error["attempt"] == 1
    assert error["error"] == job.errors[0]["error"]
    assert error["error"].startswith("Traceback (most recent call last):")

    shown = project.cli("job", str(job_id), "--app", "cliapp:app")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    for field in data:
        assert re.search(rf"^{field}\b", out, re.M), (field, out)
    assert "Traceback (most recent call last):" in out
    assert 'raise ValueError("boom [bold]not markup[/bold]")' in out
    assert "ValueError: boom [bold]not markup[/bold]" in out


# -- retry / cancel -------------------------------------------------------------------------


def test_retry_and_cancel(project: Project) -> None:
    ids = insert_sample(project)
    (failed,) = ids["retryable"]
    (later,) = ids["scheduled"]
    done = ids["completed"][0]

    retried = project.cli("retry", str(failed), str(done), "--path", "jobs.redb")
    assert retried.returncode == 0, retried.stderr
    assert f"job {failed}: retryable → available" in retried.stdout
    assert f"job {done}: completed → available" in retried.stdout

    cancelled = project.json("cancel", str(later), str(failed), "--app", "cliapp:app")
    assert [(r["id"], r["ok"], r["before"], r["job"]["state"]) for r in cancelled] == [
        (later, True, "scheduled", "cancelled"),
        (failed, True, "available", "cancelled"),
    ]
    stored = store_jobs(project)
    assert stored[later].state is S.CANCELLED
    assert stored[failed].state is S.CANCELLED
    assert stored[done].state is S.AVAILABLE

    # A finished job is left as it is.
    again = project.cli("cancel", str(later), "--path", "jobs.redb")
    assert again.returncode == 0
    assert f"job {later}: cancelled (unchanged)" in again.stdout


def test_retry_and_cancel_report_each_unknown_id_and_do_the_rest(project: Project) -> None:
    ids = insert_sample(project)
    (waiting,) = ids["available"]
    result = project.cli("cancel", "999", str(waiting), "12345", "--path", "jobs.redb", "--json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2
    # Each names its id once (not "job 999: no job with id 999").
    assert errors[0].startswith("kathikon: error: no job with id 999;"), errors[0]
    assert errors[0].count("999") == 1, errors[0]
    assert errors[1].startswith("kathikon: error: no job with id 12345;"), errors[1]
    rows = json.loads(result.stdout)
    assert [(r["id"], r["ok"]) for r in rows] == [(999, False), (waiting, True), (12345, False)]
    assert rows[0]["type"] == "JobNotFoundError"
    assert store_jobs(project)[waiting].state is S.CANCELLED
    retry = project.cli("retry", "999", "--path", "jobs.redb")
    assert "999" in assert_error_line(retry)


def test_retrying_an_executing_job_names_it_once(project: Project) -> None:
    with project.app() as ns:
        # Claimed and held by this process, which owns the store: the command is its client.
        (job,) = ns["app"].insert_all([ns["ok"].new({})])
        (claimed,) = ns["app"]._engine.claim("default", 1, 1.0)
        assert claimed.id == job.id
        line = assert_error_line(project.cli("retry", str(job.id), "--path", "jobs.redb"))
    assert line == (
        f"kathikon: error: job {job.id} is executing; it cannot be retried from that state"
    ), line


def test_many_ids_show_a_progress_bar_on_a_terminal_only(project: Project) -> None:
    with project.app() as ns:
        ids = [j.id for j in ns["app"].insert_all([ns["ok"].new({"n": n}) for n in range(25)])]
    args = ["cancel", *map(str, ids), "--path", "jobs.redb", "--json"]
    # stderr not a terminal: no bar, nothing on stderr.
    plain = project.cli(*args[:-1], "--json")
    assert plain.returncode == 0 and plain.stderr == ""
    # stderr a terminal (stdout still a pipe): the bar is drawn there, stdout stays JSON.
    with project.app() as ns:
        for job_id in ids:
            ns["app"].retry(job_id)
    leader, follower = pty.openpty()
    drawn = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                return
            if not chunk:
                return
            drawn.extend(chunk)

    env = project.env()
    env["TERM"] = "xterm"
    proc = subprocess.Popen(
        project.command(*args), cwd=project.root, env=env, stdout=subprocess.PIPE, stderr=follower
    )
    os.close(follower)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        reader.join(5)
        os.close(leader)
    assert proc.returncode == 0, drawn
    assert [r["job"]["state"] for r in json.loads(out)] == ["cancelled"] * 25
    assert b"cancelling jobs" in drawn and b"25/25" in drawn, drawn


# -- stats / prune --------------------------------------------------------------------------


def test_stats_counts_match_the_store(project: Project) -> None:
    insert_sample(project)
    with project.app() as ns:
        expected = ns["app"].stats()
    data = project.json("stats", "--app", "cliapp:app")
    assert {q: v["states"] for q, v in data["queues"].items()} == expected
    assert data["queues"]["default"]["total"] == 5
    assert data["queues"]["default"]["states"]["available"] == 1
    age = data["queues"]["default"]["oldest_available_age"]
    assert isinstance(age, float) and 0 <= age < 60
    assert data["queues"]["default"]["oldest_available_at"] is not None
    assert data["queues"]["emails"]["oldest_available_age"] is None
    # By path, the queues that hold jobs (here both).
    by_path = project.json("stats", "--path", "jobs.redb")
    assert {q: v["states"] for q, v in by_path["queues"].items()} == expected

    table = project.cli("stats", "--path", "jobs.redb")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:8] == ["queue", *(s.value for s in JobState)]
    assert rows[0].split()[:9] == ["default", "0", "1", "0", "1", "3", "0", "0", "5"]
    assert rows[0].split()[-1] == "s"  # "1.2 s": the oldest available job's wait


def test_prune(project: Project) -> None:
    ids = insert_sample(project)
    kept = project.json("prune", "--app", "cliapp:app", "--older-than", "1h")
    assert kept == {"pruned": 0, "older_than": 3600.0}
    result = project.cli("prune", "--path", "jobs.redb")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pruned 3 finished jobs"
    assert sorted(store_jobs(project)) == sorted(
        ids["retryable"] + ids["scheduled"] + ids["available"]
    )
    assert project.json("prune", "--path", "jobs.redb", "--older-than", "0") == {
        "pruned": 0,
        "older_than": 0.0,
    }


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["jobs", "--app", "nosuchmodule:app"], 1, "no module named 'nosuchmodule'"),
        (["jobs", "--app", "needs_missing:app"], 1, "kathikon_no_such_dependency"),
        (["stats", "--app", "broken:app"], 1, "RuntimeError: no settings for this environment"),
        (["jobs", "--app", "cliapp:nope"], 1, "no attribute 'nope'"),
        (["jobs", "--app", "cliapp:not_an_app"], 1, "not a kathikon.Kathikon app"),
        (["jobs", "--app", "not a module"], 1, "MODULE:ATTRIBUTE"),
        (["worker", "nosuchmodule:app"], 1, "no module named 'nosuchmodule'"),
        (["worker", "cliapp:app", "--processes", "0"], 2, "'0' is not an int of at least 1"),
        (["worker", "cliapp:app", "-p", "many"], 2, "nor 'auto'"),
        (["job", "424242", "--app", "cliapp:app"], 1, "no job with id 424242"),
        (["job", "424242424242424242424242", "--path", "jobs.redb"], 1, "no job with id"),
        (["job", "abc", "--path", "jobs.redb"], 2, "'abc' is not a valid integer"),
        (["jobs"], 2, "--app MODULE:ATTRIBUTE, --path FILE, --url URL"),
        (["jobs", "--app", "cliapp:app", "--path", "jobs.redb"], 2, "--app"),
        (["stats", "--path", "missing.redb"], 1, "no store at missing.redb"),
        (["stats", "--path", "cliapp.py"], 1, "cliapp.py is not a Kathikon store"),
        (["prune", "--path", "jobs.redb", "--older-than", "soon"], 2, "'soon' is not a duration"),
        (["jobs", "--path", "jobs.redb", "--state", "lost"], 2, "'lost' is not one of"),
        (["frobnicate"], 2, "No such command 'frobnicate'"),
    ],
)
def test_errors_are_one_line_with_a_nonzero_status(
    project: Project, args: list[str], code: int, needle: str
) -> None:
    kathikon.Kathikon(project.store).close()  # an empty store for the --path cases
    line = assert_error_line(project.cli(*args), code)
    assert needle in line, line


# -- worker ---------------------------------------------------------------------------------


def test_worker_runs_jobs_then_stops_gracefully_on_sigterm(project: Project) -> None:
    with project.app() as ns:
        quick = [ns["ok"].insert({"n": n}).id for n in range(4)]
        first = ns["slow"].insert({"seconds": 1.0}).id
        second = ns["slow"].insert({"seconds": 1.0}).id
    with worker(project, "--grace", "10") as w:
        # Jobs may finish (and log their lines) before the start line is written.
        started = [line for line in w.stderr.splitlines() if "worker started" in line]
        assert len(started) == 1, w.stderr
        start_line = started[0]
        assert f"kathikon {kathikon.__version__} worker started" in start_line
        assert f"pid={w.proc.pid}" in start_line
        assert f"store={project.store.resolve()}" in start_line
        assert "queues=default:2,emails:1" in start_line
        assert "concurrency=3" in start_line
        assert "role=owner" in start_line and "processes=1" in start_line
        wait_for("the quick jobs", lambda: all(project.marked(i, "done") for i in quick))
        wait_for("the first slow job to start", lambda: project.marked(first, "start"))
        assert not project.marked(first, "done")
        sent = time.monotonic()
        code = w.stop(signal.SIGTERM)
        elapsed = time.monotonic() - sent
        log = w.stderr
    assert code == 0, log
    assert elapsed < 10, f"took {elapsed:.1f} s, past the grace period"
    assert "SIGTERM received" in log and "every running job finished" in log
    assert "Traceback" not in log
    # The running job was waited for; no new job was claimed once SIGTERM arrived.
    assert project.marked(first, "done")
    assert not project.marked(second, "start")
    stored = store_jobs(project)
    assert [stored[i].state for i in quick] == [S.COMPLETED] * 4
    assert stored[first].state is S.COMPLETED
    assert (stored[second].state, stored[second].attempt) == (S.AVAILABLE, 0)


def test_worker_runs_only_the_selected_queues(project: Project) -> None:
    with project.app() as ns:
        quick = [ns["ok"].insert({"n": n}).id for n in range(3)]
        mail = ns["slow"].insert({"seconds": 0}).id
    with worker(project, "--queues", "default", "--concurrency", "1", "--grace", "5") as w:
        assert "queues=default:1 concurrency=1" in w.stderr
        wait_for("the default jobs", lambda: all(project.marked(i, "done") for i in quick))
        assert w.stop(signal.SIGINT) == 0, w.stderr
        assert "SIGINT received" in w.stderr
    stored = store_jobs(project)
    assert [stored[i].state for i in quick] == [S.COMPLETED] * 3
    assert stored[mail].state is S.AVAILABLE


def test_worker_queue_concurrency_syntax(project: Project) -> None:
    with worker(project, "-q", "emails:3,default", "-c", "2") as w:
        assert "queues=emails:3,default:2 concurrency=5" in w.stderr
        assert w.stop() == 0


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--queues", "nope"], 1, "queue 'nope' is not configured"),
        (["--queues", "emails:0"], 2, "at least 1"),
        (["--queues", ","], 2, "name the queues"),
        (["--concurrency", "0"], 2, "--concurrency"),
    ],
)
def test_worker_refuses_bad_queue_options(
    project: Project, args: list[str], code: int, needle: str
) -> None:
    line = assert_error_line(project.cli("worker", "cliapp:app", *args), code)
    assert needle in line, line


def test_worker_hands_back_jobs_that_outlive_the_grace_period(project: Project) -> None:
    with project.app() as ns:
        stuck = ns["slow"].insert({"seconds": 60}).id
    with worker(project, "--grace", "0.3") as w:
        wait_for("the job to start", lambda: project.marked(stuck, "start"))
        sent = time.monotonic()
        assert w.stop() == 0, w.stderr
        assert time.monotonic() - sent < 10
        assert "grace period" in w.stderr
    # The store was released with the job handed back, its attempt not counted.
    job = store_jobs(project)[stuck]
    assert job.state in (S.SCHEDULED, S.AVAILABLE)
    assert (job.attempt, job.max_attempts) == (1, 21)
    assert job.errors[-1]["error"].startswith("interrupted by shutdown")


def test_a_second_signal_exits_at_once(project: Project) -> None:
    with project.app() as ns:
        stuck = ns["slow"].insert({"seconds": 60}).id
    with worker(project, "--grace", "60") as w:
        wait_for("the job to start", lambda: project.marked(stuck, "start"))
        w.proc.send_signal(signal.SIGTERM)
        wait_for("the first signal to be logged", lambda: "SIGTERM received" in w.stderr)
        sent = time.monotonic()
        assert w.stop() == 1
        assert time.monotonic() - sent < 10
    assert store_jobs(project)[stuck].state is S.AVAILABLE


def test_a_store_held_by_a_worker_is_inspected_through_it(project: Project) -> None:
    with project.app() as ns:
        queued = ns["slow"].insert({"seconds": 60}, schedule_in=3600).id
    with worker(project) as w:
        # Each command opens the store, finds it held by the worker, and goes through its
        # socket: the same answers as with the worker stopped.
        listed = project.json("jobs", "--path", "jobs.redb")
        assert [j["id"] for j in listed] == [queued]
        stats = project.json("stats", "--app", "cliapp:app")
        assert stats, stats
        cancelled = project.cli("cancel", str(queued), "--path", str(project.store))
        assert cancelled.returncode == 0, cancelled.stderr
        assert project.json("job", str(queued), "--path", "jobs.redb")["state"] == "cancelled"
        assert w.proc.poll() is None
        assert w.stop() == 0
    assert store_jobs(project)[queued].state is S.CANCELLED


def test_a_store_held_by_a_process_that_does_not_serve_it_is_refused_naming_it(
    project: Project,
) -> None:
    # The holder removes its socket: to a newcomer it looks like a holder that does not serve
    # (an older kathikon), which is refused with the holder's pid after the connect timeout.
    code = (
        "import os, sys, time, kathikon\n"
        "app = kathikon.Kathikon(sys.argv[1])\n"
        "os.remove(sys.argv[1] + '.sock')\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(project.store)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        line = assert_error_line(project.cli("jobs", "--path", str(project.store)))
        assert "held by another process" in line and f"pid {holder.pid}" in line, line
        assert "does not serve the store" in line, line
    finally:
        holder.kill()
        holder.communicate()


# -- insert ---------------------------------------------------------------------------------


def test_insert_stores_the_job_with_every_option_and_prints_its_id(project: Project) -> None:
    plain = project.cli("insert", "cliapp:app", "ok")
    assert plain.returncode == 0, plain.stderr
    job = store_jobs(project)[int(plain.stdout)]
    assert (job.worker, job.queue, job.args, job.state) == ("ok", "default", {}, S.AVAILABLE)

    result = project.cli(
        "insert",
        "cliapp:app",
        "boom",
        "--args",
        '{"to": "ann@example.com", "n": [1, 2]}',
        "--queue",
        "emails",
        "--priority",
        "3",
        "--schedule-in",
        "2h",
        "--max-attempts",
        "5",
        "--tags",
        "billing, urgent",
        "--meta",
        '{"by": "ops"}',
        "--json",
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    job = store_jobs(project)[printed["id"]]
    assert printed["state"] == "scheduled" and job.state is S.SCHEDULED
    assert job.args == {"to": "ann@example.com", "n": [1, 2]} == printed["args"]
    assert (job.worker, job.queue, job.priority, job.max_attempts) == ("boom", "emails", 3, 5)
    assert job.tags == ["billing", "urgent"] and job.meta == {"by": "ops"}
    assert job.scheduled_at is not None and job.inserted_at is not None
    assert (job.scheduled_at - job.inserted_at).total_seconds() == pytest.approx(7200, abs=1)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (["ok", "--args", '{"to": '], "is not JSON"),
        (["ok", "--args", "[1, 2]"], "is a JSON array, not an object"),
        (["ok", "--args", "null"], "is a JSON null, not an object"),
        (["ok", "--meta", "meta"], "--meta"),
        (["nope"], "no worker named 'nope'; its workers: boom, ok, slow"),
        (["ok", "--queue", "nowhere"], "queue 'nowhere' is not configured"),
        (["ok", "--priority", "12"], "12 is not in the range"),
        (["ok", "--max-attempts", "0"], "--max-attempts"),
        (["ok", "--schedule-in", "soon"], "'soon' is not a duration"),
        (["ok", "--tags", "a,,b"], "has an empty tag"),
        (["ok", "--frobnicate"], "No such option"),
    ],
)
def test_insert_refuses_bad_input_with_status_2_and_stores_nothing(
    project: Project, options: list[str], needle: str
) -> None:
    line = assert_error_line(project.cli("insert", "cliapp:app", *options), 2)
    assert needle in line, line
    assert not project.store.exists() or store_jobs(project) == {}


def test_insert_into_an_app_in_testing_mode_is_refused(project: Project) -> None:
    """Its jobs live in the command's memory: stored there, a job would be lost at exit."""
    line = assert_error_line(project.cli("insert", "cliapp:app", "ok", KATHIKON_TESTING="manual"))
    assert "keeps its jobs in memory (KATHIKON_TESTING=manual)" in line, line
    assert "unset KATHIKON_TESTING" in line, line
    assert not project.store.exists()


def test_insert_goes_to_a_running_worker_which_runs_the_job(project: Project) -> None:
    with worker(project) as w:
        result = project.cli("insert", "cliapp:app", "ok", "--args", '{"n": 1}')
        assert result.returncode == 0, result.stderr
        job_id = int(result.stdout)
        wait_for("the inserted job to run", lambda: project.marked(job_id, "done"))
        assert w.stop() == 0
    assert store_jobs(project)[job_id].state is S.COMPLETED


# -- stats --watch --------------------------------------------------------------------------


class Lines:
    """The lines a process writes to a pipe, collected by a thread as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.lines: list[str] = []
        self._pipe = proc.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._pipe:
            self.lines.append(line.rstrip("\n"))

    def wait(self, what: str, check: Any) -> None:
        wait_for(what, lambda: check(list(self.lines)))

    def join(self) -> list[str]:
        self._thread.join(TIMEOUT)
        return self.lines


@contextmanager
def watching(project: Project, *args: str, **pipes: Any) -> Iterator[subprocess.Popen[str]]:
    """``kathikon stats --path jobs.redb --watch 0.1 ARGS`` running; killed if the block
    did not end it, its pipes closed."""
    command = project.command("stats", "--path", "jobs.redb", "--watch", "0.1", *args)
    env = {**project.env(), "TERM": "xterm"}
    with subprocess.Popen(command, cwd=project.root, env=env, text=True, **pipes) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT)


def interrupt(proc: subprocess.Popen[str]) -> int:
    """Ctrl-C, as a terminal sends it; the exit status."""
    proc.send_signal(signal.SIGINT)
    return proc.wait(TIMEOUT)


def test_stats_watch_prints_a_table_per_interval_until_ctrl_c(project: Project) -> None:
    insert_sample(project)
    with watching(project, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        out = Lines(proc)
        out.wait("two tables", lambda lines: sum(x.startswith("-- ") for x in lines) >= 2)
        # The watch holds the store; an insert reaches it through its socket, and a later
        # table counts the new job.
        assert project.cli("insert", "cliapp:app", "ok").returncode == 0
        out.wait(
            "a table with the new job",
            lambda lines: any(x.split()[:1] == ["default"] and x.split()[8] == "6" for x in lines),
        )
        assert interrupt(proc) == 0
        lines = out.join()
        assert proc.stderr is not None and proc.stderr.read() == ""
    for i, line in enumerate(lines[:-1]):  # the last may have been cut by Ctrl-C
        if line.startswith("-- "):
            assert re.fullmatch(r"-- \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", line), line
            assert lines[i + 1].split()[:2] == ["queue", "scheduled"], lines[i : i + 2]


def test_stats_watch_json_is_one_object_per_line(project: Project) -> None:
    insert_sample(project)
    with watching(project, "--json", stdout=subprocess.PIPE) as proc:
        out = Lines(proc)
        out.wait("three reports", lambda lines: len(lines) >= 3)
        reports = [json.loads(line) for line in out.lines[:3]]  # whole lines, before Ctrl-C
        assert interrupt(proc) == 0
        out.join()
    assert all(r["queues"]["default"]["total"] == 5 for r in reports)


def test_stats_watch_refreshes_in_place_on_a_terminal(project: Project) -> None:
    insert_sample(project)
    leader, follower = pty.openpty()
    drawn = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                return
            if not chunk:
                return
            drawn.extend(chunk)

    home_and_clear = b"\x1b[H\x1b[2J"
    with watching(project, stdout=follower, stderr=subprocess.PIPE) as proc:
        os.close(follower)
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            # Three: the first two screens are then complete, whenever Ctrl-C comes.
            wait_for("three refreshes", lambda: bytes(drawn).count(home_and_clear) >= 3)
            assert interrupt(proc) == 0
        finally:
            reader.join(5)
            os.close(leader)
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    screens = bytes(drawn).split(home_and_clear)[1:]
    assert all(b"every 0.1 s (Ctrl-C to stop)" in s for s in screens[:2]), screens[:2]
    assert all(b"default" in s for s in screens[:2]), screens[:2]
    assert b"-- " not in bytes(drawn)  # no time lines: the screen is redrawn instead


# -- an app module that fails to import ----------------------------------------------------

FAILING_MODULES = {
    # A failure inside a library the module calls: the user's line is the one shown.
    "settings_app.py": 'import json\n\ndef load():\n    return json.loads("{")\n\nS = load()\n',
    "syntax_app.py": "import kathikon\nx = (\n",
    # The package imports a module of its own, which imports something missing.
    "shop/__init__.py": "from shop import tasks\n",
    "shop/tasks.py": "import os\n\nfrom shop.nothing_here import thing\n",
}


@pytest.mark.parametrize(
    ("spec", "where", "what"),
    [
        ("broken:app", "broken.py, line 1", "RuntimeError: no settings for this environment"),
        ("settings_app:app", "settings_app.py, line 4, in load", "JSONDecodeError: Expecting"),
        ("syntax_app:app", "syntax_app.py, line 2", "SyntaxError: '(' was never closed"),
        ("shop:app", "tasks.py, line 3", "No module named 'shop.nothing_here'"),
        ("shop.tasks:app", "tasks.py, line 3", "No module named 'shop.nothing_here'"),
    ],
)
def test_an_import_error_names_the_file_and_line_and_debug_shows_the_traceback(
    project: Project, spec: str, where: str, what: str
) -> None:
    for name, text in FAILING_MODULES.items():
        (project.root / name).parent.mkdir(exist_ok=True)
        (project.root / name).write_text(text)
    for command in (["worker", spec], ["stats", "--app", spec], ["insert", spec, "ok"]):
        line = assert_error_line(project.cli(*command))
        assert f"failed at {project.root}" in line and f"{where}: " in line, line
        assert what in line and "KATHIKON_DEBUG=1 shows the traceback" in line, line
    debug = project.cli("worker", spec, KATHIKON_DEBUG="1")
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback (most recent call last):"), debug.stderr
    assert f'File "{project.root}' in debug.stderr, debug.stderr
    last = debug.stderr.strip().splitlines()[-1]
    assert last.startswith("kathikon: error: importing") and where in last, last


def test_batch_shows_a_batch_as_a_table_or_json(project: Project) -> None:
    app = kathikon.Kathikon(project.store, queues={"default": 2})
    try:
        app.worker(name="member")(lambda job: None)
        app.worker(name="done")(lambda job: None)
        batch = app.insert_batch([app.new("member") for _ in range(3)], on_finished="done")
        app.drain()
        callback = app.batch(batch.id).callbacks["finished"]
    finally:
        app.close()
    shown = project.cli("batch", batch.id, "--path", "jobs.redb")
    assert shown.returncode == 0, shown.stderr
    assert "3 of 3 finished" in shown.stdout and f"job {callback}" in shown.stdout
    data = project.json("batch", batch.id, "--path", "jobs.redb")
    assert data["counts"]["completed"] == 3 and data["pending"] == 0
    assert data["callbacks"] == {"finished": callback}
    missing = project.cli("batch", "never", "--path", "jobs.redb")
    assert 'no batch with id "never"' in assert_error_line(missing)
