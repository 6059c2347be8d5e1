""":func:`asgi_app`: the dashboard as a Starlette application."""

from __future__ import annotations

from typing import Optional

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..app import Kathikon
from .actions import Actions
from .bulk import Bulk
from .guard import Auth, Guard
from .pages import Pages
from .render import STATIC
from .settings import MIN_REFRESH, make_settings
from .workers import Workers


def asgi_app(
    app: Kathikon,
    *,
    read_only: Optional[bool] = None,
    auth: Auth = None,
    refresh: Optional[float] = MIN_REFRESH,
    title: str = "Kathikon",
) -> Starlette:
    """The web dashboard of ``app``'s store, as an ASGI application (Starlette).

    Serve it with any ASGI server (``uvicorn.run(asgi_app(app))``, or ``kathikon
    dashboard``), or mount it in an existing application under a prefix:
    ``fastapi_app.mount("/jobs", asgi_app(app, auth=check))``. It only calls the app's public
    API, so ``app`` may be the store's owner or a client of a running ``kathikon worker``.

    Args:
        app: the app whose store to show.
        read_only: ``True`` refuses every action (403); ``False`` allows them (retry, cancel
            or delete a job or many, pause, resume and scale a queue). ``None`` (default):
            actions are allowed only when ``auth`` is set.
        auth: who may use the dashboard. ``None`` (default): anyone who can reach it (keep it
            on 127.0.0.1). A token (a str of 8 characters or more): the request must carry it,
            as HTTP Basic's password (any user name; the browser asks) or as
            ``Authorization: Bearer TOKEN``. A callable: given the Starlette ``Request``, it
            returns (or awaits to) ``True`` to let it in; anything else is refused with 403.
        refresh: seconds between live refreshes of the overview and the job list (at least
            1); ``None`` turns live refresh off.
        title: the name shown in the page header and title.

    Raises:
        ConfigurationError: an argument is not usable; the message says which and why.
    """
    settings = make_settings(app, read_only, auth, refresh, title)
    pages = Pages(settings)
    actions = Actions(settings)
    bulk = Bulk(settings)
    routes = [
        Route("/", pages.overview, methods=["GET"], name="overview"),
        Route("/jobs", pages.jobs, methods=["GET"], name="jobs"),
        Route("/jobs/{job_id:int}", pages.job, methods=["GET"], name="job"),
        Route("/jobs/{job_id:int}/retry", actions.retry, methods=["POST"], name="retry"),
        Route("/jobs/{job_id:int}/cancel", actions.cancel, methods=["POST"], name="cancel"),
        Route("/jobs/{job_id:int}/delete", actions.delete, methods=["POST"], name="delete"),
        Route("/jobs/bulk", bulk.act, methods=["POST"], name="bulk"),
        Route("/batches/{batch_id:path}", pages.batch, methods=["GET"], name="batch"),
        Route("/workers", Workers(settings).show, methods=["GET"], name="workers"),
        Route("/queues", pages.queues, methods=["GET"], name="queues"),
        Route("/queues/pause", actions.pause, methods=["POST"], name="pause"),
        Route("/queues/resume", actions.resume, methods=["POST"], name="resume"),
        Route("/queues/scale", actions.scale, methods=["POST"], name="scale"),
        Route("/cron", pages.cron, methods=["GET"], name="cron"),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(Guard, auth=settings.auth)])
