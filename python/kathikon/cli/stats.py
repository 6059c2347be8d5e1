"""``kathikon stats``: jobs per queue and state, who serves each queue, how long the oldest
available job has waited; ``--watch`` shows it again every few seconds."""

from __future__ import annotations

from typing import Optional

import click

from ..app import Kathikon
from ..job import JobState
from ..queue_check import QueueCheck
from .base import (
    SHORT_STATES,
    age_text,
    cli,
    emit_json,
    iso,
    json_option,
    stdout_console,
    store_options,
)
from .load import opened


@cli.command("stats")
@store_options
@json_option
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    is_flag=False,
    flag_value=2.0,
    default=None,
    metavar="[SECONDS]",
    help="Show the counts again every SECONDS (default 2) until Ctrl-C: in place on a "
    "terminal, else one table per interval after a line with the time (with --json, one "
    "JSON object per line).",
)
def stats_command(
    app_spec: Optional[str], path: Optional[str], as_json: bool, watch: Optional[float]
) -> None:
    """Jobs per queue and state, and how long the oldest available job has waited."""
    with opened(app_spec, path) as app:
        if watch is None:
            _show_stats(app, app_spec is None, as_json)
        else:
            from .watch import watch as watch_every

            watch_every(
                lambda: _show_stats(app, app_spec is None, as_json, one_line=True),
                watch,
                time_lines=not as_json,
            )


def _show_stats(app: Kathikon, by_path: bool, as_json: bool, one_line: bool = False) -> None:
    """Print the stats of ``app``'s store: a table, or JSON (on one line if ``one_line``)."""
    counts = app.stats()
    if by_path:
        # Opened by path: show the queues that hold jobs, not this process's default one.
        counts = {q: c for q, c in counts.items() if any(c.values())}
    now = app.now()
    oldest = {q: app.oldest_available(q) for q in counts}
    checks = {q: app.check_queue(q) for q in counts}
    quarantined = app.quarantined()
    ages = {q: None if at is None else (now - at).total_seconds() for q, at in oldest.items()}
    if not as_json:
        _print_stats(counts, ages, checks)
        if quarantined:
            stdout_console().print(
                f"{len(quarantined)} damaged job record(s) quarantined (ids "
                f"{', '.join(str(r['id']) for r in quarantined[:20])}); "
                "`kathikon stats --json` lists why",
                style="bold red",
            )
        return
    emit_json(
        {
            "now": iso(now),
            "quarantined": [
                {"id": r["id"], "quarantined_at": iso(r["quarantined_at"]), "reason": r["reason"]}
                for r in quarantined
            ],
            "queues": {
                q: {
                    "states": c,
                    "total": sum(c.values()),
                    "oldest_available_at": iso(oldest[q]),
                    "oldest_available_age": ages[q],
                    "served": checks[q].served,
                    "claimer_pid": checks[q].claimer_pid,
                    "claimed_ago": checks[q].idle,
                }
                for q, c in counts.items()
            },
        },
        one_line=one_line,
    )


def _print_stats(
    counts: dict[str, dict[str, int]],
    ages: dict[str, Optional[float]],
    checks: dict[str, QueueCheck],
) -> None:
    from rich.table import Table
    from rich.text import Text

    console = stdout_console()
    if not counts:
        console.print("no jobs", style="dim")
        return
    table = Table(header_style="bold", box=None, pad_edge=False)
    table.add_column("queue", overflow="fold")
    wide = console.width >= 120
    for s in JobState:
        table.add_column(s.value if wide else SHORT_STATES[s.value], justify="right")
    table.add_column("total", justify="right")
    table.add_column("served by" if wide else "by", justify="right")
    table.add_column("oldest available" if wide else "waited", justify="right")
    for q, c in counts.items():
        age = ages[q]
        check = checks[q]
        table.add_row(
            Text(q),
            *(Text(str(c[s.value]), style="" if c[s.value] else "dim") for s in JobState),
            str(sum(c.values())),
            Text(f"pid {check.claimer_pid}")
            if check.served
            else Text("nobody", style="bold red" if check.available else "dim"),
            "" if age is None else age_text(age),
        )
    console.print(table)
    # A queue with available jobs and no worker: those jobs would wait forever unseen.
    for check in checks.values():
        if check.available and not check.served:
            console.print(f"queue {check.queue}: {check.summary}", style="bold red")
