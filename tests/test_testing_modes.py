"""Testing modes (``Kathikon(testing=...)``, ``KATHIKON_TESTING``) and
``kathikon.testing.use(app)``: testing an app that a module creates at import time, with a
real store path, without touching that store."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

import kathikon
from kathikon.testing import (
    assert_enqueued,
    drain_jobs,
    make_app,
    use,
)

pytest_plugins = ["pytester"]

S = kathikon.JobState
EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "testing_modes"

# A module that creates its app at import time on a real path, with function workers, as the
# deployment guide has it.
SHOP_JOBS = """
    import os

    import kathikon

    app = kathikon.Kathikon(
        os.path.join(os.environ["SHOP_DIR"], "shop.redb"), queues={"default": 5, "emails": 2}
    )
    sent = []


    @app.worker(queue="emails")
    def send_email(job):
        sent.append(job.args["to"])


    @app.worker
    def sign_up(job):
        send_email.insert({"to": job.args["email"]})
"""


def run_python(
    code: str, cwd: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)] if code else [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A project folder holding ``shop_jobs.py``; its store would be ``store/shop.redb``."""
    (tmp_path / "store").mkdir()
    (tmp_path / "shop_jobs.py").write_text(textwrap.dedent(SHOP_JOBS))
    return tmp_path


@pytest.fixture(autouse=True)
def no_testing_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says itself whether ``KATHIKON_TESTING`` is set."""
    monkeypatch.delenv("KATHIKON_TESTING", raising=False)


@pytest.fixture
def inline() -> Iterator[kathikon.Kathikon]:
    app = kathikon.Kathikon(queues={"default": 2, "emails": 1}, testing="inline")
    try:
        yield app
    finally:
        app.close(timeout=5)


# -- manual: a module-level app imported under KATHIKON_TESTING=manual ------------------------


def test_manual_module_app_creates_no_file_and_drains_its_function_workers(shop: Path) -> None:
    done = run_python(
        """
        import logging
        import kathikon
        from kathikon.testing import assert_enqueued, drain_jobs, perform_job
        import shop_jobs
        from shop_jobs import app

        logging.basicConfig(level=logging.INFO)
        assert app.testing == "manual"
        assert app.path.endswith("shop.redb")  # as given, for code that shows it
        assert app.role == "owner" and app.owner_pid > 0
        app.start()  # starts nothing: only says so
        app.start()  # (so it is not "already running" either)
        job = shop_jobs.sign_up.insert({"email": "ann@example.com"})
        assert job.state is kathikon.JobState.AVAILABLE
        assert_enqueued(app, worker=shop_jobs.sign_up, args={"email": "ann@example.com"})
        assert drain_jobs(app) == {"completed": 2}  # sign_up, then the email it inserted
        assert shop_jobs.sent == ["ann@example.com"]
        assert perform_job(shop_jobs.send_email, {"to": "bob@example.com"}).outcome == "completed"
        try:
            app.run()
        except kathikon.ConfigurationError as e:
            print("run:", e)
        app.stop()
        app.close()
        print("ok")
        """,
        shop,
        {"KATHIKON_TESTING": "manual", "SHOP_DIR": str(shop / "store")},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "ok"
    assert "run: app.run() runs workers, but this app is in testing mode" in done.stdout
    assert "KATHIKON_TESTING='manual' is set" in done.stdout
    assert "no workers start" in done.stderr
    assert list((shop / "store").iterdir()) == []  # no store, log or socket file


def test_manual_app_is_not_a_client_of_the_running_owner(shop: Path) -> None:
    real = kathikon.Kathikon(shop / "store" / "shop.redb")
    try:
        done = run_python(
            """
            import shop_jobs
            assert shop_jobs.app.role == "owner", shop_jobs.app.role
            shop_jobs.sign_up.insert({"email": "ann@example.com"})
            assert len(shop_jobs.app.jobs()) == 1
            print("ok")
            """,
            shop,
            {"KATHIKON_TESTING": "manual", "SHOP_DIR": str(shop / "store")},
        )
        assert done.returncode == 0, done.stderr
        assert real.jobs(state=None) == []
    finally:
        real.close()


def test_kathikon_worker_refuses_a_testing_app(shop: Path) -> None:
    cli = Path(sys.executable).with_name("kathikon")
    done = subprocess.run(
        [str(cli), "worker", "shop_jobs:app"],
        cwd=shop,
        env={
            **os.environ,
            "PYTHONPATH": str(shop),
            "KATHIKON_TESTING": "manual",
            "SHOP_DIR": str(shop / "store"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "kathikon worker runs workers, but this app is in testing mode" in done.stderr
    assert "unset KATHIKON_TESTING" in done.stderr
    assert list((shop / "store").iterdir()) == []


# -- choosing the mode ----------------------------------------------------------------------------


def test_the_environment_overrides_the_argument(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KATHIKON_TESTING", "manual")
    for given in (None, "inline"):
        app = kathikon.Kathikon(tmp_path / "jobs.redb", testing=given, clock="system")
        try:
            assert app.testing == "manual"

            @app.worker
            def hello(job: kathikon.Job) -> None:
                pass

            assert hello.insert().state is S.AVAILABLE  # stored, not run inline
            start = app.now()
            app.advance_clock(5)  # a manual clock, although clock="system" was passed
            assert (app.now() - start).total_seconds() == 5
        finally:
            app.close()
    assert list(tmp_path.iterdir()) == []


def test_an_empty_variable_means_no_testing_mode(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KATHIKON_TESTING", "")
    app = kathikon.Kathikon(tmp_path / "jobs.redb")
    try:
        assert app.testing is None
        assert (tmp_path / "jobs.redb").exists()
    finally:
        app.close()


def test_a_bad_mode_is_a_configuration_error_naming_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(kathikon.ConfigurationError) as info:
        kathikon.Kathikon(testing="true")
    assert "testing='true' is not a testing mode" in str(info.value)
    assert "'manual'" in str(info.value) and "'inline'" in str(info.value)
    monkeypatch.setenv("KATHIKON_TESTING", "Manual")
    with pytest.raises(kathikon.ConfigurationError) as info:
        kathikon.Kathikon(testing="manual")
    assert "KATHIKON_TESTING='Manual' is not a testing mode" in str(info.value)
    assert "'manual'" in str(info.value) and "'inline'" in str(info.value)


def test_start_in_a_testing_mode_checks_the_queues_and_starts_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = kathikon.Kathikon(testing="manual")
    try:
        with pytest.raises(kathikon.ConfigurationError, match="'nope' is not configured"):
            app.start(["nope"])
        with caplog.at_level(logging.INFO, logger="kathikon"):
            with app:  # `with app:` starts workers in a normal app
                app.insert(hello_worker(app), {"n": 1})
        assert "testing='manual', so no workers start" in caplog.text
        assert app.worker_pids == []
    finally:
        app.close()


def hello_worker(app: kathikon.Kathikon) -> kathikon.WorkerFunction:
    @app.worker
    def hello(job: kathikon.Job) -> None:
        pass

    return hello


# -- inline ---------------------------------------------------------------------------------------


def test_inline_insert_returns_the_completed_job(inline: kathikon.Kathikon) -> None:
    seen: list[kathikon.Job] = []

    @inline.worker
    def hello(job: kathikon.Job) -> None:
        seen.append(job)

    job = hello.insert({"name": "ann"})
    assert job.state is S.COMPLETED
    assert (job.attempt, job.args) == (1, {"name": "ann"})
    assert [j.id for j in seen] == [job.id]
    assert inline.get(job.id) == job
    assert_enqueued(inline, worker=hello, state="completed")


def test_inline_insert_returns_a_failed_job_with_its_error(
    inline: kathikon.Kathikon, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    @inline.worker(backoff=lambda job: 60, max_attempts=3)
    def flaky(job: kathikon.Job) -> None:
        calls.append(job.attempt)
        raise ConnectionError("mail server down")

    job = flaky.insert()
    assert job.state is S.RETRYABLE  # run once, not retried inline
    assert calls == [1]
    assert "ConnectionError: mail server down" in job.errors[-1]["error"]
    assert (job.scheduled_at - inline.now()).total_seconds() == 60
    assert "inline job" in caplog.text and "mail server down" in caplog.text
    # The retry is stored, for drain_jobs to run as in manual mode.
    assert drain_jobs(inline, with_scheduled=True) == {"retryable": 1, "discarded": 1}

    last = flaky.insert(max_attempts=1)
    assert last.state is S.DISCARDED


def test_inline_outcomes(inline: kathikon.Kathikon) -> None:
    @inline.worker
    def decide(job: kathikon.Job) -> Optional[kathikon.JobOutcome]:
        return {
            "cancel": kathikon.Cancel("no longer wanted"),
            "discard": kathikon.Discard("bad input"),
            "snooze": kathikon.Snooze(30),
            "complete": None,
        }[job.args["how"]]

    states = {how: decide.insert({"how": how}).state for how in ("cancel", "discard", "snooze")}
    assert states == {"cancel": S.CANCELLED, "discard": S.DISCARDED, "snooze": S.SCHEDULED}


def test_inline_runs_a_scheduled_job_at_once(inline: kathikon.Kathikon) -> None:
    @inline.worker
    def later(job: kathikon.Job) -> None:
        pass

    assert later.insert(schedule_in=3600).state is S.COMPLETED


def test_inline_insert_all_runs_each_job_and_nested_inserts(inline: kathikon.Kathikon) -> None:
    order: list[str] = []

    @inline.worker(queue="emails")
    def email(job: kathikon.Job) -> None:
        order.append(f"email {job.args['to']}")

    @inline.worker
    def sign_up(job: kathikon.Job) -> None:
        order.append(f"sign_up {job.args['email']}")
        sent = email.insert({"to": job.args["email"]})
        assert sent.state is S.COMPLETED  # ran inside this job
        order.append("after")

    jobs = inline.insert_all(
        [sign_up.new({"email": "a"}), email.new({"to": "b"}), sign_up.new({"email": "c"})]
    )
    assert [j.state for j in jobs] == [S.COMPLETED] * 3
    assert [j.args for j in jobs] == [{"email": "a"}, {"to": "b"}, {"email": "c"}]
    assert order == ["sign_up a", "email a", "after", "email b", "sign_up c", "email c", "after"]


def test_inline_runs_async_workers_also_from_a_running_loop(inline: kathikon.Kathikon) -> None:
    @inline.worker
    async def double(job: kathikon.Job) -> None:
        await asyncio.sleep(0)
        if job.args["n"] < 0:
            raise ValueError("negative")

    assert double.insert({"n": 1}).state is S.COMPLETED

    async def handler() -> kathikon.Job:  # e.g. an async web view that enqueues
        return double.insert({"n": -1})

    assert asyncio.run(handler()).state is S.RETRYABLE


# -- kathikon.testing.use and the remedy for function workers of another app --------------------


def test_function_worker_of_another_app_names_a_remedy_that_works() -> None:
    prod = kathikon.Kathikon(queues={"default": 1})
    test_app = make_app()
    try:

        @prod.worker
        def send(job: kathikon.Job) -> None:
            pass

        with pytest.raises(kathikon.UnknownWorkerError) as info:
            test_app.insert(send)
        message = str(info.value)
        assert "not registered with this app" in message
        assert "decorated with @app.worker on another app" in message
        assert "kathikon.testing.use(app)" in message and "KATHIKON_TESTING" in message
        assert "register()" not in message  # refused for a function worker
        with pytest.raises(kathikon.ConfigurationError, match="decorate plain functions"):
            test_app.register(send)  # type: ignore[type-var]
    finally:
        prod.close()
        test_app.close()


def test_use_refuses_an_app_not_in_a_testing_mode() -> None:
    app = kathikon.Kathikon()
    try:
        with pytest.raises(kathikon.ConfigurationError) as info:
            use(app)
        assert 'os.environ["KATHIKON_TESTING"] = "manual"' in str(info.value)
        assert "conftest.py" in str(info.value)
        with pytest.raises(TypeError, match="pass a kathikon.Kathikon app"):
            use("shop_jobs:app")  # type: ignore[arg-type]
    finally:
        app.close()


CONFTEST = """
    import os

    os.environ["KATHIKON_TESTING"] = "manual"  # before the app's module is imported

    import kathikon.testing
    import shop_jobs

    kathikon.testing.use(shop_jobs.app)
"""

TESTS = """
    import shop_jobs
    from kathikon.testing import all_enqueued, assert_enqueued, drain_jobs


    def test_first(kathikon_app):
        assert kathikon_app is shop_jobs.app
        job = shop_jobs.sign_up.insert({"email": "first@example.com"})
        assert job.id == 1
        assert [j.args for j in all_enqueued(kathikon_app, state=None)] == [
            {"email": "first@example.com"}
        ]
        assert drain_jobs(kathikon_app) == {"completed": 2}
        kathikon_app.close()  # as a web app's shutdown would


    def test_second(kathikon_app):
        assert not kathikon_app.closed
        job = shop_jobs.sign_up.insert({"email": "second@example.com"})
        assert job.id == 1
        assert [j.args for j in all_enqueued(kathikon_app, state=None)] == [
            {"email": "second@example.com"}
        ]
        assert drain_jobs(kathikon_app) == {"completed": 2}
        assert_enqueued(kathikon_app, worker=shop_jobs.send_email, state="completed")

"""


def test_use_gives_each_test_an_empty_store_of_the_module_app(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = pytester.path / "store"
    store.mkdir()
    monkeypatch.setenv("SHOP_DIR", str(store))
    pytester.makepyfile(shop_jobs=textwrap.dedent(SHOP_JOBS))
    pytester.makeconftest(textwrap.dedent(CONFTEST))
    pytester.makepyfile(test_shop=textwrap.dedent(TESTS), test_options=OPTIONS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*kathikon_app_options {'queues': {'x': 1}} do not apply*"])
    assert list(store.iterdir()) == []


OPTIONS = """
import pytest


@pytest.fixture
def kathikon_app_options():
    return {"queues": {"x": 1}}


def test_options(kathikon_app):
    pass
"""


# -- docs/testing.md: the example of a module-level app ---------------------------------------


def test_docs_module_app_example_passes(pytester: pytest.Pytester) -> None:
    names = sorted(p.name for p in EXAMPLE.iterdir() if p.suffix == ".py")
    assert names == ["conftest.py", "shop_app.py", "test_shop_app.py"]
    for name in names:
        pytester.path.joinpath(name).write_text((EXAMPLE / name).read_text())
    before = set(pytester.path.iterdir())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    tests = (EXAMPLE / "test_shop_app.py").read_text().count("\ndef test_")
    result.assert_outcomes(passed=tests)
    assert not [p for p in set(pytester.path.iterdir()) - before if "redb" in p.name]
