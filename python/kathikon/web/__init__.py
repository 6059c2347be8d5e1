"""Kathikon's web dashboard: ``pip install "kathikon[web]"``, then ``kathikon dashboard
myapp.jobs:app`` or :func:`asgi_app` mounted in your own ASGI application.

Server-rendered pages (Starlette and Jinja2, autoescaped), a few lines of JavaScript for live
refresh, assets shipped in the package (no CDN: it works offline). Safe by default: the
command binds 127.0.0.1, the dashboard is read-only unless actions are allowed or an auth
check is configured, and every action is a POST carrying a CSRF token. See
docs/guides/dashboard.md.
"""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"kathikon.web needs the [web] extra ({e.name} is not installed): "
        'pip install "kathikon[web]"'
    ) from e

from .asgi import asgi_app

__all__ = ["asgi_app"]
