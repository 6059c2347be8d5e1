"""What every command shares: the click group, the error the command line reports, the
options that name a store, and how output is written (tables on a terminal, JSON for scripts)."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

import click

from .. import __version__
from ..job import Job

if TYPE_CHECKING:  # rich is imported where it is used: --json output does without it
    from rich.console import Console
    from rich.text import Text

F = TypeVar("F", bound=Callable[..., Any])

STATE_STYLES = {
    "scheduled": "blue",
    "available": "cyan",
    "executing": "yellow",
    "retryable": "magenta",
    "completed": "green",
    "cancelled": "bright_black",
    "discarded": "red",
}
# Column headers of `kathikon stats` in terminals narrower than 120 columns.
SHORT_STATES = {
    "scheduled": "sched",
    "available": "avail",
    "executing": "exec",
    "retryable": "retry",
    "completed": "done",
    "cancelled": "cancel",
    "discarded": "disc",
}
STATE_OF_HEADING = {short: state for state, short in SHORT_STATES.items()}
# Fewer ids than this are retried or cancelled without a progress bar.
PROGRESS_MIN = 10
# A store held by a process that does not serve it (an older kathikon, or connect=False).
HELD_WHILE_INSPECTING = "that process does not serve the store on its socket"
HELD_WHILE_WORKING = HELD_WHILE_INSPECTING


class CliError(Exception):
    """An error the command line reports as one line on stderr, then exits with ``code``.
    ``cause``, when given, is the exception whose traceback ``KATHIKON_DEBUG=1`` prints
    above that line (the user's own code failed, and its traceback is theirs to read)."""

    def __init__(self, message: str, code: int = 1, cause: Optional[BaseException] = None) -> None:
        super().__init__(message)
        self.code = code
        self.cause = cause


#: Where ``--url`` leaves its value in the click context, for :func:`kathikon.cli.load.opened`.
URL_META = "kathikon.url"


def _keep_url(ctx: click.Context, _param: click.Parameter, value: Optional[str]) -> None:
    if value is not None:
        ctx.meta[URL_META] = value


def url_option(f: F) -> F:
    """``--url``: a PostgreSQL database as the store (read by ``opened``, not passed)."""
    return click.option(
        "--url",
        metavar="URL",
        expose_value=False,
        callback=_keep_url,
        help="The PostgreSQL database, e.g. postgresql://app@db/app (instead of --app).",
    )(f)


def store_options(f: F) -> F:
    """``--app`` / ``--path`` / ``--url``: which store a command works on."""
    f = url_option(f)
    f = click.option(
        "--path",
        "path",
        metavar="FILE",
        help="The store file, opened directly (instead of --app).",
    )(f)
    return click.option(
        "--app",
        "app_spec",
        metavar="MODULE:APP",
        help="The app whose store to use, e.g. myapp.jobs:app (imported from the current "
        "directory or the installed packages).",
    )(f)


def json_option(f: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON on stdout, for scripts."
    )(f)


# -- output ---------------------------------------------------------------------------------


def describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def one_line(message: str) -> str:
    return re.sub(r"\s*\n\s*", " ", message).strip()


def error_line(message: str) -> None:
    click.echo(f"kathikon: error: {one_line(message)}", err=True)


def stdout_console() -> Console:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or redirected: do not squeeze tables into 80 columns.
        console = Console(highlight=False, width=240)
    return console


def emit_json(data: Any, one_line: bool = False) -> None:
    click.echo(json.dumps(data, indent=None if one_line else 2, ensure_ascii=False))


def iso(dt: Optional[datetime]) -> Optional[str]:
    return None if dt is None else dt.isoformat()


def when(dt: Optional[datetime]) -> str:
    return "" if dt is None else dt.strftime("%Y-%m-%d %H:%M:%S")


def age_text(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(seconds), 60)
    if m < 60:
        return f"{m} m {s} s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} m"
    d, h = divmod(h, 24)
    return f"{d} d {h} h"


def job_to_dict(job: Job) -> dict[str, Any]:
    """Every field of a job, JSON-ready (times as ISO 8601 strings in UTC)."""
    return {
        "id": job.id,
        "state": job.state.value,
        "queue": job.queue,
        "worker": job.worker,
        "args": job.args,
        "meta": job.meta,
        "tags": job.tags,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "errors": [
            {"at": iso(e["at"]), "attempt": e["attempt"], "error": e["error"]} for e in job.errors
        ],
        "inserted_at": iso(job.inserted_at),
        "scheduled_at": iso(job.scheduled_at),
        "attempted_at": iso(job.attempted_at),
        "completed_at": iso(job.completed_at),
        "cancelled_at": iso(job.cancelled_at),
        "discarded_at": iso(job.discarded_at),
        "result": job.result,
        "batch_id": job.batch_id,
    }


def styled_state(state: str) -> Text:
    from rich.text import Text

    return Text(state, style=STATE_STYLES.get(state, ""))


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def last_error_line(job: Job) -> str:
    if not job.errors:
        return ""
    lines = [line for line in job.errors[-1]["error"].splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


@contextmanager
def progress(description: str, total: Optional[int]) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr while the block runs, when stderr is a terminal (and, for a
    known ``total``, when there are enough steps to be worth one). Yields ``advance()``."""
    if not sys.stderr.isatty() or (total is not None and total < PROGRESS_MIN):
        yield lambda: None
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    if not console.is_terminal:  # e.g. TERM=dumb
        yield lambda: None
        return
    columns: list[ProgressColumn] = [SpinnerColumn(), TextColumn(escape(description))]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, redirect_stdout=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """Seconds, or a number with a unit: ``90``, ``90s``, ``15m``, ``2h``, ``7d``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*", value)
    if match is None:
        raise click.BadParameter(
            f"{value!r} is not a duration; use seconds or e.g. 90s, 15m, 2h, 7d", ctx, param
        )
    return float(match.group(1)) * DURATION_UNITS[match.group(2)]


# -- the commands ---------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="kathikon")
def cli() -> None:
    """Kathikon: a durable job queue. Run an app's workers, inspect and manage its jobs.

    Commands that inspect jobs take the app (--app myapp.jobs:app, which opens its store) or
    the store file itself (--path jobs.redb). While a worker runs, it holds the store.
    """
