"""Rendering pages: the Jinja2 environment (autoescape on for every template, so a job's
args, meta, errors, tags, queue and worker names are text, never markup) and the filters
the templates share."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..job import JobState
from .guard import CSRF_FIELD, csrf_token
from .settings import Settings

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

#: Characters of a job's args shown in a list before it is cut.
ARGS_PREVIEW = 120


def when(dt: Optional[datetime]) -> str:
    """An aware datetime as UTC text to the second; ``""`` for ``None``."""
    return "" if dt is None else dt.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: Optional[float]) -> str:
    """Seconds as a short human duration (``42 s``, ``3 min 5 s``, ``2 h 10 min``)."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    m, s = divmod(int(seconds), 60)
    if m < 60:
        return f"{m} min {s} s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min"
    d, h = divmod(h, 24)
    return f"{d} d {h} h"


def as_json(value: Any, indent: Optional[int] = 2) -> str:
    """``value`` as JSON text for people (non-ASCII kept; anything JSON cannot say, as str)."""
    return json.dumps(value, indent=indent, ensure_ascii=False, sort_keys=True, default=str)


def preview(value: Any) -> str:
    """One line of ``value``'s JSON, cut to :data:`ARGS_PREVIEW` characters."""
    text = as_json(value, indent=None)
    return text if len(text) <= ARGS_PREVIEW else text[: ARGS_PREVIEW - 1] + "…"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["duration"] = duration
    env.filters["json"] = as_json
    env.filters["preview"] = preview
    env.globals["STATES"] = [state.value for state in JobState]
    env.globals["CSRF_FIELD"] = CSRF_FIELD
    return env


ENVIRONMENT = _environment()


def url(request: Request, name: str, **path_params: Any) -> str:
    """The path of route ``name`` under wherever the dashboard is mounted."""
    return request.url_for(name, **path_params).path


def page(
    request: Request,
    settings: Settings,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """``template`` rendered with ``context`` and what every page uses: the request, the
    dashboard's settings, its CSRF token and ``url(name, **params)``."""
    html = ENVIRONMENT.get_template(template).render(
        request=request,
        settings=settings,
        csrf=csrf_token(request),
        url=lambda name, **params: url(request, name, **params),
        **{"live": False, "active": "", **context},
    )
    return HTMLResponse(html, status_code=status_code)


def error_page(request: Request, settings: Settings, status: int, message: str) -> HTMLResponse:
    """The error page with ``status``, saying ``message`` (a typed error's own text)."""
    context = {"status": status, "message": message}
    return page(request, settings, "error.html", context, status_code=status)
