"""A project directory with an app module, and `kathikon worker` run on it as a real
subprocess: shared by the worker shutdown and worker log tests."""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import kathikon

TIMEOUT = 30.0

APP = textwrap.dedent(
    """
    import asyncio, os, pathlib, time
    import kathikon

    HERE = pathlib.Path(__file__).resolve().parent
    MARKS = HERE / "marks"
    MARKS.mkdir(exist_ok=True)

    app = kathikon.Kathikon(
        HERE / "jobs.redb",
        queues={"default": 2, "slow": 1},
        poll_interval=0.1,
        scheduler_interval=0.1,
    )

    def mark(job, what):
        (MARKS / f"{job.id}.{job.attempt}.{what}").write_text("")

    @app.worker(name="ok")
    def ok(job):
        mark(job, "done")

    @app.worker(name="boom", max_attempts=3)
    def boom(job):
        raise ValueError("boom\\nsecond line")

    @app.worker(name="last", max_attempts=1)
    def last(job):
        raise KeyError("gone")

    @app.worker(name="gives_up")
    def gives_up(job):
        return kathikon.Discard("bad payload")

    @app.worker(name="sleeper", queue="slow", max_attempts=1)
    def sleeper(job):
        mark(job, "start")
        time.sleep(job.args["seconds"])
        mark(job, "done")

    @app.worker(name="slow_once", queue="slow", max_attempts=1)
    def slow_once(job):
        mark(job, "start")
        if job.attempt == 1:
            time.sleep(60)
        mark(job, "done")

    @app.worker(name="async_sleeper", queue="slow", max_attempts=1)
    async def async_sleeper(job):
        mark(job, "start")
        try:
            await asyncio.sleep(job.args["seconds"])
        except asyncio.CancelledError:
            mark(job, "cancelled")
            raise
        mark(job, "done")

    if os.environ.get("WITH_GHOST"):
        # Only the inserting process knows this worker: the worker process does not.
        @app.worker(name="ghost")
        def ghost(job):
            pass
    """
)


class Project:
    """A directory with the app module ``wapp`` and its store ``jobs.redb``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = root / "jobs.redb"
        self.marks = root / "marks"
        (root / "wapp.py").write_text(APP)

    @contextmanager
    def app(self, **env: str) -> Iterator[dict[str, Any]]:
        """The app module's namespace, loaded in this process (the store is held meanwhile)."""
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            ns = runpy.run_path(str(self.root / "wapp.py"), run_name="wapp_in_test")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        try:
            yield ns
        finally:
            ns["app"].close(timeout=5)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("COLUMNS", "LINES", "KATHIKON_DEBUG", "WITH_GHOST"):
            env.pop(name, None)
        return env

    def marked(self, job_id: int, attempt: int, what: str) -> bool:
        return (self.marks / f"{job_id}.{attempt}.{what}").exists()

    def jobs(self) -> dict[int, kathikon.Job]:
        app = kathikon.Kathikon(self.store)
        try:
            return {j.id: j for j in app.jobs(limit=1000)}
        finally:
            app.close(timeout=5)


def wait_for(what: str, check: Callable[[], object], timeout: float = TIMEOUT) -> None:
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
def worker(
    project: Project, *args: str, started: str = "worker started"
) -> Iterator[WorkerProcess]:
    """``kathikon worker wapp:app ARGS`` running, once its stderr shows ``started``."""
    log = project.root / f"worker-{time.monotonic_ns()}.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kathikon.cli", "worker", "wapp:app", *args],
            cwd=project.root,
            env=project.env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    w = WorkerProcess(proc, log)
    try:
        wait_for("the worker's start line", lambda: started in w.stderr or proc.poll() is not None)
        assert proc.poll() is None, w.stderr
        yield w
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
