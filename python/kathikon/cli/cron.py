"""``kathikon cron --app MODULE:APP``: the app's crontab, each entry with its next run time
and the last slot that fired (as the store's owner stored it)."""

from __future__ import annotations

import click

from ..errors import StorageLockedError
from .base import HELD_WHILE_INSPECTING, CliError, cli, emit_json, iso, json_option, when
from .load import load_app


@cli.command("cron")
@click.option(
    "--app",
    "app_spec",
    metavar="MODULE:APP",
    required=True,
    help="The app whose crontab to list, e.g. myapp.jobs:app (imported from the current "
    "directory or the installed packages).",
)
@json_option
def cron_command(app_spec: str, as_json: bool) -> None:
    """The crontab declared in the app: each entry's expression, time zone, worker, next run
    time and last fired slot."""
    try:
        app = load_app(app_spec)
    except StorageLockedError as e:
        raise CliError(f"{e} ({HELD_WHILE_INSPECTING})") from None
    try:
        entries = app.crontab()
    finally:
        app.close(timeout=5)
    if as_json:
        emit_json(
            [
                {
                    "name": e.name,
                    "expression": e.expression,
                    "timezone": e.timezone,
                    "worker": e.worker,
                    "catch_up": e.catch_up,
                    "next_at": iso(e.next_at),
                    "last_slot": iso(e.last_slot),
                }
                for e in entries
            ]
        )
        return
    from rich.table import Table
    from rich.text import Text

    from .base import stdout_console

    console = stdout_console()
    if not entries:
        console.print(f"the app {app_spec} declares no cron entries", style="dim")
        return
    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("name", "expression", "timezone", "worker", "next run (UTC)", "last slot"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(
            Text(entry.name),
            Text(entry.expression),
            Text(entry.timezone),
            Text(entry.worker),
            when(entry.next_at) or Text("at start", style="dim"),
            when(entry.last_slot) or Text("never", style="dim"),
        )
    console.print(table)
