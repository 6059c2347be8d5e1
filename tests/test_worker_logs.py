"""`kathikon worker` logs one line per job outcome on the `kathikon` logger (text or JSON),
at the level of the outcome; an app used as a library logs them only once it opts in."""

from __future__ import annotations

import json
import logging
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from worker_project import Project, wait_for, worker

import kathikon
from kathikon import telemetry

JOB_KEYS = {
    "id",
    "worker",
    "queue",
    "attempt",
    "max_attempts",
    "outcome",
    "state",
    "duration",
    "error",
}
LINE_KEYS = {"time", "level", "logger", "message", "event", "traceback"}


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def logfmt(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in shlex.split(text))


def job_lines(log: str) -> dict[int, tuple[str, dict[str, str]]]:
    """The text job lines by job id (the last one of each job): (level, fields)."""
    found: dict[int, tuple[str, dict[str, str]]] = {}
    for line in log.splitlines():
        m = re.match(r"\S+ \S+ (DEBUG|INFO|WARNING|ERROR) kathikon: (job=.*)$", line)
        if m:
            fields = logfmt(m.group(2))
            found[int(fields["job"])] = (m.group(1), fields)
    return found


def insert_each_kind(project: Project) -> dict[str, int]:
    with project.app(WITH_GHOST="1") as ns:
        return {
            "ok": ns["ok"].insert().id,
            "boom": ns["boom"].insert().id,
            "last": ns["last"].insert().id,
            "gives_up": ns["gives_up"].insert().id,
            "ghost": ns["ghost"].insert().id,
        }


def run_until_logged(
    project: Project, ids: dict[str, int], *args: str, started: str = "worker started"
) -> str:
    with worker(project, "--grace", "5", *args, started=started) as w:
        wait_for(
            "a line per job",
            lambda: all(f"job={i} " in w.stderr or f'"id": {i},' in w.stderr for i in ids.values()),
        )
        assert w.stop() == 0, w.stderr
        return w.stderr


def test_one_line_per_job_outcome_at_its_level(project: Project) -> None:
    ids = insert_each_kind(project)
    lines = job_lines(run_until_logged(project, ids))
    level, ok = lines[ids["ok"]]
    assert level == "INFO"
    assert ok["worker"] == "ok" and ok["queue"] == "default"
    assert (ok["attempt"], ok["outcome"], ok["state"]) == ("1/20", "complete", "completed")
    assert re.fullmatch(r"\d+\.\d{4}s", ok["duration"]), ok
    assert "error" not in ok

    level, boom = lines[ids["boom"]]
    assert (level, boom["outcome"], boom["state"]) == ("WARNING", "fail", "retryable")
    assert boom["attempt"] == "1/3"
    assert boom["error"] == "ValueError: boom"

    level, last = lines[ids["last"]]
    assert (level, last["state"], last["error"]) == ("ERROR", "discarded", "KeyError: 'gone'")

    level, gave_up = lines[ids["gives_up"]]
    assert (level, gave_up["outcome"], gave_up["error"]) == ("ERROR", "discard", "bad payload")

    # Not registered in the worker process: an ERROR that names the worker and the fix.
    level, ghost = lines[ids["ghost"]]
    assert level == "ERROR"
    assert "worker 'ghost' is not registered" in ghost["error"]
    assert "@app.worker or app.register" in ghost["error"]


def test_json_lines_have_fixed_keys(project: Project) -> None:
    ids = insert_each_kind(project)
    log = run_until_logged(project, ids, "--log-format", "json")
    records = [json.loads(line) for line in log.splitlines()]
    assert records, log
    jobs: dict[int, dict[str, Any]] = {}
    for record in records:
        if record["event"] == "job":
            assert set(record) == LINE_KEYS | JOB_KEYS, record
            jobs[record["id"]] = record
        else:
            assert set(record) == LINE_KEYS, record
    assert any("worker started" in r["message"] for r in records)
    ok = jobs[ids["ok"]]
    assert (ok["level"], ok["logger"], ok["worker"]) == ("INFO", "kathikon", "ok")
    assert (ok["attempt"], ok["max_attempts"], ok["state"]) == (1, 20, "completed")
    assert isinstance(ok["duration"], float) and ok["error"] is None
    boom = jobs[ids["boom"]]
    assert (boom["level"], boom["state"], boom["error"]) == (
        "WARNING",
        "retryable",
        "ValueError: boom",
    )
    assert jobs[ids["ghost"]]["level"] == "ERROR"


def test_log_level_hides_the_lower_levels(project: Project) -> None:
    ids = insert_each_kind(project)
    del ids["ok"]
    with project.app() as ns:
        ok = ns["ok"].insert().id
    # The start line is INFO too: wait for the jobs alone.
    with worker(project, "--grace", "5", "--log-level", "WARNING", started="") as w:
        wait_for("the ok job", lambda: project.marked(ok, 1, "done"))
        wait_for(
            "the other jobs' lines", lambda: all(f"job={i} " in w.stderr for i in ids.values())
        )
        assert w.stop() == 0, w.stderr
        log = w.stderr
    lines = job_lines(log)
    assert ok not in lines
    assert lines[ids["boom"]][0] == "WARNING"
    assert " INFO " not in log


def test_a_library_app_logs_job_lines_only_once_it_opts_in(
    store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="kathikon")
    app = kathikon.Kathikon(store_path, queues={"default": 1}, poll_interval=0.1)

    @app.worker
    def noop(job: kathikon.Job) -> None: ...

    def job_records() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("job=")]

    try:
        first = noop.insert()
        assert app.drain() == {"completed": 1}
        assert job_records() == []
        telemetry.attach_job_logger()
        try:
            second = noop.insert()
            assert app.drain() == {"completed": 1}
        finally:
            assert telemetry.detach("kathikon-job-logger")
    finally:
        app.close(timeout=5)
    (record,) = job_records()
    assert record.name == "kathikon" and record.levelno == logging.INFO
    assert f"job={second.id} " in record.getMessage() and first.id != second.id
    assert record.kathikon["state"] == "completed"  # type: ignore[attr-defined]


def test_a_disabled_level_builds_no_line(store_path: Path) -> None:
    """A logger at ERROR gets the discarded job's line and nothing for the completed one."""
    logger = logging.getLogger("kathikon.test-disabled")
    logger.setLevel(logging.ERROR)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger.addHandler(Keep())
    telemetry.attach_job_logger(handler_id="disabled", logger=logger)
    app = kathikon.Kathikon(store_path, queues={"default": 1})

    @app.worker
    def noop(job: kathikon.Job) -> None: ...

    @app.worker(max_attempts=1)
    def fails(job: kathikon.Job) -> None:
        raise RuntimeError("kept")

    try:
        noop.insert()
        fails.insert()
        app.drain()
    finally:
        telemetry.detach("disabled")
        app.close(timeout=5)
    assert [r.levelno for r in records] == [logging.ERROR]
