"""Typing example: mistakes both checkers must report.

Each line below is wrong, and its ``# type: ignore[code]`` says so: mypy (``--strict`` warns
about unused ignores) and pyright (``reportUnnecessaryTypeIgnoreComment``) both fail if the
mistake stops being reported. Not run: these lines would raise at run time.
"""

from __future__ import annotations

from typing import Any

import kathikon
from kathikon import telemetry
from kathikon.testing import assert_enqueued, perform_job

app = kathikon.Kathikon(path=None)


@app.worker
def ok(job: kathikon.Job) -> None: ...


def mistakes() -> None:
    ok.insert({"a": 1}, priorty=0)  # type: ignore[call-arg]
    ok.insert({"a": 1}, priority="high")  # type: ignore[arg-type]
    ok.insert(["not", "a", "dict"])  # type: ignore[arg-type]
    app.insert(ok, {}, schedule_in="5m")  # type: ignore[arg-type]
    app.new(ok, {}, sheduled_in=5)  # type: ignore[call-arg]
    ok.new({}, tags="urgent", priorty=1)  # type: ignore[call-arg]
    assert_enqueued(app, worker=ok, queu="emails")  # type: ignore[call-arg]
    assert_enqueued(app, state=5)  # type: ignore[arg-type]
    perform_job(ok, {}, schedule_in=5)  # type: ignore[call-arg]
    app.insert(print, {})  # type: ignore[arg-type]
    app.insert_all([ok.insert()])  # type: ignore[list-item]
    kathikon.Snooze("soon")  # type: ignore[arg-type]
    kathikon.Kathikon(path=None, queues=["default"])  # type: ignore[arg-type]
    app.worker(qeue="emails")  # type: ignore[call-overload]
    telemetry.attach("h", [("kathikon", "job", "stop")], lambda event: None)  # type: ignore[arg-type,misc]


@app.worker  # type: ignore[arg-type]
def takes_an_int(n: int) -> None: ...


class BadQueue(kathikon.Worker):
    queue = 5  # type: ignore[assignment]

    def perform(self, job: kathikon.Job) -> Any: ...


class BadPerform(kathikon.Worker):
    def perform(self, job: int) -> None: ...  # type: ignore[override]
