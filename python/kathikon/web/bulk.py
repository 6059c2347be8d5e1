"""The job list's bulk action: retry, cancel or delete the selected jobs, or every job
matching the list's filter.

A POST only, after :class:`~kathikon.web.guard.Guard` checked auth and the CSRF token;
refused with 403 when the dashboard is read-only. The form carries ``action``, ``scope``
(``selected``: the ``id`` fields of the ticked rows; ``filter``: the list's filter fields,
read as the list reads them), and ``force`` for a delete of unfinished jobs. Selected jobs
are acted on one by one through ``app.retry``/``app.cancel``/``app.delete`` (a page holds at
most ``MAX_PAGE`` of them), a filter through ``app.retry_jobs``/``cancel_jobs``/
``delete_jobs``, which work in bounded chunks. Done, it redirects (303) to the list with the
same filter, which says how many jobs were acted on.
"""

from __future__ import annotations

from typing import Callable, Optional
from urllib.parse import parse_qs, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..app import Kathikon
from ..errors import JobNotFoundError, JobStateError, KathikonError
from . import filters
from .render import error_page, url
from .settings import MAX_PAGE, Settings

ACTIONS = ("retry", "cancel", "delete")
READ_ONLY = (
    "this dashboard is read-only: start it with `kathikon dashboard --allow-actions` (or "
    "--token), or make it with asgi_app(app, read_only=False) or an auth= check"
)


VERBS = {"retry": "Retried", "cancel": "Cancelled", "delete": "Deleted"}


def bulk_done(action: str, n: str, skipped: str) -> Optional[str]:
    """What the list says after a bulk action redirected to it (``None``: none was done)."""
    if action not in VERBS or not (n.isascii() and n.isdigit()):
        return None
    text = f"{VERBS[action]} {n} job{'' if n == '1' else 's'}."
    if skipped.isascii() and skipped.isdigit():
        text += (
            f" Skipped {skipped}: a selected job whose state does not allow it (an executing "
            "job is not retried; an unfinished one is deleted only with force) or that is gone."
        )
    return text


def _fields(body: bytes) -> dict[str, list[str]]:
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return {}


def _ids(values: list[str]) -> list[int]:
    out = []
    for text in values:
        if not (text.isascii() and text.isdigit()) or int(text) >= 2**64:
            raise ValueError(
                f"id={text!r} in the form is not a job id (an int from 0 to 2**64 - 1)"
            )
        out.append(int(text))
    if not out:
        raise ValueError(
            "no job is selected: tick the jobs to act on, or choose every job matching the filter"
        )
    if len(out) > MAX_PAGE:
        raise ValueError(
            f"{len(out)} jobs are selected, more than a page holds ({MAX_PAGE}); act on every "
            "job matching a filter instead"
        )
    return out


def _one_by_one(app: Kathikon, action: str, ids: list[int], force: bool) -> tuple[int, int]:
    """``(done, skipped)``: each selected job retried, cancelled or deleted; one whose state
    forbids it (an executing job to retry, an unfinished one to delete without force) or that
    is gone by now is skipped."""
    verbs: dict[str, Callable[[int], object]] = {
        "retry": app.retry,
        "cancel": app.cancel,
        "delete": lambda job_id: app.delete(job_id, force=force),
    }
    verb = verbs[action]
    done = skipped = 0
    for job_id in ids:
        try:
            verb(job_id)
        except (JobStateError, JobNotFoundError):
            skipped += 1
        else:
            done += 1
    return done, skipped


def _by_filter(app: Kathikon, action: str, query: filters.JobQuery, force: bool) -> int:
    if action == "retry":
        return app.retry_jobs(**query.filters)
    if action == "cancel":
        return app.cancel_jobs(**query.filters)
    return app.delete_jobs(force=force, **query.filters)


class Bulk:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _error(self, request: Request, status: int, message: str) -> HTMLResponse:
        return error_page(request, self.settings, status, message)

    async def act(self, request: Request) -> Response:
        if not self.settings.actions:
            return self._error(request, 403, READ_ONLY)
        fields = _fields(await request.body())
        action = (fields.get("action") or [""])[0]
        scope = (fields.get("scope") or ["selected"])[0]
        force = (fields.get("force") or [""])[0] == "1"
        if action not in ACTIONS:
            return self._error(
                request, 400, f"action={action!r} must be one of {', '.join(ACTIONS)}"
            )
        if scope not in ("selected", "filter"):
            return self._error(request, 400, f"scope={scope!r} must be 'selected' or 'filter'")
        try:
            query = filters.parse(fields)
        except KathikonError as e:
            return self._error(request, 400, str(e))
        app = self.settings.app
        skipped = 0
        try:
            if scope == "selected":
                ids = _ids(fields.get("id", []))
                done, skipped = await run_in_threadpool(_one_by_one, app, action, ids, force)
            else:
                done = await run_in_threadpool(_by_filter, app, action, query, force)
        except ValueError as e:
            return self._error(request, 400, str(e))
        except KathikonError as e:
            return self._error(request, 400, str(e))
        report = [("done", action), ("n", str(done))]
        if skipped:
            report.append(("skipped", str(skipped)))
        target = url(request, "jobs") + "?" + urlencode(query.items() + report)
        return RedirectResponse(target, status_code=303)
