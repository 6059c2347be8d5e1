"""The dashboard's pages (GET only, none changes anything): overview, jobs, job, queues and
cron, each read through the app's public API, so it works as the store's owner or as a
client of a running ``kathikon worker``.

The handlers are plain functions: Starlette runs them in its thread pool, so a call to the
store (a socket round trip when the app is a client) does not block the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..errors import InvalidJobError, JobNotFoundError, KathikonError
from ..job import Job, JobState
from ..queue_check import QueueCheck
from .render import page
from .settings import DEFAULT_PAGE, MAX_PAGE, Settings

#: The states a job can be cancelled from, and retried from.
CANCELLABLE = frozenset({"scheduled", "available", "retryable", "executing"})
RETRYABLE = frozenset({"scheduled", "retryable", "completed", "cancelled", "discarded"})

#: What the job and queue pages say after an action redirected back to them.
DONE = {
    "retry": "Retried: the job is available to run now.",
    "cancel": "Cancelled.",
    "pause": "Paused: no new job of the queue starts until it is resumed.",
    "resume": "Resumed.",
    "scale": "Scaled: every worker follows within a second.",
}


@dataclass(frozen=True)
class QueueRow:
    """One queue on the overview and queues pages."""

    check: QueueCheck
    counts: dict[str, int]
    oldest_wait: Optional[float]
    """Seconds the longest-waiting available job has waited since it became due."""

    @property
    def status(self) -> str:
        if self.check.paused:
            return "paused"
        if self.check.stopped:
            return "stopped"
        return "served" if self.check.served else "not served"


def _queue_rows(settings: Settings) -> tuple[list[QueueRow], dict[str, int]]:
    app = settings.app
    stats = app.stats()
    now = app.now()
    rows = []
    totals = {state.value: 0 for state in JobState}
    for check in app.queues():
        counts = stats.get(check.queue, {state.value: 0 for state in JobState})
        for state, n in counts.items():
            totals[state] = totals.get(state, 0) + n
        oldest = check.oldest_available
        wait = None if oldest is None else (now - oldest).total_seconds()
        rows.append(QueueRow(check, counts, wait))
    return rows, totals


class Pages:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _error(self, request: Request, status: int, message: str) -> HTMLResponse:
        return page(
            request,
            self.settings,
            "error.html",
            {"status": status, "message": message},
            status_code=status,
        )

    def overview(self, request: Request) -> HTMLResponse:
        rows, totals = _queue_rows(self.settings)
        return page(
            request,
            self.settings,
            "overview.html",
            {"rows": rows, "totals": totals, "role": self.settings.app.role, "live": True},
        )

    def queues(self, request: Request) -> HTMLResponse:
        rows, _ = _queue_rows(self.settings)
        done = DONE.get(request.query_params.get("done", ""))
        return page(
            request, self.settings, "queues.html", {"rows": rows, "done": done, "live": False}
        )

    def jobs(self, request: Request) -> HTMLResponse:
        params = request.query_params
        state = params.get("state") or None
        queue = params.get("queue") or None
        worker = params.get("worker") or None
        try:
            after = _int_param(params.get("after"), "after", 0, 2**64 - 1)
            limit = _int_param(params.get("limit"), "limit", 1, MAX_PAGE) or DEFAULT_PAGE
            jobs: list[Job] = self.settings.app.jobs(
                state=state, queue=queue, worker=worker, limit=limit, after=after
            )
        except (InvalidJobError, ValueError) as e:
            return self._error(request, 400, str(e))
        filters = {"state": state or "", "queue": queue or "", "worker": worker or ""}
        query = {k: v for k, v in filters.items() if v}
        if limit != DEFAULT_PAGE:
            query["limit"] = str(limit)
        next_query = {**query, "after": str(jobs[-1].id)} if len(jobs) == limit else None
        return page(
            request,
            self.settings,
            "jobs.html",
            {
                "jobs": jobs,
                "filters": filters,
                "query": query,
                "next_query": next_query,
                "after": after,
                "queue_names": [c.queue for c in self.settings.app.queues()],
                "worker_names": sorted(self.settings.app.workers),
                "live": True,
            },
        )

    def job(self, request: Request) -> HTMLResponse:
        job_id: int = request.path_params["job_id"]
        try:
            job = self.settings.app.get(job_id)
        except JobNotFoundError as e:
            return self._error(request, 404, str(e))
        except KathikonError as e:  # a quarantined record: CorruptStoreError names the damage
            return self._error(request, 500, str(e))
        state = job.state.value
        return page(
            request,
            self.settings,
            "job.html",
            {
                "job": job,
                "progress": self.settings.app.progress(job_id),
                "can_retry": state in RETRYABLE,
                "can_cancel": state in CANCELLABLE,
                "done": DONE.get(request.query_params.get("done", "")),
                "live": False,
            },
        )

    def cron(self, request: Request) -> HTMLResponse:
        return page(
            request,
            self.settings,
            "cron.html",
            {"entries": self.settings.app.crontab(), "live": False},
        )


def _int_param(text: Optional[str], name: str, low: int, high: int) -> Optional[int]:
    """A query parameter that must be an int from ``low`` to ``high`` (``None`` if absent)."""
    if text is None or text == "":
        return None
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise ValueError(f"{name}={text!r} in the URL must be an int from {low} to {high}")
    return int(text)
