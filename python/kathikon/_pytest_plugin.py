"""The fixtures of the ``kathikon`` pytest plugin; pytest loads them through
:mod:`kathikon.testing` (the ``pytest11`` entry point), which documents them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .app import Kathikon
from .errors import ConfigurationError


@pytest.fixture
def kathikon_app_options() -> dict[str, Any]:
    """Keyword arguments for the app ``kathikon_app`` builds, on top of ``path=None`` and
    ``clock="manual"`` (which they may override). Override this fixture to set queues etc."""
    return {}


@pytest.fixture
def kathikon_app(kathikon_app_options: dict[str, Any]) -> Iterator[Kathikon]:
    """A fresh in-memory app on a manual clock (``app.advance_clock(seconds)`` moves it),
    built with ``kathikon_app_options`` and closed after the test; or, after
    ``kathikon.testing.use(app)``, that app with an empty store."""
    from .testing import make_app, used_app
    from .testing_mode import reset

    used = used_app()
    if used is None:
        app = make_app(**kathikon_app_options)
        try:
            yield app
        finally:
            app.close(timeout=5)
        return
    if kathikon_app_options:
        raise ConfigurationError(
            f"kathikon_app_options {kathikon_app_options!r} do not apply to the app given to "
            f"kathikon.testing.use() ({used!r}); set them where that app is created"
        )
    reset(used)
    try:
        yield used
    finally:
        reset(used)  # so that code using the app outside the fixture sees no leftovers either
