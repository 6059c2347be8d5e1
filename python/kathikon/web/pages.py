"""The dashboard's pages (GET only, none changes anything): overview, jobs, job, queues and
cron (the workers page: ``workers.py``), each read through the app's public API, so it works
as the store's owner or as a client of a running ``kathikon worker``.

The handlers are plain functions: Starlette runs them in its thread pool, so a call to the
store (a socket round trip when the app is a client) does not block the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..errors import BatchNotFoundError, JobNotFoundError, KathikonError
from ..job import JobState
from ..limits import describe
from ..queue_check import QueueCheck
from . import filters
from .bulk import bulk_done
from .charts import DEFAULT_WINDOW, WINDOWS, charts
from .filters import TIME_FIELDS
from .render import error_page, page
from .settings import Settings
from .timeline import timeline

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

    @property
    def limits(self) -> str:
        """Its global and rate limits in a few words (``-``: none)."""
        return describe(self.check.global_limit, self.check.rate_limit, self.check.limit_usage)


#: The order of a batch's states along its progress bar: the finished ones first.
BAR_ORDER = (
    "completed",
    "discarded",
    "cancelled",
    "executing",
    "retryable",
    "available",
    "scheduled",
)


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
        return error_page(request, self.settings, status, message)

    def overview(self, request: Request) -> HTMLResponse:
        rows, totals = _queue_rows(self.settings)
        params = request.query_params
        window = params.get("window") or DEFAULT_WINDOW
        if window not in WINDOWS:
            choices = ", ".join(WINDOWS)
            return self._error(request, 400, f"window={window!r} must be one of {choices}")
        queue = params.get("queue") or None
        app = self.settings.app
        points = app.metrics(since=WINDOWS[window][1], queue=queue)
        return page(
            request,
            self.settings,
            "overview.html",
            {
                "rows": rows,
                "totals": totals,
                "role": app.role,
                "live": True,
                "charts": charts(points, app.now(), window),
                "windows": WINDOWS,
                "window": window,
                "chart_queue": queue or "",
            },
        )

    def queues(self, request: Request) -> HTMLResponse:
        rows, _ = _queue_rows(self.settings)
        done = DONE.get(request.query_params.get("done", ""))
        return page(
            request, self.settings, "queues.html", {"rows": rows, "done": done, "live": False}
        )

    def jobs(self, request: Request) -> HTMLResponse:
        params = request.query_params
        app = self.settings.app
        try:
            query = filters.parse({k: params.getlist(k) for k in params.keys()})
            jobs = app.jobs(
                limit=query.limit, order=query.order, cursor=query.cursor, **query.filters
            )
            total = app.count(**query.filters)
        except KathikonError as e:
            return self._error(request, 400, str(e))
        done = params.get("done", "")
        return page(
            request,
            self.settings,
            "jobs.html",
            {
                "jobs": jobs,
                "query": query,
                "total": total,
                "next_query": query.items() + [("cursor", jobs.cursor)] if jobs.cursor else None,
                "done": bulk_done(done, params.get("n", ""), params.get("skipped", "")),
                "queue_names": [c.queue for c in app.queues()],
                "worker_names": sorted(app.workers),
                "time_fields": TIME_FIELDS,
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
                "can_delete": job.state.finished,
                "timeline": timeline(job),
                "done": DONE.get(request.query_params.get("done", "")),
                "live": False,
            },
        )

    def batch(self, request: Request) -> HTMLResponse:
        batch_id: str = request.path_params["batch_id"]
        try:
            status = self.settings.app.batch(batch_id)
        except BatchNotFoundError as e:
            return self._error(request, 404, str(e))
        except KathikonError as e:  # an id the store refuses, a damaged record
            return self._error(request, 400, str(e))
        shares = [(state, status.counts[state]) for state in BAR_ORDER if status.counts[state]]
        return page(
            request,
            self.settings,
            "batch.html",
            {"batch": status, "shares": shares, "live": not status.finished},
        )

    def cron(self, request: Request) -> HTMLResponse:
        return page(
            request,
            self.settings,
            "cron.html",
            {"entries": self.settings.app.crontab(), "live": False},
        )
