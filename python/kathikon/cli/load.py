"""Finding what a command works on: the app named ``MODULE:APP`` (imported by name, the one
place the package does so from operator input), the store file given with ``--path``, or the
PostgreSQL database given with ``--url``."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

import click

from ..app import Kathikon
from ..cron import fire_nothing_in_this_process
from ..errors import StorageError, StorageLockedError
from .base import HELD_WHILE_INSPECTING, URL_META, CliError
from .import_failure import import_failed


def load_app(spec: str, *, fires_cron: bool = False) -> Kathikon:
    """Import ``module.path:attribute`` (attribute defaults to ``app``) from the current
    directory or the installed packages and return that :class:`Kathikon` app. Only a command
    that runs the app's workers (``fires_cron``) fires its crontab while it owns the store; the
    others read and change the store without inserting cron jobs."""
    if not fires_cron:
        fire_nothing_in_this_process()
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if not all(p.isidentifier() for p in module_name.split(".") + attr.split(".")):
        raise CliError(f"app {spec!r} is not MODULE:ATTRIBUTE, e.g. myapp.jobs:app")
    module = _import(module_name, spec)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(
                f"module {module_name!r} has no attribute {attr!r} (app {spec})"
            ) from None
    if not isinstance(obj, Kathikon):
        raise CliError(f"{spec} is a {type(obj).__name__}, not a kathikon.Kathikon app")
    if obj.closed:
        raise CliError(f"the app {spec} is already closed when its module has been imported")
    return obj


def _import(module_name: str, spec: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except StorageError:
        raise  # e.g. the store is held: reported as what it is, by the command
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name + ".").startswith(e.name + "."):
            raise CliError(
                f"cannot import {module_name!r} (app {spec}): no module named {e.name!r} "
                f"in {cwd} or the installed packages"
            ) from None
        raise CliError(import_failed(module_name, e), cause=e) from None
    except Exception as e:  # anything the module's own code raises, SyntaxError included
        raise CliError(import_failed(module_name, e), cause=e) from None


@contextmanager
def opened(app_spec: Optional[str], path: Optional[str]) -> Iterator[Kathikon]:
    """The app named by ``--app``, the store file at ``--path`` or the database at ``--url``;
    closed afterwards."""
    url: Optional[str] = click.get_current_context().meta.get(URL_META)
    if sum(given is not None for given in (app_spec, path, url)) != 1:
        raise click.UsageError(
            "name the store with one of --app MODULE:ATTRIBUTE, --path FILE, --url URL"
        )
    try:
        if url is not None:
            app = Kathikon(url=url)
        elif app_spec is not None:
            app = load_app(app_spec)
            if app.path is None and app.url is None:
                app.close()
                raise CliError(
                    f"the app {app_spec} keeps its jobs in memory (path=None): "
                    "there is no store to inspect"
                )
        else:
            assert path is not None
            if not os.path.exists(path):
                raise CliError(f"no store at {path}: the file does not exist")
            if not os.path.isfile(path):
                raise CliError(f"{path} is not a store: it is not a file")
            app = Kathikon(path)
    except StorageLockedError as e:
        raise CliError(f"{e} ({HELD_WHILE_INSPECTING})") from None
    try:
        yield app
    finally:
        app.close(timeout=5)
