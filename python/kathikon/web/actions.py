"""The dashboard's actions: retry, cancel or delete one job; pause, resume or scale a queue
(the job list's bulk action: ``bulk.py``).

Each is a POST route only (a GET of its URL is 405 and changes nothing), reached after
:class:`~kathikon.web.guard.Guard` checked auth and the form's CSRF token; each refuses with
403 when the dashboard is read-only. A done action redirects (303) back to the page it was
made from, which says what was done; a refused one (a job that is executing cannot be
retried, an unknown queue, a bad concurrency) shows the app's error message with 400/404/409.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..errors import JobNotFoundError, JobStateError, KathikonError
from ..queues import MAX_CONCURRENCY
from .guard import form_fields
from .render import error_page, url
from .settings import Settings

READ_ONLY = (
    "this dashboard is read-only: start it with `kathikon dashboard --allow-actions` (or "
    "--token), or make it with asgi_app(app, read_only=False) or an auth= check"
)


class Actions:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _error(self, request: Request, status: int, message: str) -> HTMLResponse:
        return error_page(request, self.settings, status, message)

    async def _form(self, request: Request) -> dict[str, str]:
        return form_fields(await request.body())

    async def retry(self, request: Request) -> Response:
        return await self._job_action(request, "retry")

    async def cancel(self, request: Request) -> Response:
        return await self._job_action(request, "cancel")

    async def delete(self, request: Request) -> Response:
        return await self._job_action(request, "delete")

    async def _job_action(self, request: Request, what: str) -> Response:
        if not self.settings.actions:
            return self._error(request, 403, READ_ONLY)
        job_id: int = request.path_params["job_id"]
        app = self.settings.app
        force = (await self._form(request)).get("force") == "1"
        verbs = {
            "retry": app.retry,
            "cancel": app.cancel,
            "delete": lambda job: app.delete(job, force=force),
        }
        try:
            await run_in_threadpool(verbs[what], job_id)
        except JobNotFoundError as e:
            return self._error(request, 404, str(e))
        except JobStateError as e:
            return self._error(request, 409, str(e))
        except KathikonError as e:
            return self._error(request, 400, str(e))
        if what == "delete":  # the job's page is gone with it: back to the list
            return RedirectResponse(url(request, "jobs") + "?done=delete&n=1", status_code=303)
        target = url(request, "job", job_id=job_id) + f"?done={what}"
        return RedirectResponse(target, status_code=303)

    async def pause(self, request: Request) -> Response:
        return await self._queue_action(request, "pause")

    async def resume(self, request: Request) -> Response:
        return await self._queue_action(request, "resume")

    async def scale(self, request: Request) -> Response:
        return await self._queue_action(request, "scale")

    async def _queue_action(self, request: Request, what: str) -> Response:
        if not self.settings.actions:
            return self._error(request, 403, READ_ONLY)
        form = await self._form(request)
        queue = form.get("queue", "")
        if not queue:
            return self._error(request, 400, "the form names no queue (field 'queue')")
        app = self.settings.app
        try:
            if what == "pause":
                await run_in_threadpool(app.pause_queue, queue)
            elif what == "resume":
                await run_in_threadpool(app.resume_queue, queue)
            else:
                text = form.get("concurrency", "").strip()
                if text and not (text.isascii() and text.isdigit()):
                    return self._error(
                        request,
                        400,
                        f"concurrency {text!r} must be an int from 1 to {MAX_CONCURRENCY}, or "
                        "empty to go back to each worker's configured concurrency",
                    )
                await run_in_threadpool(app.scale_queue, queue, int(text) if text else None)
        except KathikonError as e:
            return self._error(request, 400, str(e))
        return RedirectResponse(url(request, "queues") + f"?done={what}", status_code=303)
