"""The app's settings as the seed gives them: its defaults, retention per finished state
(pruned on a manual clock, and by a client that took the store over), and the
``("kathikon", "job", "sleep")`` event of a snooze."""

from __future__ import annotations

import inspect
import logging
import os
import queue
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import WaitUntil

import kathikon
from kathikon import telemetry

DAY = 86_400.0
PRUNER_TICK = ("kathikon", "pruner", "tick")
SLEEP = ("kathikon", "job", "sleep")
SNOOZE = ("kathikon", "job", "snooze")


@pytest.fixture
def pruner_ticks() -> Iterator[queue.Queue[int]]:
    """The count of every pruner step that deleted jobs, in order."""
    ticks: queue.Queue[int] = queue.Queue()

    def record(_: Any, measurements: Mapping[str, Any], __: Any) -> None:
        ticks.put(measurements["pruned"])

    telemetry.attach("settings-pruner", [PRUNER_TICK], record)
    try:
        yield ticks
    finally:
        telemetry.detach("settings-pruner")


def next_prune(ticks: queue.Queue[int]) -> int:
    """How many jobs the pruner's next deleting step deleted (waiting up to a minute)."""
    try:
        return ticks.get(timeout=60)
    except queue.Empty:
        pytest.fail("the pruner deleted nothing within 60 s")


def exists(app: kathikon.Kathikon, job_id: int) -> bool:
    try:
        app.get(job_id)
    except kathikon.JobNotFoundError:
        return False
    return True


def test_the_defaults_are_the_seeds_but_the_poll_interval() -> None:
    app = kathikon.Kathikon(None)
    try:
        config = app.config
        assert config.poll_interval == 1.0  # kept, for the measured reason in the README
        assert config.scheduler_interval == 1.0
        assert config.prune_interval == 60.0
        assert config.retention_period == 7 * DAY
        assert config.max_attempts == 20
    finally:
        app.close()
    params = inspect.signature(kathikon.Kathikon.__init__).parameters
    defaults = {name: params[name].default for name in ("poll_interval", "prune_interval")}
    assert defaults == {"poll_interval": 1.0, "prune_interval": 60.0}
    assert params["retention_period"].default == 7 * DAY


def test_retention_per_state_fills_in_the_states_left_out() -> None:
    app = kathikon.Kathikon(None, retention_period={"completed": 3600})
    try:
        assert app.config.retention_period == {
            "completed": 3600.0,
            "cancelled": 7 * DAY,
            "discarded": 7 * DAY,
        }
    finally:
        app.close()


@pytest.mark.parametrize(
    ("retention", "needles"),
    [
        ({"complete": 60}, ["'complete'", "not a finished state", "'completed'"]),
        ({"executing": 60}, ["'executing'", "not a finished state"]),
        ({"discarded": -1}, ["retention_period['discarded']=-1"]),
        ({"cancelled": "1h"}, ["retention_period['cancelled']='1h'"]),
        ({"completed": float("nan")}, ["retention_period['completed']=nan"]),
    ],
)
def test_a_bad_retention_is_refused_by_name(
    store_path: Path, retention: dict[str, Any], needles: list[str]
) -> None:
    with pytest.raises(kathikon.ConfigurationError) as info:
        kathikon.Kathikon(store_path, retention_period=retention)
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    assert not store_path.exists()


def test_each_finished_state_is_kept_for_its_own_period(
    store_path: Path, pruner_ticks: queue.Queue[int]
) -> None:
    app = kathikon.Kathikon(
        store_path,
        clock="manual",
        prune_interval=0.02,
        retention_period={"completed": 3600, "discarded": 7 * DAY},
    )
    try:

        @app.worker
        def w(job: kathikon.Job) -> Any:
            return kathikon.Discard("no") if job.args["discard"] else None

        completed = w.insert({"discard": False})
        discarded = w.insert({"discard": True})
        assert app.drain() == {"completed": 1, "discarded": 1}

        app.advance_clock(3601)
        assert next_prune(pruner_ticks) == 1
        assert not exists(app, completed.id), "the completed job outlived its hour"
        assert exists(app, discarded.id), "the discarded job went before 7 days"

        app.advance_clock(7 * DAY)
        assert next_prune(pruner_ticks) == 1
        assert not exists(app, discarded.id), "the discarded job outlived its 7 days"
    finally:
        app.close()


OWNER = textwrap.dedent(
    """
    import sys, time
    import kathikon

    app = kathikon.Kathikon(sys.argv[1])
    assert app.role == "owner", app.role
    print("owner ready", flush=True)
    while True:
        time.sleep(1)
    """
)


def test_a_client_that_takes_the_store_over_prunes_by_its_own_retention(
    store_path: Path, wait_until: WaitUntil
) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", OWNER, str(store_path)], stdout=subprocess.PIPE, text=True
    ) as owner:
        try:
            assert owner.stdout is not None
            assert owner.stdout.readline().strip() == "owner ready"
            app = kathikon.Kathikon(
                store_path, prune_interval=0.02, retention_period={"completed": 0.01}
            )
            assert app.role == "client"
        finally:
            os.kill(owner.pid, signal.SIGKILL)
            owner.wait()
    try:

        @app.worker
        def w(job: kathikon.Job) -> Any:
            return kathikon.Discard("no") if job.args["discard"] else None

        completed = w.insert({"discard": False})  # the owner is gone: this takes over
        assert app.role == "owner"
        discarded = w.insert({"discard": True})
        assert app.drain() == {"completed": 1, "discarded": 1}
        # Waited for in the store: the engine that took over does not report pruner ticks.
        wait_until(lambda: not exists(app, completed.id), timeout=60, what="the pruner")
        assert exists(app, discarded.id), "the discarded job went before its 7 days"
    finally:
        app.close()


def test_a_snooze_is_told_as_sleep_beside_snooze() -> None:
    seen: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []

    def record(event: Any, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        seen.append((event, dict(measurements), dict(metadata)))

    app = kathikon.Kathikon(None, clock="manual")
    telemetry.attach("settings-sleep", [SLEEP, SNOOZE], record)
    try:

        @app.worker
        def nap(job: kathikon.Job) -> kathikon.Snooze:
            return kathikon.Snooze(30)

        job = nap.insert()
        assert app.drain() == {"scheduled": 1}
        assert [event for event, _, _ in seen] == [SNOOZE, SLEEP]
        (_, snooze_m, snooze_md), (_, sleep_m, sleep_md) = seen
        assert sleep_m == snooze_m and sleep_m["delay"] == pytest.approx(30)
        assert sleep_md["job"].id == job.id
        assert sleep_md["job"].state is kathikon.JobState.SCHEDULED
    finally:
        telemetry.detach("settings-sleep")
        app.close()


def test_the_default_logger_logs_a_snooze_once(caplog: pytest.LogCaptureFixture) -> None:
    app = kathikon.Kathikon(None, clock="manual")
    telemetry.attach_default_logger()
    try:

        @app.worker
        def nap(job: kathikon.Job) -> kathikon.Snooze:
            return kathikon.Snooze(30)

        nap.insert()
        with caplog.at_level(logging.INFO, logger="kathikon"):
            app.drain()
        events = [r.getMessage().split()[0] for r in caplog.records if r.name == "kathikon"]
        assert events.count("event=job.snooze") == 1, events
        assert "event=job.sleep" not in events, events
    finally:
        telemetry.detach("kathikon-default-logger")
        app.close()
