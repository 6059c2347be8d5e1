"""Cron through the public API: slots fired on the engine clock (``clock="manual"``) with
their ``job.meta["cron"]``, across daylight-saving changes; each catch-up policy after a
downtime (the app closed, the clock moved, the store reopened); ``@reboot``; an owner
SIGKILLed right after a firing and taken over by a client, with no slot inserted twice; a
client's ``app.crontab()``; ``kathikon cron``; and the declarations refused."""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import pytest

import kathikon
from kathikon import ConfigurationError, telemetry

TIMEOUT = 60.0


def move_to(app: kathikon.Kathikon, iso: str) -> None:
    """Move a manual clock to the time ``iso``."""
    app.advance_clock((datetime.fromisoformat(iso) - app.now()).total_seconds())


def slots(app: kathikon.Kathikon, name: Optional[str] = None) -> list[str]:
    """The ``meta["cron"]["slot"]`` of every job, in insert order (of entry ``name``)."""
    return [
        j.meta["cron"]["slot"]
        for j in app.jobs(limit=10_000)
        if name is None or j.meta["cron"]["name"] == name
    ]


def manual_app(path: Optional[Path] = None) -> tuple[kathikon.Kathikon, kathikon.WorkerFunction]:
    app = kathikon.Kathikon(path, clock="manual", queues={"default": 1, "reports": 1})

    @app.worker(name="sweep")
    def sweep(job: kathikon.Job) -> None:
        pass

    return app, sweep


# -- firing -----------------------------------------------------------------------------------


def test_a_new_entry_fires_from_its_next_slot_with_its_options_and_meta() -> None:
    app, sweep = manual_app()
    move_to(app, "2030-01-01T00:07:00+00:00")
    app.cron(
        "*/5 * * * *",
        sweep,
        {"days": 30},
        name="cleanup",
        priority=3,
        queue="reports",
        tags=["nightly"],
        meta={"owner": "ops"},
    )
    # The slot at 00:05 passed before the entry existed: no catch-up for a new entry.
    assert app.jobs() == []
    app.advance_clock(179)
    assert app.jobs() == []
    app.advance_clock(1)
    [job] = app.jobs()
    assert (job.worker, job.args, job.priority, job.queue, job.tags) == (
        "sweep",
        {"days": 30},
        3,
        "reports",
        ["nightly"],
    )
    assert job.meta == {
        "owner": "ops",
        "cron": {
            "name": "cleanup",
            "expression": "*/5 * * * *",
            "slot": "2030-01-01T00:10:00+00:00",
        },
    }
    [entry] = app.crontab()
    assert entry.last_slot == datetime.fromisoformat("2030-01-01T00:10:00+00:00")
    assert entry.next_at == datetime.fromisoformat("2030-01-01T00:15:00+00:00")
    assert (entry.name, entry.worker, entry.catch_up) == ("cleanup", "sweep", "skip")
    app.close()


def test_worker_decorator_declares_an_entry_in_its_zone() -> None:
    app = kathikon.Kathikon(None, clock="manual")
    move_to(app, "2030-01-04T12:00:00+00:00")  # a Friday

    @app.worker(cron="0 7 * * MON-FRI", cron_timezone="Europe/Athens")
    def morning_report(job: kathikon.Job) -> None:
        pass

    [entry] = app.crontab()
    assert entry.name == entry.worker == morning_report.name
    # Saturday and Sunday are skipped; 07:00 in Athens is 05:00 UTC in winter.
    assert entry.next_at == datetime.fromisoformat("2030-01-07T05:00:00+00:00")
    move_to(app, "2030-01-07T05:00:00+00:00")
    assert slots(app) == ["2030-01-07T07:00:00+02:00"]
    app.close()


def every_quarter_hour(app: kathikon.Kathikon, hours: int) -> None:
    for _ in range(hours * 4):
        app.advance_clock(900)


@pytest.mark.parametrize(
    ("expression", "start", "fired"),
    [
        # Spring forward in Athens, 2027-03-28 03:00 → 04:00. A fixed time in the gap runs
        # once, at the first instant after it; an hourly one skips the hour that is not.
        (
            "30 3 * * *",
            "2027-03-26T12:00:00+00:00",
            ["2027-03-27T03:30:00+02:00", "2027-03-28T04:00:00+03:00", "2027-03-29T03:30:00+03:00"],
        ),
        (
            "30 * * * *",
            "2027-03-27T23:45:00+00:00",
            [
                "2027-03-28T02:30:00+02:00",
                "2027-03-28T04:30:00+03:00",
                "2027-03-28T05:30:00+03:00",
                "2027-03-28T06:30:00+03:00",
            ],
        ),
        # Fall back, 2027-10-31 04:00 → 03:00: 03:30 comes twice. A fixed time runs once (the
        # earlier instant); an hourly one runs at both.
        (
            "30 3 * * *",
            "2027-10-29T12:00:00+00:00",
            ["2027-10-30T03:30:00+03:00", "2027-10-31T03:30:00+03:00", "2027-11-01T03:30:00+02:00"],
        ),
        (
            "30 * * * *",
            "2027-10-30T22:45:00+00:00",
            [
                "2027-10-31T02:30:00+03:00",
                "2027-10-31T03:30:00+03:00",
                "2027-10-31T03:30:00+02:00",
                "2027-10-31T04:30:00+02:00",
            ],
        ),
    ],
)
def test_slots_across_daylight_saving_changes(
    expression: str, start: str, fired: list[str]
) -> None:
    app, sweep = manual_app()
    move_to(app, start)
    app.cron(expression, sweep, timezone="Europe/Athens")
    every_quarter_hour(app, 72 if expression.startswith("30 3") else 4)
    assert slots(app) == fired
    app.close()


def test_every_second_entries_and_aliases_fire_on_their_slots() -> None:
    app, sweep = manual_app()
    move_to(app, "2030-01-01T23:59:58+00:00")
    app.cron("*/2 * * * * *", sweep, name="two-seconds")
    app.cron("@daily", sweep, name="daily")
    for _ in range(4):
        app.advance_clock(1)
    assert slots(app, "two-seconds") == [
        "2030-01-02T00:00:00+00:00",
        "2030-01-02T00:00:02+00:00",
    ]
    assert slots(app, "daily") == ["2030-01-02T00:00:00+00:00"]
    app.close()


def test_each_firing_emits_cron_insert_telemetry(wait_until: Any) -> None:
    seen: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
    telemetry.attach(
        "test-cron", [("kathikon", "cron", "insert")], lambda e, m, md: seen.append((m, md))
    )
    try:
        app, sweep = manual_app()
        move_to(app, "2030-01-01T00:00:30+00:00")
        app.cron("* * * * *", sweep, name="minutely")
        app.advance_clock(60)
        [job] = app.jobs()
        wait_until(lambda: seen, what="the cron.insert event")
        [(measurements, metadata)] = seen
        assert metadata == {
            "name": "minutely",
            "slot": datetime.fromisoformat("2030-01-01T00:01:00+00:00"),
            "job_id": job.id,
        }
        assert measurements["lateness"] == pytest.approx(30.0)
        app.close()
    finally:
        telemetry.detach("test-cron")


def test_testing_modes_fire_on_the_manual_clock_only() -> None:
    for mode in ("manual", "inline"):
        app = kathikon.Kathikon(None, testing=mode)

        @app.worker
        def tick(job: kathikon.Job) -> None:
            pass

        app.cron("* * * * * *", tick)
        # More than a second passes on the wall clock; the app's clock does not move.
        time.sleep(1.2)
        assert app.jobs() == []
        app.advance_clock(1)
        assert len(app.jobs()) == 1
        app.close()


# -- restarts and catch-up ----------------------------------------------------------------------


def downtime(path: Path, catch_up: str, limit: int = 100) -> kathikon.Kathikon:
    """An entry every 10 minutes fires at 00:10, the app closes; it is opened again at 00:45
    (00:20, 00:30 and 00:40 passed meanwhile) and declares the entry again."""
    app, sweep = manual_app(path)
    move_to(app, "2030-01-01T00:05:00+00:00")
    app.cron("*/10 * * * *", sweep, catch_up=catch_up, catch_up_limit=limit)
    app.advance_clock(300)
    assert slots(app) == ["2030-01-01T00:10:00+00:00"]
    app.close()
    app, sweep = manual_app(path)
    move_to(app, "2030-01-01T00:45:00+00:00")
    app.cron("*/10 * * * *", sweep, catch_up=catch_up, catch_up_limit=limit)
    return app


def test_skip_inserts_nothing_for_missed_slots_and_fires_the_next(store_path: Path) -> None:
    app = downtime(store_path, "skip")
    assert slots(app) == ["2030-01-01T00:10:00+00:00"]
    [entry] = app.crontab()
    assert entry.last_slot == datetime.fromisoformat("2030-01-01T00:10:00+00:00")
    app.advance_clock(300)
    assert slots(app) == ["2030-01-01T00:10:00+00:00", "2030-01-01T00:50:00+00:00"]
    app.close()


def test_once_inserts_one_job_naming_the_missed_slots(store_path: Path) -> None:
    app = downtime(store_path, "once")
    first, caught_up = app.jobs()
    assert caught_up.meta["cron"] == {
        "name": "sweep",
        "expression": "*/10 * * * *",
        "slot": "2030-01-01T00:40:00+00:00",
        "missed": {
            "count": 3,
            "slots": [
                "2030-01-01T00:20:00+00:00",
                "2030-01-01T00:30:00+00:00",
                "2030-01-01T00:40:00+00:00",
            ],
        },
    }
    app.advance_clock(300)
    assert slots(app)[-1] == "2030-01-01T00:50:00+00:00"
    assert "missed" not in app.jobs()[-1].meta["cron"]
    app.close()


@pytest.mark.parametrize(
    ("limit", "caught_up"),
    [(100, ["00:20", "00:30", "00:40"]), (2, ["00:30", "00:40"])],
)
def test_all_inserts_a_job_per_missed_slot_the_newest_up_to_the_limit(
    store_path: Path, limit: int, caught_up: list[str]
) -> None:
    app = downtime(store_path, "all", limit)
    expected = ["00:10", *caught_up]
    assert slots(app) == [f"2030-01-01T{t}:00+00:00" for t in expected]
    app.close()


def test_a_changed_expression_starts_afresh_and_a_removed_entry_stops(store_path: Path) -> None:
    app, sweep = manual_app(store_path)
    move_to(app, "2030-01-01T00:05:00+00:00")
    app.cron("*/10 * * * *", sweep, catch_up="all")
    app.advance_clock(300)
    app.close()
    # Reopened at 00:45 with another expression under the same name: no catch-up.
    app, sweep = manual_app(store_path)
    move_to(app, "2030-01-01T00:45:00+00:00")
    app.cron("*/15 * * * *", sweep, catch_up="all")
    assert len(app.jobs()) == 1
    [entry] = app.crontab()
    assert entry.last_slot is None  # the stored slot was another expression's
    app.advance_clock(900)
    assert slots(app)[1:] == ["2030-01-01T01:00:00+00:00"]
    app.close()
    # Reopened with no entry declared: nothing fires.
    app, _ = manual_app(store_path)
    move_to(app, "2030-01-01T03:00:00+00:00")
    app.advance_clock(3600)
    assert len(app.jobs()) == 2
    app.close()


def test_reboot_fires_once_per_start(store_path: Path) -> None:
    for start in (1, 2):
        app, sweep = manual_app(store_path)
        app.cron("@reboot", sweep, name="warm-up")
        app.cron("* * * * *", sweep, name="minutely")  # installing again does not refire it
        app.advance_clock(3600)
        assert len(slots(app, "warm-up")) == start
        [reboot, _] = app.crontab()
        assert reboot.next_at is None and reboot.last_slot is not None
        app.close()


# -- processes ----------------------------------------------------------------------------------

CRON_APP = textwrap.dedent(
    """
    import os, time
    import kathikon

    app = kathikon.Kathikon(os.environ["KATHIKON_CRON_STORE"], scheduler_interval=0.2)

    @app.worker(name="every-second")
    def every_second(job):
        pass

    app.cron("* * * * * *", every_second, name="every-second", catch_up="all")

    @app.worker(name="morning", cron="0 7 * * MON-FRI", cron_timezone="Europe/Athens")
    def morning(job):
        pass

    if __name__ == "__main__":
        print("owner" if app.role == "owner" else "not the owner", flush=True)
        while True:
            time.sleep(1)
    """
)


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "KATHIKON_CRON_STORE": str(root / "jobs.redb")}
        (root / "cronapp.py").write_text(CRON_APP)
        self.owner: Optional[subprocess.Popen[str]] = None

    def start_owner(self) -> subprocess.Popen[str]:
        self.owner = subprocess.Popen(
            [sys.executable, "cronapp.py"],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.owner.stdout is not None
        assert self.owner.stdout.readline().strip() == "owner"
        return self.owner

    def client_app(self) -> kathikon.Kathikon:
        """The same app module, loaded in this process (a client of the owner)."""
        os.environ["KATHIKON_CRON_STORE"] = self.env["KATHIKON_CRON_STORE"]
        app = runpy.run_path(str(self.root / "cronapp.py"), run_name="cronapp_in_test")["app"]
        assert isinstance(app, kathikon.Kathikon)
        return app

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kathikon.cli", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = Project(tmp_path)
    saved = os.environ.get("KATHIKON_CRON_STORE")
    try:
        yield p
    finally:
        if p.owner is not None:
            if p.owner.poll() is None:
                p.owner.kill()
            p.owner.wait()
            if p.owner.stdout is not None:
                p.owner.stdout.close()
        if saved is None:
            os.environ.pop("KATHIKON_CRON_STORE", None)
        else:
            os.environ["KATHIKON_CRON_STORE"] = saved


def wait_for(what: str, check: Any) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def test_a_client_lists_the_crontab_with_the_owners_last_slot(project: Project) -> None:
    project.start_owner()
    app = project.client_app()
    try:
        assert app.role == "client"
        every, morning = wait_for(
            "a slot fired by the owner",
            lambda: (lambda c: c if c[0].last_slot is not None else None)(app.crontab()),
        )
        assert (every.expression, every.timezone) == ("* * * * * *", "UTC")
        assert every.next_at is not None and every.next_at > every.last_slot
        assert (morning.name, morning.timezone, morning.last_slot) == (
            "morning",
            "Europe/Athens",
            None,
        )
        # The client fires nothing itself: every job was inserted by the owner's slots.
        assert {j.meta["cron"]["name"] for j in app.jobs(limit=1000)} == {every.name}
    finally:
        app.close()


def test_no_slot_fires_twice_when_the_owner_is_killed_right_after_a_firing(
    project: Project,
) -> None:
    owner = project.start_owner()
    app = project.client_app()
    try:
        before = len(wait_for("the owner's first firings", lambda: app.jobs() or None))
        # Kill the owner the moment its next firing is visible.
        wait_for("the owner's next firing", lambda: len(app.jobs()) > before)
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        killed_at = len(app.jobs())  # this call takes the store over
        assert app.role == "owner"
        wait_for("three firings by the new owner", lambda: len(app.jobs()) >= killed_at + 3)
        # Every slot once: none twice, and none lost (catch_up="all" fills the takeover's gap).
        fired = [datetime.fromisoformat(s) for s in slots(app)]
        assert [(b - a).total_seconds() for a, b in zip(fired, fired[1:])] == [1.0] * (
            len(fired) - 1
        ), fired
    finally:
        app.close()


def test_kathikon_cron_lists_the_crontab(project: Project) -> None:
    result = project.cli("cron", "--app", "cronapp:app", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [(e["name"], e["expression"], e["timezone"]) for e in listed] == [
        ("every-second", "* * * * * *", "UTC"),
        ("morning", "0 7 * * MON-FRI", "Europe/Athens"),
    ]
    assert [e["catch_up"] for e in listed] == ["all", "skip"]
    assert all(e["next_at"] is not None and e["worker"] == e["name"] for e in listed)
    table = project.cli("cron", "--app", "cronapp:app")
    assert table.returncode == 0, table.stderr
    assert "morning" in table.stdout and "0 7 * * MON-FRI" in table.stdout
    missing = project.cli("cron")
    assert missing.returncode == 2 and "--app" in missing.stderr


REBOOT_APP = textwrap.dedent(
    """
    import os
    import kathikon

    app = kathikon.Kathikon(os.environ["KATHIKON_CRON_STORE"])

    @app.worker(name="warm-up", cron="@reboot")
    def warm_up(job):
        pass

    app.cron("* * * * * *", warm_up, name="every-second", catch_up="all")
    """
)


def test_commands_that_only_use_the_store_fire_nothing(project: Project) -> None:
    (project.root / "rebootapp.py").write_text(REBOOT_APP)
    # No process owns the store: each command owns it for its run, and fires nothing.
    for command in (["cron"], ["stats"], ["queues"], ["jobs"]):
        result = project.cli(*command, "--app", "rebootapp:app", "--json")
        assert result.returncode == 0, (command, result.stderr)
    listed = json.loads(project.cli("cron", "--app", "rebootapp:app", "--json").stdout)
    assert [(e["name"], e["last_slot"]) for e in listed] == [
        ("warm-up", None),
        ("every-second", None),
    ]
    store = kathikon.Kathikon(project.env["KATHIKON_CRON_STORE"], create=False)
    try:
        assert store.jobs() == []
    finally:
        store.close()


# -- declarations refused -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "options", "named"),
    [
        ("61 * * * *", {}, "61 * * * *"),
        ("every day", {}, "every day"),
        ("* * * * *", {"timezone": "Mars/Olympus"}, "Mars/Olympus"),
        ("* * * * *", {"catch_up": "sometimes"}, "sometimes"),
        ("* * * * *", {"catch_up_limit": 0}, "catch_up_limit=0"),
        ("* * * * *", {"schedule_in": 5}, "schedule_in"),
        ("* * * * *", {"queue": "nowhere"}, "nowhere"),
        ("* * * * *", {"priority": 12}, "12"),
        ("0 0 31 2 *", {}, "names no time"),
    ],
)
def test_bad_declarations_are_refused_naming_the_value(
    expression: str, options: dict[str, Any], named: str
) -> None:
    app, sweep = manual_app()
    with pytest.raises(ConfigurationError, match=None) as refused:
        app.cron(expression, sweep, **options)
    assert named in str(refused.value)
    assert app.crontab() == []
    app.close()


def test_duplicate_names_and_unregistered_workers_are_refused() -> None:
    app, sweep = manual_app()
    app.cron("* * * * *", sweep)
    with pytest.raises(ConfigurationError, match="'sweep' is already declared"):
        app.cron("*/5 * * * *", sweep)
    app.cron("*/5 * * * *", sweep, name="sweep-5")
    other = kathikon.Kathikon(None)

    @other.worker
    def elsewhere(job: kathikon.Job) -> None:
        pass

    with pytest.raises(ConfigurationError, match="not registered"):
        app.cron("* * * * *", elsewhere)
    with pytest.raises(ConfigurationError, match="no_such_worker"):
        app.cron("* * * * *", "no_such_worker")
    with pytest.raises(ConfigurationError, match="Nowhere/City"):

        @app.worker(cron="* * * * *", cron_timezone="Nowhere/City")
        def misplaced(job: kathikon.Job) -> None:
            pass

    assert "misplaced" not in " ".join(app.workers)  # not left registered
    assert [e.name for e in app.crontab()] == ["sweep", "sweep-5"]
    other.close()
    app.close()


def test_the_bench_cron_workload_reports_its_firings() -> None:
    from kathikon.bench import run

    [row] = run(["cron"], scale=0.01, rounds=1)
    assert row["workload"] == "cron lateness"
    assert row["jobs"] >= 2 and row["started"] >= 2
    assert {"p50_ms", "p99_ms", "start_p99_ms"} <= set(row)


@pytest.mark.parametrize(
    ("expression", "first", "reopen", "fired"),
    [
        (
            "30 3 * * *",
            "2027-10-30T00:00:00+00:00",
            "2027-11-02T02:00:00+00:00",
            [
                "2027-10-30T03:30:00+03:00",
                "2027-10-31T03:30:00+03:00",
                "2027-11-01T03:30:00+02:00",
                "2027-11-02T03:30:00+02:00",
            ],
        ),
        (
            "30 * * * *",
            "2027-10-30T23:45:00+00:00",
            "2027-10-31T03:00:00+00:00",
            ["2027-10-31T03:30:00+03:00", "2027-10-31T03:30:00+02:00", "2027-10-31T04:30:00+02:00"],
        ),
    ],
)
def test_a_catch_up_across_a_fall_back_follows_the_same_rules(
    store_path: Path, expression: str, first: str, reopen: str, fired: list[str]
) -> None:
    app, sweep = manual_app(store_path)
    move_to(app, first)
    app.cron(expression, sweep, timezone="Europe/Athens", catch_up="all")
    app.advance_clock(3600)  # the first slot fires
    app.close()
    app, sweep = manual_app(store_path)
    move_to(app, reopen)
    app.cron(expression, sweep, timezone="Europe/Athens", catch_up="all")
    assert slots(app) == fired
    app.close()


def test_a_worker_class_declares_an_entry_with_its_cron_attributes() -> None:
    app = kathikon.Kathikon(None, clock="manual")
    move_to(app, "2030-01-01T10:00:00+00:00")

    @app.register
    class Nightly(kathikon.Worker):
        name = "nightly"
        cron = "0 2 * * *"
        cron_timezone = "America/New_York"

        def perform(self, job: kathikon.Job) -> None:
            pass

    [entry] = app.crontab()
    assert (entry.name, entry.worker, entry.timezone) == ("nightly", "nightly", "America/New_York")
    assert entry.next_at == datetime.fromisoformat("2030-01-02T07:00:00+00:00")

    class Broken(kathikon.Worker):
        name = "broken"
        cron = "0 25 * * *"

    with pytest.raises(ConfigurationError, match="0 25"):
        app.register(Broken)
    assert "broken" not in app.workers
    app.close()
