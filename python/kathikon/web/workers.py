"""The workers page: the processes working the store (``app.processes()``: pid, role,
lease, queues and running jobs) and, per queue, the process that claimed from it last
(``app.queues()``), so a queue nobody serves stands out."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse

from .render import page
from .settings import Settings


class Workers:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def show(self, request: Request) -> HTMLResponse:
        """The page (a plain method: Starlette runs it in its thread pool)."""
        app = self.settings.app
        return page(
            request,
            self.settings,
            "workers.html",
            {
                "processes": app.processes(),
                "claimers": app.queues(),
                "role": app.role,
                "now": app.now(),
                "live": True,
            },
        )
