"""Queues controlled at runtime: pause and resume (stored, exact across processes, kept
across a restart), scale, start and stop reaching worker processes, the ``kathikon`` queue
commands with and without a running worker, telemetry, testing modes and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import WaitUntil

import kathikon
from kathikon import telemetry
from kathikon.queues import QueueSettings, plan

# A worker process of queue "default", a client of the test's app (the owner). Its job
# `hold` marks itself running with a directory named after its id and runs until a file
# `go` appears; `noop` does nothing.
WORKER = textwrap.dedent(
    """
    import os, sys, time
    import kathikon

    store, marks, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = kathikon.Kathikon(store, queues={"default": concurrency}, poll_interval=0.2)
    assert app.role == "client", app.role

    @app.worker(name="hold")
    def hold(job):
        mark = os.path.join(marks, str(job.id))
        os.mkdir(mark)
        while not os.path.exists(os.path.join(marks, "go")):
            time.sleep(0.005)
        os.rmdir(mark)

    @app.worker(name="noop")
    def noop(job):
        pass

    app.start()
    print("worker ready", flush=True)
    while True:
        time.sleep(1)
    """
)


def _owner(store_path: Path) -> kathikon.Kathikon:
    app = kathikon.Kathikon(store_path, queues={"default": 1})
    app.worker(name="hold")(lambda job: None)
    app.worker(name="noop")(lambda job: None)
    return app


@pytest.fixture
def owner(store_path: Path) -> Iterator[kathikon.Kathikon]:
    """The store's owner, running no worker itself."""
    app = _owner(store_path)
    try:
        yield app
    finally:
        app.close(timeout=5)


class Workers:
    """Worker subprocesses (clients of the owner) and the directory their jobs mark."""

    def __init__(self, store_path: Path, marks: Path) -> None:
        self.store_path = store_path
        self.marks = marks
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, concurrency: int) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(self.store_path), str(self.marks), str(concurrency)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "worker ready"
        return proc

    def running(self) -> int:
        return sum(1 for p in self.marks.iterdir() if p.is_dir())

    def release(self) -> None:
        (self.marks / "go").touch()

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def workers(store_path: Path, tmp_path: Path, owner: kathikon.Kathikon) -> Iterator[Workers]:
    marks = tmp_path / "marks"
    marks.mkdir()
    w = Workers(store_path, marks)
    try:
        yield w
    finally:
        w.stop()


def _states(app: kathikon.Kathikon) -> dict[int, str]:
    return {job.id: job.state.value for job in app.jobs(limit=100_000)}


# -- pause and resume --------------------------------------------------------------------


def test_pause_is_stored_and_kept_by_the_next_owner_after_a_sigkill(store_path: Path) -> None:
    pauser = textwrap.dedent(
        """
        import sys, time
        import kathikon
        app = kathikon.Kathikon(sys.argv[1], queues={"default": 1, "emails": 1})
        app.pause_queue("emails")
        print("paused", flush=True)
        time.sleep(60)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", pauser, str(store_path)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "paused"
        app = kathikon.Kathikon(store_path, queues={"default": 1, "emails": 1})
        assert app.role == "client" and app.check_queue("emails").paused
        # No clean close: the pause comes back from the store's log, in the process that
        # takes the store over.
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    try:
        ran: list[int] = []
        app.worker(name="send", queue="emails")(lambda job: ran.append(job.id))
        job = app.insert("send")
        assert app.role == "owner", "the client took the store over"
        check = app.check_queue("emails")
        assert check.paused and "paused" in check.summary
        assert app.drain() == {}, "a paused queue's jobs wait, in a drain too"
        assert app.get(job).state is kathikon.JobState.AVAILABLE
        assert not app.resume_queue("emails").paused
        assert app.drain() == {"completed": 1} and ran == [job.id]
    finally:
        app.close()
    reopened = kathikon.Kathikon(store_path, queues={"default": 1, "emails": 1})
    try:
        assert not reopened.check_queue("emails").paused, "the resume is stored too"
    finally:
        reopened.close()


def test_no_job_of_a_paused_queue_starts_in_a_worker_process_after_pause_returns(
    owner: kathikon.Kathikon, workers: Workers, wait_until: WaitUntil
) -> None:
    workers.start(concurrency=4)
    owner.insert_all([owner.new("noop") for _ in range(30_000)])
    wait_until(lambda: owner.stats()["default"]["completed"] >= 100, 30, "the worker to run jobs")
    owner.pause_queue("default")
    at_pause = _states(owner)
    started = {i for i, s in at_pause.items() if s != "available"}
    assert len(started) < 30_000, "the worker ran every job before the pause: nothing proven"
    wait_until(lambda: owner.stats()["default"]["executing"] == 0, 10, "running jobs to end")
    time.sleep(1.0)  # the worker keeps claiming (in vain) all along
    after = _states(owner)
    assert {i for i, s in after.items() if s != "available"} == started
    owner.resume_queue("default")
    wait_until(lambda: owner.stats()["default"]["completed"] == 30_000, 120, "all to run")


# -- scale, start, stop --------------------------------------------------------------------


def test_scale_reaches_every_worker_process_and_back(
    owner: kathikon.Kathikon, workers: Workers, wait_until: WaitUntil
) -> None:
    workers.start(concurrency=1)
    workers.start(concurrency=1)
    owner.insert_all([owner.new("hold") for _ in range(20)])
    wait_until(lambda: workers.running() == 2, 30, "one job running in each process")
    owner.scale_queue("default", 3)
    # Three at once in each of the two processes: both got the new concurrency.
    wait_until(lambda: workers.running() == 6, 10, "three jobs running in each process")
    check = owner.check_queue("default")
    assert (check.concurrency, check.configured_concurrency) == (3, 1)
    time.sleep(0.5)
    assert workers.running() == 6, "more jobs ran at once than the new concurrency allows"
    owner.scale_queue("default", None)
    assert owner.check_queue("default").concurrency == 1
    workers.release()
    wait_until(lambda: owner.stats()["default"]["completed"] == 20, 30, "all to complete")


def test_start_queue_makes_a_worker_process_run_a_new_queue_and_stop_stops_it(
    owner: kathikon.Kathikon, workers: Workers, wait_until: WaitUntil
) -> None:
    workers.start(concurrency=1)
    with pytest.raises(kathikon.UnknownQueueError, match="start_queue"):
        owner.insert("noop", queue="imports")
    started = owner.start_queue("imports", 2)
    assert started == QueueSettings("imports", started=2)
    first = owner.insert("noop", queue="imports")
    wait_until(lambda: owner.get(first).state is kathikon.JobState.COMPLETED, 10, "the job to run")
    owner.stop_queue("imports")
    time.sleep(1.0)  # the worker's settings poll comes within a second
    second = owner.insert("noop", queue="imports")  # still an allowed insert target
    time.sleep(1.0)
    assert owner.get(second).state is kathikon.JobState.AVAILABLE, "a stopped queue ran"
    check = owner.check_queue("imports")
    assert check.stopped and check.concurrency == 0 and "stopped" in check.summary
    owner.start_queue("imports")
    wait_until(lambda: owner.get(second).state is kathikon.JobState.COMPLETED, 10, "the job to run")


def test_queues_lists_declared_runtime_and_job_holding_queues(owner: kathikon.Kathikon) -> None:
    owner.start_queue("imports", 4)
    owner.pause_queue("default")
    checks = {c.queue: c for c in owner.queues()}
    assert list(checks) == ["default", "imports"]
    assert checks["default"].paused and checks["default"].concurrency == 1
    assert checks["imports"].started == 4 and checks["imports"].configured_concurrency is None
    as_dict = checks["imports"].to_dict()
    assert as_dict["concurrency"] == 4 and as_dict["served"] is False
    json.dumps(as_dict)


def test_local_only_changes_this_process_alone(owner: kathikon.Kathikon, store_path: Path) -> None:
    local = owner.scale_queue("default", 7, local_only=True)
    assert local.concurrency == 7
    assert owner.check_queue("default").concurrency == 7
    assert owner._engine.queue_settings()[1] == [], "nothing stored"
    assert owner.pause_queue("default", local_only=True).paused
    assert owner.check_queue("default").concurrency == 0


def test_a_pool_splits_a_runtime_concurrency_as_it_splits_configured_ones() -> None:
    settings = {"q": QueueSettings("q", concurrency=5), "new": QueueSettings("new", started=3)}
    shares = [plan({"q": 1}, settings, {}, (i, 2)) for i in range(2)]
    assert shares == [{"q": 3, "new": 2}, {"q": 2, "new": 1}]
    stopped = {"q": QueueSettings("q", stopped=True, concurrency=5)}
    assert plan({"q": 1}, stopped, {}, (0, 1)) == {"q": 0}


# -- the command line ------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "kathikon", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_queue_commands_on_a_store_no_one_runs(store_path: Path) -> None:
    _owner(store_path).close()
    path = ("--path", str(store_path))
    assert _cli("pause", "default", *path)["paused"] is True
    assert _cli("start", "imports", "3", *path)["started"] == 3
    assert _cli("scale", "imports", "5", *path)["concurrency"] == 5
    assert _cli("stop", "imports", *path)["stopped"] is True
    listed = {q["queue"]: q for q in _cli("queues", *path)}
    assert listed["default"]["paused"] and listed["imports"]["stopped"]
    assert _cli("resume", "default", *path)["paused"] is False
    bad = subprocess.run(
        [sys.executable, "-m", "kathikon", "pause", "nope", *path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "'nope'" in bad.stderr and "Traceback" not in bad.stderr
    app = kathikon.Kathikon(store_path, queues={"default": 1})
    try:
        assert app.check_queue("imports").stopped, "stored by the commands"
    finally:
        app.close()


def test_the_queue_commands_reach_a_running_worker(
    owner: kathikon.Kathikon, workers: Workers, wait_until: WaitUntil, store_path: Path
) -> None:
    workers.start(concurrency=1)
    path = ("--path", str(store_path))
    owner.insert_all([owner.new("hold") for _ in range(4)])
    wait_until(lambda: workers.running() == 1, 10, "one job running")
    assert _cli("scale", "default", "2", *path)["concurrency"] == 2
    wait_until(lambda: workers.running() == 2, 10, "two jobs running")
    workers.release()
    wait_until(lambda: owner.stats()["default"]["completed"] == 4, 10, "the jobs to complete")
    assert _cli("pause", "default", *path)["paused"] is True
    job = owner.insert("noop")
    assert owner.check_queue("default").paused
    time.sleep(0.5)
    assert owner.get(job).state is kathikon.JobState.AVAILABLE
    _cli("resume", "default", *path)
    wait_until(lambda: owner.get(job).state is kathikon.JobState.COMPLETED, 10, "the job to run")


# -- telemetry, testing modes, bad input -------------------------------------------------------


def test_each_change_emits_its_telemetry_event(memory_app: kathikon.Kathikon) -> None:
    seen: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    events = [("kathikon", "queue", c) for c in ("pause", "resume", "scale", "start", "stop")]
    telemetry.attach("queues-test", events, lambda e, m, meta: seen.append((e, dict(meta))))
    try:
        memory_app.pause_queue("default")
        memory_app.scale_queue("default", 3)
        memory_app.resume_queue("default")
        memory_app.start_queue("extra", 2)
        memory_app.stop_queue("extra")
    finally:
        telemetry.detach("queues-test")
    assert [e[2] for e, _ in seen] == ["pause", "scale", "resume", "start", "stop"]
    assert seen[1][1] == {
        "queue": "default",
        "paused": True,
        "concurrency": 3,
        "started": None,
        "stopped": False,
        "global_limit": None,
        "rate_limit": None,
        "local_only": False,
    }


@pytest.mark.parametrize("mode", ["manual", "inline"])
def test_pause_holds_in_both_testing_modes(mode: str) -> None:
    app = kathikon.Kathikon(queues={"default": 1}, testing=mode)
    try:
        ran: list[int] = []
        app.worker(name="w")(lambda job: ran.append(job.id))
        app.pause_queue("default")
        job = app.insert("w")
        assert app.drain() == {} and ran == []
        assert app.get(job).state is kathikon.JobState.AVAILABLE
        app.resume_queue("default")
        assert app.drain() == {"completed": 1} and ran == [job.id]
    finally:
        app.close()


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda a: a.scale_queue("default", 0), kathikon.ConfigurationError, "at least 1"),
        (lambda a: a.scale_queue("default", 2**40), kathikon.ConfigurationError, "at most"),
        (lambda a: a.scale_queue("default", "3"), kathikon.ConfigurationError, "'3'"),
        (lambda a: a.start_queue("new", True), kathikon.ConfigurationError, "True"),
        (lambda a: a.start_queue("new"), kathikon.ConfigurationError, "pass its concurrency"),
        (lambda a: a.pause_queue("nope"), kathikon.UnknownQueueError, "'nope'"),
        (lambda a: a.stop_queue(""), kathikon.ConfigurationError, "queue name"),
        (lambda a: a.resume_queue(3), kathikon.ConfigurationError, "queue name"),
    ],
)
def test_bad_queue_changes_are_refused_naming_the_value(
    memory_app: kathikon.Kathikon, call: Any, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        call(memory_app)
    assert memory_app._engine.queue_settings()[1] == [], "nothing stored"


def test_a_paused_queue_in_this_process_resumes_its_idle_lanes_at_once(
    app: kathikon.Kathikon, wait_until: WaitUntil
) -> None:
    ran: list[int] = []
    app.worker(name="w", queue="emails")(lambda job: ran.append(job.id))
    app.pause_queue("emails")
    app.start()
    job = app.insert("w")
    time.sleep(0.5)
    assert ran == [] and app.get(job).state is kathikon.JobState.AVAILABLE
    app.resume_queue("emails")
    wait_until(lambda: ran == [job.id], 5, "the job to run")
    assert os.getpid() == app.check_queue("emails").claimer_pid
