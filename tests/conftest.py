"""Shared fixtures. Tests run against the installed wheel (see `make test-python`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import settings

import kathikon

settings.register_profile("fast", max_examples=30, deadline=None)
settings.register_profile("slow", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("KATHIKON_HYPOTHESIS", "fast"))


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A path for a new store file in a fresh temporary directory."""
    return tmp_path / "jobs.redb"


@pytest.fixture
def app(store_path: Path) -> Iterator[kathikon.Kathikon]:
    """A file-backed app with two queues, closed after the test."""
    a = kathikon.Kathikon(
        store_path, queues={"default": 4, "emails": 2}, poll_interval=0.2, scheduler_interval=0.2
    )
    try:
        yield a
    finally:
        a.close(timeout=5)


@pytest.fixture
def memory_app() -> Iterator[kathikon.Kathikon]:
    """An in-memory app, closed after the test."""
    a = kathikon.Kathikon(None, queues={"default": 4}, poll_interval=0.2)
    try:
        yield a
    finally:
        a.close(timeout=5)


WaitUntil = Callable[..., None]


def _wait_until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` every 10 ms until it is truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate!r}")
        time.sleep(0.01)


@pytest.fixture
def wait_until() -> WaitUntil:
    """``wait_until(predicate, timeout=5.0, what="...")``: poll with a deadline, no fixed sleeps."""
    return _wait_until


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    """The session's throwaway PostgreSQL server (tests/pg_server.py), stopped at the end."""
    import pg_server

    try:
        yield pg_server.server()
    finally:
        pg_server.stop()


@pytest.fixture
def pg_url(pg_server: object) -> str:
    """The url of a fresh, empty database on the session's PostgreSQL server."""
    import pg_server as servers

    assert isinstance(pg_server, servers.Server)
    return pg_server.database()


@pytest.fixture
def pg_db(pg_url: str) -> str:
    """A fresh database with Kathikon's schema, made by ``kathikon migrate --url``."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "kathikon.cli", "migrate", "--url", pg_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return pg_url
