"""Queue limits through the public API: declared in the constructor's queue settings and
stored for every process, changed by ``scale_queue``, shown by ``check_queue``, enforced on
a running app's own workers, on the embedded store and on PostgreSQL; bad limits are a
``ConfigurationError`` naming the value, and change nothing. (Real worker processes:
``multiprocess/test_limits_processes.py``.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import kathikon

PARTITION = {"fields": ["args"], "keys": ["customer"]}

OpenApp = Callable[..., kathikon.Kathikon]


@pytest.fixture(params=["embedded", "postgres"])
def open_app(request: pytest.FixtureRequest, tmp_path: Path) -> OpenApp:
    """``open_app(**options)``: an app on the test's store, the same one each call."""
    if request.param == "embedded":
        return lambda **options: kathikon.Kathikon(tmp_path / "jobs.redb", **options)
    url = request.getfixturevalue("pg_url")
    return lambda **options: kathikon.Kathikon(url=url, migrate=True, **options)


def test_declared_limits_are_stored_and_shown(open_app: OpenApp) -> None:
    queues: dict[str, Any] = {
        "api": {"concurrency": 4, "global_limit": 3, "rate_limit": {"allowed": 100, "period": 60}}
    }
    app = open_app(queues=queues)
    check = app.check_queue("api")
    assert check.global_limit == {"allowed": 3, "partition": None}
    assert check.rate_limit == {"allowed": 100, "period": 60.0, "partition": None}
    app.close()
    # Another app of the store that declares the queue without limits leaves them stored.
    other = open_app(queues={"api": 2})
    assert other.check_queue("api").global_limit == {"allowed": 3, "partition": None}
    other.close()


def test_scale_queue_sets_and_removes_limits_and_keeps_what_it_is_not_given(
    open_app: OpenApp,
) -> None:
    app = open_app(queues={"api": 4})
    settings = app.scale_queue("api", global_limit={"allowed": 1, "partition": PARTITION})
    assert settings.global_limit == {"allowed": 1, "partition": {**PARTITION}}
    assert settings.concurrency is None, "the concurrency was not given: unchanged"
    settings = app.scale_queue("api", 8, rate_limit={"allowed": 5, "period": 0.5})
    assert settings.concurrency == 8
    assert settings.rate_limit == {"allowed": 5, "period": 0.5, "partition": None}
    assert settings.global_limit is not None, "kept"
    settings = app.scale_queue("api", global_limit=None, rate_limit=None)
    assert settings.global_limit is None and settings.rate_limit is None
    app.close()


@pytest.mark.parametrize(
    ("limits", "names"),
    [
        ({"global_limit": 0}, "allowed=0"),
        ({"global_limit": True}, "allowed=True"),
        ({"global_limit": "3"}, "allowed='3'"),
        ({"global_limit": {"allowed": 2, "burst": 1}}, "['burst']"),
        ({"global_limit": {"allowed": 1, "partition": {"fields": ["user"]}}}, "['user']"),
        ({"global_limit": {"allowed": 1, "partition": {"fields": "args"}}}, "fields='args'"),
        ({"global_limit": {"allowed": 1, "partition": {"fields": []}}}, "fields=[]"),
        (
            {"global_limit": {"allowed": 1, "partition": {"fields": ["args"], "keys": [7]}}},
            "keys=[7]",
        ),
        (
            {"global_limit": {"allowed": 1, "partition": {"fields": ["worker"], "keys": ["a"]}}},
            "keys=['a']",
        ),
        ({"rate_limit": {"allowed": 5}}, "period=None"),
        ({"rate_limit": {"allowed": 5, "period": 0}}, "period=0"),
        ({"rate_limit": {"allowed": 5, "period": float("inf")}}, "period=inf"),
        ({"rate_limit": {"allowed": -1, "period": 1}}, "allowed=-1"),
        ({"rate_limit": 10}, "rate_limit=10"),
    ],
)
def test_bad_limits_are_refused_naming_the_value_and_change_nothing(
    tmp_path: Path, limits: dict[str, Any], names: str
) -> None:
    with pytest.raises(kathikon.ConfigurationError, match="'api'") as refused:
        kathikon.Kathikon(tmp_path / "jobs.redb", queues={"api": {"concurrency": 2, **limits}})
    assert names in str(refused.value)
    app = kathikon.Kathikon(tmp_path / "jobs.redb", queues={"api": 2})
    with pytest.raises(kathikon.ConfigurationError, match="'api'") as refused:
        app.scale_queue("api", **limits)
    assert names in str(refused.value)
    check = app.check_queue("api")
    assert check.global_limit is None and check.rate_limit is None, "nothing stored"
    app.close()


def test_scale_queue_refuses_limits_with_local_only_and_a_call_that_sets_nothing(
    tmp_path: Path,
) -> None:
    app = kathikon.Kathikon(tmp_path / "jobs.redb", queues={"api": 2})
    with pytest.raises(kathikon.ConfigurationError, match="local_only"):
        app.scale_queue("api", global_limit=1, local_only=True)
    with pytest.raises(kathikon.ConfigurationError, match="pass a concurrency"):
        app.scale_queue("api")
    assert app.check_queue("api").global_limit is None
    app.close()


def test_a_running_apps_workers_keep_to_the_global_limit(open_app: OpenApp) -> None:
    app = open_app(queues={"api": {"concurrency": 8, "global_limit": 2}})
    running = 0
    most = 0
    lock = threading.Lock()

    @app.worker(queue="api")
    def call(job: kathikon.Job) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    app.insert_all([call.new({}) for _ in range(30)])
    app.start()
    deadline = time.monotonic() + 30
    while app.check_queue("api").available or app.check_queue("api").executing:
        assert time.monotonic() < deadline, "the jobs never finished"
        time.sleep(0.02)
    app.stop()
    assert most == 2, "eight lanes, two at a time"
    app.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}  # a table row on one line
    return subprocess.run(
        [sys.executable, "-m", "kathikon", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_the_scale_command_sets_limits_and_queues_shows_them(tmp_path: Path) -> None:
    path = ("--path", str(tmp_path / "jobs.redb"))
    kathikon.Kathikon(
        tmp_path / "jobs.redb", queues={"api": {"concurrency": 4, "global_limit": 9}}
    ).close()
    rate = '{"allowed": 100, "period": 60, "partition": {"fields": ["args"], "keys": ["user"]}}'
    out = _cli("scale", "api", "--global-limit", "3", "--rate-limit", rate, *path, "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["global_limit"] == {"allowed": 3, "partition": None}
    assert shown["rate_limit"]["partition"] == {"fields": ["args"], "keys": ["user"]}
    table = _cli("queues", *path)
    text = "≤ 3 at once (0 running); 100 per 60 s per args[user] (0 in window)"
    assert text in table.stdout, table.stdout
    assert _cli("scale", "api", "--global-limit", "none", *path).returncode == 0
    bad = _cli("scale", "api", "--rate-limit", '{"allowed": 0, "period": 1}', *path)
    assert bad.returncode == 1 and "allowed=0" in bad.stderr and "Traceback" not in bad.stderr
    bad = _cli("scale", "api", "--rate-limit", "{oops", *path)
    assert bad.returncode == 1 and "is not JSON" in bad.stderr
    app = kathikon.Kathikon(tmp_path / "jobs.redb", queues={"api": 4})
    check = app.check_queue("api")
    assert check.global_limit is None and check.rate_limit is not None
    assert check.configured_concurrency == 4 and check.concurrency == 4, "N left out: unchanged"
    app.close()


def test_check_queue_shows_the_limits_in_use_per_partition(open_app: OpenApp) -> None:
    limit = {"allowed": 1, "partition": PARTITION}
    rate = {"allowed": 50, "period": 60}
    app = open_app(queues={"api": {"concurrency": 4, "global_limit": limit, "rate_limit": rate}})
    release = threading.Event()

    @app.worker(queue="api")
    def call(job: kathikon.Job) -> None:
        release.wait(30)

    app.insert_all([call.new({"customer": c}) for c in ("a", "a", "b")])
    app.start()
    deadline = time.monotonic() + 30
    while app.check_queue("api").executing < 2:
        assert time.monotonic() < deadline, "two jobs never ran"
        time.sleep(0.02)
    usage = app.check_queue("api").limit_usage
    assert usage == {"executing": {'"a"': 1, '"b"': 1}, "window": {"": 2}}
    release.set()
    app.stop()
    app.close()
