"""Crash torture: a real worker process on a real store file, SIGKILLed again and again at
random moments, then every job accounted for (see ``torture_driver.py`` for how and when it
kills, ``torture_check.py`` for what is checked).

CI runs ``KATHIKON_TORTURE_KILLS`` kills (default 50, about a minute on two cores); the long
run is ``KATHIKON_TORTURE_KILLS=1000``. ``KATHIKON_TORTURE_SEED`` replays a run (the seed is in
the summary and in every failure).

The last three tests break a promise on purpose (no fsync; a job deleted behind the queue's
back; a completed job run again) and check that the checker notices: a checker that cannot
see loss would prove nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pytest
from torture_check import History
from torture_driver import Torture, torture

import kathikon

KILLS = int(os.environ.get("KATHIKON_TORTURE_KILLS", "50"))
SEED: Optional[int] = (
    int(os.environ["KATHIKON_TORTURE_SEED"]) if os.environ.get("KATHIKON_TORTURE_SEED") else None
)


def report(t: Torture, capsys: pytest.CaptureFixture[str]) -> dict[str, int]:
    numbers = t.history.summary()
    with capsys.disabled():
        print(f"\n{t.summary_line(numbers)}\n{t.details(numbers)}")
    return numbers


@pytest.mark.timeout(120 + 4 * KILLS)
def test_sigkill_torture_loses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = torture(KILLS, SEED, tmp_path)
    numbers = report(t, capsys)
    assert not t.history.violations, f"{t.why()}:\n" + "\n".join(t.history.violations[:30])
    assert numbers["lost"] == 0, t.why()
    assert numbers["kills"] == KILLS
    # The kills did land where they matter, or the run proved little.
    assert numbers["rescued"] > 0, f"no kill caught a job executing {t.why()}"
    assert numbers["duplicates-by-crash"] > 0, f"no run was cut short and redone {t.why()}"
    assert numbers["pruned"] > 0, f"nothing was pruned {t.why()}"
    assert numbers["jobs"] >= 20 * KILLS, f"too few jobs to mean much {t.why()}"
    assert len(t.triggers) >= 5, f"kill moments not spread: {t.triggers} {t.why()}"


# -- the checker catches what it must ------------------------------------------------------


def test_durability_none_loses_nothing_to_sigkill(tmp_path: Path) -> None:
    """``durability="none"`` never syncs its log, but the log reaches the page cache before
    a call returns, and a killed process does not take the page cache with it."""
    t = torture(3, SEED, tmp_path, durability="none")
    assert not t.history.violations, t.history.violations[:5]
    assert t.history.summary()["lost"] == 0, t.why()


def test_checker_sees_loss_without_fsync(tmp_path: Path) -> None:
    """``durability="none"`` never syncs its log. A SIGKILL alone loses nothing (the page
    cache keeps the log), but a power loss can take the log's unsynced tail: the log is
    emptied after each kill to stand for that, so acknowledged inserts vanish and the checker
    must say so."""
    t = torture(3, SEED, tmp_path, durability="none", lose_unsynced_log=True)
    assert t.history.summary()["lost"] > 0, t.why()
    assert any("missing" in v for v in t.history.violations), t.history.violations[:5]


def test_checker_sees_a_job_deleted_behind_its_back(tmp_path: Path) -> None:
    victims: list[int] = []

    def delete_one(app: kathikon.Kathikon, history: History) -> None:
        if victims:
            return
        for state in ("available", "retryable", "scheduled"):
            for job in app.jobs(state=state, limit=1000):
                # one the history cannot excuse as pruned after finishing
                if job.id in history.acked and history._finished_proof(job.id) is None:
                    app.cancel(job.id)
                    app.prune(0)
                    victims.append(job.id)
                    return

    t = torture(4, SEED, tmp_path, sabotage=delete_one)
    assert victims, f"no unfinished job to delete {t.why()}"
    assert victims[0] in t.history.lost, (victims, t.history.violations[:5])


def test_checker_sees_a_completed_job_run_again(tmp_path: Path) -> None:
    rerun: list[int] = []

    def retry_one(app: kathikon.Kathikon, history: History) -> None:
        if rerun:
            return
        for job in app.jobs(state="completed", limit=1000):
            if job.id in history.acked:
                app.retry(job.id)
                rerun.append(job.id)
                return

    t = torture(4, SEED, tmp_path, sabotage=retry_one)
    assert rerun, f"no completed job to run again {t.why()}"
    mine = [v for v in t.history.violations if f"job {rerun[0]}" in v]
    assert any("ran again" in v for v in mine), t.history.violations[:5]
