"""``kathikon processes``: who works on the store (the owner and every process connected to
it), with pids, leases and running jobs; and how ``kathikon job`` shows a job's progress."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from ..process_info import ProcessInfo
from ..progress import Progress
from .base import cli, emit_json, iso, json_option, store_options, when
from .load import opened


def progress_to_dict(reported: Optional[Progress]) -> Optional[dict[str, Any]]:
    """A job's stored progress, JSON-ready (``None`` when it reported none)."""
    if reported is None:
        return None
    return {
        "fraction": reported.fraction,
        "note": reported.note,
        "at": iso(reported.at),
        "attempt": reported.attempt,
    }


def progress_text(reported: Progress) -> str:
    """``42% resizing (attempt 1, 2026-12-01 10:00:00)``."""
    note = f" {reported.note}" if reported.note else ""
    return f"{reported.fraction:.0%}{note} (attempt {reported.attempt}, {when(reported.at)})"


def process_to_dict(p: ProcessInfo) -> dict[str, Any]:
    """One process, JSON-ready (times as ISO 8601 strings in UTC)."""
    return {
        "pid": p.pid,
        "role": p.role,
        "hostname": p.hostname,
        "connected_at": iso(p.connected_at),
        "last_seen": iso(p.last_seen),
        "lease_expires": iso(p.lease_expires),
        "jobs": list(p.jobs),
        "queues": list(p.queues),
    }


def _seconds_left(until: Optional[datetime], now: datetime) -> str:
    return "" if until is None else f"{(until - now).total_seconds():.1f} s"


@cli.command("processes")
@store_options
@json_option
def processes_command(app_spec: Optional[str], path: Optional[str], as_json: bool) -> None:
    """The processes working on the store: the owner and each process connected to it, with
    pid, role, when each was last heard from and when its lease expires, the jobs it is
    running and the queues it claims from. This command's own connection is listed too."""
    with opened(app_spec, path) as app:
        found = app.processes()
        now = app.now()
    if as_json:
        emit_json([process_to_dict(p) for p in found])
        return
    from rich.table import Table
    from rich.text import Text

    from .base import stdout_console

    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("pid", "role", "host", "connected (UTC)", "lease left", "jobs", "queues"):
        table.add_column(column, overflow="fold")
    for p in found:
        table.add_row(
            str(p.pid),
            Text(p.role, style="bold" if p.role == "owner" else ""),
            Text(p.hostname),
            when(p.connected_at),
            _seconds_left(p.lease_expires, now),
            Text(" ".join(map(str, p.jobs)) or "-", style="" if p.jobs else "dim"),
            Text(", ".join(p.queues)),
        )
    stdout_console().print(table)
