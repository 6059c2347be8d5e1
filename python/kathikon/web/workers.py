"""The workers page: the processes working the store.

With ``app.processes()`` (each process's pid, role, lease, queues and running jobs) it lists
those; on an app without it, it shows what ``app.queues()`` knows: per queue, the process
that claimed from it last and how long ago its claim's wait ended. Each process's fields are
read by name and shown when present, so the page follows what the API gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from starlette.requests import Request
from starlette.responses import HTMLResponse

from .render import page
from .settings import Settings


@dataclass(frozen=True)
class ProcessRow:
    pid: Optional[int]
    role: Optional[str]
    lease: Any
    """When the process's lease ends (a datetime), or seconds left; ``None``: not given."""
    queues: list[str]
    running: list[int]
    """The ids of the jobs it runs now."""


def _field(process: Any, *names: str) -> Any:
    for name in names:
        if isinstance(process, dict) and name in process:
            return process[name]
        value = getattr(process, name, None)
        if value is not None:
            return value
    return None


def _ids(value: Any) -> list[int]:
    if value is None or isinstance(value, (str, bytes)):
        return []
    try:
        return [int(getattr(j, "id", j)) for j in value]
    except (TypeError, ValueError):
        return []


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return sorted(str(k) for k in value)
    try:
        return [str(v) for v in value]
    except TypeError:
        return []


def process_rows(processes: Any) -> list[ProcessRow]:
    return [
        ProcessRow(
            pid=_field(p, "pid"),
            role=_field(p, "role"),
            lease=_field(p, "lease", "lease_until", "lease_expires_at"),
            queues=_names(_field(p, "queues")),
            running=_ids(_field(p, "running", "running_jobs", "jobs")),
        )
        for p in processes
    ]


class Workers:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def show(self, request: Request) -> HTMLResponse:
        """The page (a plain method: Starlette runs it in its thread pool)."""
        app = self.settings.app
        listing = getattr(app, "processes", None)
        rows = process_rows(listing()) if callable(listing) else None
        claimers = app.queues() if rows is None else []
        return page(
            request,
            self.settings,
            "workers.html",
            {"processes": rows, "claimers": claimers, "role": app.role, "live": True},
        )
