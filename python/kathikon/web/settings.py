"""What a dashboard was made with (:func:`kathikon.web.asgi_app`'s arguments, checked)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ..app import Kathikon
from ..errors import ConfigurationError
from ..options import shown
from .guard import Auth, check_auth

#: The shortest live-refresh interval, seconds: pages poll at most once a second.
MIN_REFRESH = 1.0
#: Jobs per page of the job list, unless the URL asks for another number up to MAX_PAGE.
DEFAULT_PAGE = 50
MAX_PAGE = 500


@dataclass(frozen=True)
class Settings:
    app: Kathikon
    """The app whose store the dashboard shows (an owner or a client of the store)."""
    actions: bool
    """Whether the POST actions (retry, cancel, pause, resume, scale) are allowed."""
    auth: Auth
    refresh: Optional[float]
    """Seconds between live refreshes of the overview and the job list (``None``: off)."""
    title: str


def make_settings(
    app: object,
    read_only: Optional[bool],
    auth: object,
    refresh: Optional[float],
    title: object,
) -> Settings:
    if not isinstance(app, Kathikon):
        raise ConfigurationError(
            f"asgi_app({shown(app)}): pass the kathikon.Kathikon app whose store to show"
        )
    checked = check_auth(auth)
    if read_only is not None and not isinstance(read_only, bool):
        raise ConfigurationError(
            f"read_only={shown(read_only)} must be True, False or None (None: read-only "
            "unless auth is configured)"
        )
    if refresh is not None and (
        isinstance(refresh, bool)
        or not isinstance(refresh, (int, float))
        or not math.isfinite(refresh)
        or refresh < MIN_REFRESH
    ):
        raise ConfigurationError(
            f"refresh={shown(refresh)} must be a number of seconds of at least {MIN_REFRESH:g} "
            "(pages poll at most once a second), or None to turn live refresh off"
        )
    if not isinstance(title, str) or not title:
        raise ConfigurationError(f"title={shown(title)} must be a non-empty str")
    actions = (checked is not None) if read_only is None else not read_only
    return Settings(
        app=app,
        actions=actions,
        auth=checked,
        refresh=None if refresh is None else float(refresh),
        title=title,
    )
