"""``kathikon dashboard APP|--path FILE``: serve the web dashboard (:mod:`kathikon.web`) with
uvicorn until Ctrl-C or SIGTERM.

It binds 127.0.0.1 unless told otherwise and is read-only unless ``--allow-actions`` or a
token (``--token`` or ``KATHIKON_DASHBOARD_TOKEN``) is given. It opens the store as any
command does: as a client of a running ``kathikon worker``, or as its owner when none runs
(it then runs no jobs and fires no cron entries).
"""

from __future__ import annotations

import ipaddress
import signal
import threading
from typing import Optional

import click

from .base import CliError, cli, url_option
from .load import opened

TOKEN_ENV = "KATHIKON_DASHBOARD_TOKEN"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cli.command("dashboard")
@click.argument("app_spec", metavar="MODULE:APP", required=False)
@click.option("--path", "path", metavar="FILE", help="The store file, opened directly.")
@url_option
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to bind.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="The port."
)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Allow retry/cancel of jobs and pause/resume/scale of queues (read-only otherwise).",
)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    metavar="TOKEN",
    help=f"Require this token (HTTP Basic password, or Bearer); allows actions. Prefer the "
    f"{TOKEN_ENV} environment variable: a command line is visible to other users.",
)
@click.option(
    "--read-only",
    is_flag=True,
    help="Refuse actions even with a token.",
)
def dashboard_command(
    app_spec: Optional[str],
    path: Optional[str],
    host: str,
    port: int,
    allow_actions: bool,
    token: Optional[str],
    read_only: bool,
) -> None:
    """Serve the web dashboard of MODULE:APP's store (or --path FILE's) on
    http://127.0.0.1:8000 until Ctrl-C. Needs pip install "kathikon[web]"."""
    if allow_actions and read_only:
        raise click.UsageError("--allow-actions and --read-only contradict each other")
    try:
        import uvicorn

        from ..web import asgi_app
    except ImportError as e:
        raise CliError(
            f'the dashboard needs the [web] extra ({e}): pip install "kathikon[web]"'
        ) from None
    with opened(app_spec, path) as app:
        choice: Optional[bool] = True if read_only else (False if allow_actions else None)
        dashboard = asgi_app(app, read_only=choice, auth=token or None)
        if not _loopback(host) and token is None:
            click.echo(
                f"kathikon: warning: serving the dashboard on {host} with no token: anyone "
                f"who can reach port {port} sees every job's args; set {TOKEN_ENV}",
                err=True,
            )
        mode = "actions allowed" if _actions(choice, token) else "read-only"
        click.echo(f"kathikon dashboard on http://{host}:{port}/ ({mode})", err=True)
        # uvicorn stops on SIGTERM, then sends it again to the handler it found: a no-op one
        # here, so that the store is closed and the command exits 0 as after Ctrl-C's stop.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: None)
        uvicorn.run(dashboard, host=host, port=port, log_level="warning")


def _actions(read_only: Optional[bool], token: Optional[str]) -> bool:
    return (token is not None) if read_only is None else not read_only
