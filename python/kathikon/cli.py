"""The ``kathikon`` command line: run an app's workers, and inspect and manage its jobs.

::

    kathikon worker myapp.jobs:app [--queues emails,default] [--concurrency N] [--grace S]
    kathikon jobs   (--app myapp.jobs:app | --path jobs.redb) [--state S] [--queue Q] [--json]
    kathikon job ID ...    kathikon retry ID... ...    kathikon cancel ID... ...
    kathikon stats ... [--watch [SECONDS]]     kathikon prune ... [--older-than 7d]
    kathikon insert myapp.jobs:app WORKER [--args JSON] [--queue Q] [--schedule-in 1h] ...

Exit status: 0 on success, 1 on an error (one line on stderr, never a traceback), 2 on a
usage error, 130 when interrupted. ``--json`` prints machine-readable output on stdout.

The commands are a :mod:`click` group, :data:`cli`; add one with ``@cli.command()``, or in a
module of its own added by ``_add_commands`` (as :mod:`kathikon.cli_insert` is).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional, TypeVar

import click

from . import __version__
from .app import OPEN_LOGGER, Kathikon
from .errors import (
    JobNotFoundError,
    JobStateError,
    KathikonError,
    StorageError,
    StorageLockedError,
)
from .import_failure import import_failed
from .job import Job, JobState
from .queue_check import QueueCheck
from .testing_mode import refuse_run

if TYPE_CHECKING:  # rich is imported where it is used: --json output does without it
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("kathikon.worker")

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
_STATE_OF_HEADING = {short: state for state, short in SHORT_STATES.items()}
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


# -- loading the app or opening the store ---------------------------------------------------


def load_app(spec: str) -> Kathikon:
    """Import ``module.path:attribute`` (attribute defaults to ``app``) from the current
    directory or the installed packages and return that :class:`Kathikon` app."""
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
    """The app named by ``--app``, or the store at ``--path``; closed afterwards."""
    if (app_spec is None) == (path is None):
        raise click.UsageError("name the store with --app MODULE:ATTRIBUTE or --path FILE")
    try:
        if app_spec is not None:
            app = load_app(app_spec)
            if app.path is None:
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


def store_options(f: F) -> F:
    """``--app`` / ``--path``: which store a command works on."""
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


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _one_line(message: str) -> str:
    return re.sub(r"\s*\n\s*", " ", message).strip()


def error_line(message: str) -> None:
    click.echo(f"kathikon: error: {_one_line(message)}", err=True)


def _stdout() -> Console:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or redirected: do not squeeze tables into 80 columns.
        console = Console(highlight=False, width=240)
    return console


def emit_json(data: Any, one_line: bool = False) -> None:
    click.echo(json.dumps(data, indent=None if one_line else 2, ensure_ascii=False))


def _iso(dt: Optional[datetime]) -> Optional[str]:
    return None if dt is None else dt.isoformat()


def _when(dt: Optional[datetime]) -> str:
    return "" if dt is None else dt.strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: float) -> str:
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
            {"at": _iso(e["at"]), "attempt": e["attempt"], "error": e["error"]} for e in job.errors
        ],
        "inserted_at": _iso(job.inserted_at),
        "scheduled_at": _iso(job.scheduled_at),
        "attempted_at": _iso(job.attempted_at),
        "completed_at": _iso(job.completed_at),
        "cancelled_at": _iso(job.cancelled_at),
        "discarded_at": _iso(job.discarded_at),
    }


def _state(state: str) -> Text:
    from rich.text import Text

    return Text(state, style=STATE_STYLES.get(state, ""))


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _last_error_line(job: Job) -> str:
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


def _parse_queues(
    text: Optional[str], concurrency: Optional[int], configured: dict[str, int]
) -> dict[str, int]:
    """``--queues a,b:5`` and ``--concurrency N`` → queue → concurrency."""
    if text is None:
        names: dict[str, Optional[int]] = dict.fromkeys(configured)
    else:
        names = {}
        for item in text.split(","):
            name, colon, number = item.strip().partition(":")
            if not name:
                raise click.BadParameter(
                    f"{text!r}: name the queues, e.g. emails,default or emails:5,default",
                    param_hint="--queues",
                )
            if colon and not (number.isdigit() and int(number) >= 1):
                raise click.BadParameter(
                    f"{item.strip()!r}: the concurrency after ':' must be an int of at least 1",
                    param_hint="--queues",
                )
            names[name] = int(number) if colon else None
    return {
        name: (
            given
            if given is not None
            else (concurrency if concurrency is not None else configured.get(name, 1))
        )
        for name, given in names.items()
    }


@cli.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option(
    "--queues",
    "-q",
    metavar="NAMES",
    help="Run only these queues, comma-separated; NAME:N also sets a queue's concurrency. "
    "Default: every queue of the app.",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    help="Jobs run at once per queue (default: each queue's configured concurrency).",
)
@click.option(
    "--processes",
    "-p",
    type=click.IntRange(min=1),
    help="Run the jobs in N worker processes (past the GIL, for CPU-bound jobs); this process "
    "keeps the store. Each queue's concurrency is split between them. Default: run the jobs "
    "in this process.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for running jobs at shutdown; jobs still running then are handed "
    "back as interrupted (due again at once, the attempt not counted).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Least level of the `kathikon` loggers that is logged (job lines: INFO completed, "
    "WARNING retried or interrupted, ERROR discarded).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"], case_sensitive=False),
    default="text",
    show_default=True,
    help="text: one human-readable line per event; json: one JSON object per line. "
    "Applies when the app does not configure logging itself.",
)
def worker(
    app_spec: str,
    queues: Optional[str],
    concurrency: Optional[int],
    processes: Optional[int],
    grace: float,
    log_level: str,
    log_format: str,
) -> None:
    """Run the workers of the app MODULE:APP (e.g. myapp.jobs:app) until SIGINT or SIGTERM.

    Logs one line per job outcome on the `kathikon` logger. On the first signal it stops
    claiming jobs and waits up to --grace seconds for the running ones, then hands back those
    still running (due again, the attempt not counted) and exits 0. A second signal exits at
    once (status 1); jobs that were running stay executing in the store and are rescued, that
    attempt counted, when it is next opened.
    """
    from . import joblog

    # Before the app is imported, so that what it logs at import is formatted alike.
    joblog.configure(log_level, log_format)
    # The start line names the store's absolute path and this process's role, and a refusal
    # stays one line: the app's own line about opening the store would only repeat them.
    open_logger = logging.getLogger(OPEN_LOGGER)
    open_level = open_logger.level
    open_logger.setLevel(logging.WARNING)
    try:
        app = load_app(app_spec)
    except StorageLockedError as e:
        raise CliError(f"{e} ({HELD_WHILE_WORKING})") from None
    try:
        if app.testing is not None:  # it would run no job and wait forever
            raise CliError(str(refuse_run(app, "kathikon worker")))
        selected = _parse_queues(queues, concurrency, app.config.queues)
        _run_worker(app, selected, grace, processes)
    finally:
        joblog.unconfigure()
        open_logger.setLevel(open_level)
        if not app.closed:
            app.close(timeout=0)


def _run_worker(
    app: Kathikon, selected: dict[str, int], grace: float, processes: Optional[int]
) -> None:
    stop = threading.Event()
    signals: list[int] = []

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        signals.append(signum)
        name = signal.Signals(signum).name
        if len(signals) == 1:
            log.info(
                "%s received: no new jobs are claimed; waiting up to %s s for running jobs "
                "(send it again to exit at once)",
                name,
                f"{grace:g}",
            )
            stop.set()
        else:
            log.warning(
                "%s received again: exiting now; running jobs stay executing and are "
                "rescued when the store is next opened",
                name,
            )
            _hard_exit(1)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        app.start(selected, processes=processes, grace=grace)
        store = "memory" if app.path is None else os.path.abspath(app.path)
        log.info(
            "kathikon %s worker started: pid=%d store=%s role=%s queues=%s concurrency=%d "
            "processes=%s grace=%ss",
            __version__,
            os.getpid(),
            store,
            app.role if app.role == "owner" else f"client of pid {app.owner_pid}",
            ",".join(f"{q}:{n}" for q, n in selected.items()),
            sum(selected.values()),
            processes or 1,
            f"{grace:g}",
        )
        while not stop.wait(0.5):
            pass
        finished = app.stop(timeout=grace)
        app.close(timeout=0)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if finished:
        log.info("stopped: every running job finished")
        return
    # The runner logged the jobs it handed back (ids and workers) just before.
    log.warning(
        "stopped after the %s s grace period: the jobs still running were handed back as "
        "interrupted by shutdown, due again with their attempt not counted",
        f"{grace:g}",
    )
    # Threads of jobs that outlived the grace period would keep the interpreter alive.
    _hard_exit(0)


def _hard_exit(code: int) -> NoReturn:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@cli.command("jobs")
@store_options
@click.option(
    "--state",
    type=click.Choice([s.value for s in JobState] + list(SHORT_STATES.values())),
    help="Only this state (or its column heading in `kathikon stats`, e.g. done).",
)
@click.option("--queue", help="Only this queue.")
@click.option("--worker", "worker_name", metavar="NAME", help="Only this worker (its name).")
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many."
)
@click.option(
    "--after", type=click.IntRange(min=0), metavar="ID", help="Only ids above this (paging)."
)
@json_option
def jobs_command(
    app_spec: Optional[str],
    path: Optional[str],
    state: Optional[str],
    queue: Optional[str],
    worker_name: Optional[str],
    limit: int,
    after: Optional[int],
    as_json: bool,
) -> None:
    """List jobs, oldest id first."""
    state = _STATE_OF_HEADING.get(state, state) if state is not None else None
    with opened(app_spec, path) as app:
        found = app.jobs(state=state, queue=queue, worker=worker_name, limit=limit, after=after)
    if as_json:
        emit_json([job_to_dict(j) for j in found])
        return
    console = _stdout()
    if not found:
        console.print("no jobs match", style="dim")
        return
    console.print(_jobs_table(found, console.width))
    if len(found) == limit:
        console.print(
            f"(the first {limit}; see more with --limit or --after {found[-1].id})", style="dim"
        )


def _jobs_table(found: list[Job], width: int) -> Table:
    """The ``kathikon jobs`` table; ARGS and LAST ERROR get the room the others leave."""
    from rich.table import Table
    from rich.text import Text

    headers = ["ID", "STATE", "QUEUE", "WORKER", "ATTEMPT", "PRI", "SCHEDULED (UTC)"]
    rows = [
        [
            str(j.id),
            j.state.value,
            j.queue,
            j.worker,
            f"{j.attempt}/{j.max_attempts}",
            str(j.priority),
            _when(j.scheduled_at),
        ]
        for j in found
    ]
    used = sum(max(len(c) for c in column) + 2 for column in zip(headers, *rows))
    room = width - used - 2  # two more columns, two spaces apart
    table = Table(header_style="bold", box=None, pad_edge=False)
    for i, header in enumerate(headers):
        table.add_column(header, justify="right" if i in (0, 4, 5) else "left", no_wrap=i != 3)
    if room >= 24:
        args_width = min(40, max(10, room * 2 // 5))
        table.add_column("ARGS", overflow="ellipsis", no_wrap=True, max_width=args_width)
        table.add_column(
            "LAST ERROR", overflow="ellipsis", no_wrap=True, max_width=min(60, room - args_width)
        )
    for j, row in zip(found, rows):
        cells: list[Any] = [row[0], _state(row[1]), *(Text(c) for c in row[2:])]
        if room >= 24:
            cells += [Text(_compact(j.args)), Text(_last_error_line(j), style="red")]
        table.add_row(*cells)
    return table


@cli.command("job")
@click.argument("job_id", metavar="ID", type=int)
@store_options
@json_option
def job_command(app_spec: Optional[str], path: Optional[str], job_id: int, as_json: bool) -> None:
    """Show every field of one job, and its errors with their tracebacks."""
    with opened(app_spec, path) as app:
        job = app.get(job_id)
    if as_json:
        emit_json(job_to_dict(job))
    else:
        _print_job(job)


def _print_job(job: Job) -> None:
    from rich.table import Table
    from rich.text import Text

    console = _stdout()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in job_to_dict(job).items():
        if key == "errors":
            continue
        if key == "state":
            cell: Any = _state(value)
        elif key in ("args", "meta", "tags"):
            cell = Text(json.dumps(value, ensure_ascii=False, indent=2))
        else:
            cell = Text("" if value is None else str(value))
        grid.add_row(key, cell)
    grid.add_row("errors", str(len(job.errors)))
    console.print(grid)
    for entry in job.errors:
        console.print()
        console.print(
            f"error of attempt {entry['attempt']} at {_iso(entry['at'])}:", style="bold red"
        )
        console.print(Text(entry["error"].rstrip("\n")), soft_wrap=True)


def _apply(
    ids: Sequence[int], action: Callable[[int], Job], verb: str, as_json: bool, app: Kathikon
) -> int:
    """Run ``action`` on each id; print the outcomes; return the exit status."""
    ids = list(dict.fromkeys(ids))
    results: list[dict[str, Any]] = []
    with progress(f"{verb} jobs", total=len(ids)) as advance:
        for job_id in ids:
            try:
                before = app.get(job_id).state.value
                job = action(job_id)
                results.append({"id": job_id, "ok": True, "before": before, "job": job})
            except (JobNotFoundError, JobStateError) as e:
                error_line(str(e))  # these name the job already
                results.append(
                    {"id": job_id, "ok": False, "error": str(e), "type": type(e).__name__}
                )
            except KathikonError as e:
                error_line(f"job {job_id}: {e}")
                results.append(
                    {"id": job_id, "ok": False, "error": str(e), "type": type(e).__name__}
                )
            advance()
    if as_json:
        emit_json([{**r, "job": job_to_dict(r["job"])} if r["ok"] else r for r in results])
    else:
        _print_changes([(r["job"], r["before"]) for r in results if r["ok"]])
    return 0 if all(r["ok"] for r in results) else 1


def _print_changes(changes: list[tuple[Job, str]]) -> None:
    from rich.text import Text

    console = _stdout()
    for job, before in changes:
        line = Text(f"job {job.id}: ").append_text(_state(before))
        if job.state.value == before:
            line.append(" (unchanged)", style="dim")
        else:
            line.append(" → ").append_text(_state(job.state.value))
        console.print(line)


@cli.command("retry")
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True, type=int)
@store_options
@json_option
@click.pass_context
def retry_command(
    ctx: click.Context,
    app_spec: Optional[str],
    path: Optional[str],
    job_ids: tuple[int, ...],
    as_json: bool,
) -> None:
    """Make jobs available to run now (one more attempt if they had used them all).

    Executing jobs are refused. Every id is tried; the status is 1 if any failed.
    """
    with opened(app_spec, path) as app:
        code = _apply(job_ids, app.retry, "retrying", as_json, app)
    ctx.exit(code)


@cli.command("cancel")
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True, type=int)
@store_options
@json_option
@click.pass_context
def cancel_command(
    ctx: click.Context,
    app_spec: Optional[str],
    path: Optional[str],
    job_ids: tuple[int, ...],
    as_json: bool,
) -> None:
    """Cancel scheduled, available, retryable or executing jobs (finished jobs are left
    unchanged). Every id is tried; the status is 1 if any failed."""
    with opened(app_spec, path) as app:
        code = _apply(job_ids, app.cancel, "cancelling", as_json, app)
    ctx.exit(code)


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
            from .cli_watch import watch as watch_every

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
            _stdout().print(
                f"{len(quarantined)} damaged job record(s) quarantined (ids "
                f"{', '.join(str(r['id']) for r in quarantined[:20])}); "
                "`kathikon stats --json` lists why",
                style="bold red",
            )
        return
    emit_json(
        {
            "now": _iso(now),
            "quarantined": [
                {"id": r["id"], "quarantined_at": _iso(r["quarantined_at"]), "reason": r["reason"]}
                for r in quarantined
            ],
            "queues": {
                q: {
                    "states": c,
                    "total": sum(c.values()),
                    "oldest_available_at": _iso(oldest[q]),
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

    console = _stdout()
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
            "" if age is None else _age(age),
        )
    console.print(table)
    # A queue with available jobs and no worker: those jobs would wait forever unseen.
    for check in checks.values():
        if check.available and not check.served:
            console.print(f"queue {check.queue}: {check.summary}", style="bold red")


@cli.command("prune")
@store_options
@click.option(
    "--older-than",
    callback=parse_duration,
    default="0",
    show_default=True,
    metavar="DURATION",
    help="Delete finished jobs that finished longer ago than this: seconds, or e.g. 15m, 2h, "
    "7d. 0 deletes every completed, cancelled and discarded job.",
)
@json_option
def prune_command(
    app_spec: Optional[str], path: Optional[str], older_than: float, as_json: bool
) -> None:
    """Delete finished (completed, cancelled, discarded) jobs."""
    with opened(app_spec, path) as app:
        with progress("pruning finished jobs", total=None):
            pruned = app.prune(older_than)
        if as_json:
            emit_json({"pruned": pruned, "older_than": older_than})
        else:
            _stdout().print(f"pruned {pruned} finished job{'' if pruned == 1 else 's'}")


# -- entry point ----------------------------------------------------------------------------


def run(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status.
    Every error becomes one line on stderr."""
    try:
        result = cli.main(args=argv, prog_name="kathikon", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.UsageError as e:
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        error_line(e.format_message() + hint)
        return e.exit_code
    except click.ClickException as e:
        error_line(e.format_message())
        return e.exit_code
    except click.Abort:
        error_line("interrupted")
        return 130
    except CliError as e:
        if e.cause is not None and os.environ.get("KATHIKON_DEBUG"):
            traceback.print_exception(type(e.cause), e.cause, e.cause.__traceback__)
        error_line(str(e))
        return e.code
    except KathikonError as e:
        error_line(str(e))
        return 1
    except Exception as e:
        if os.environ.get("KATHIKON_DEBUG"):
            raise
        error_line(
            f"unexpected {_describe(e)} (a bug in kathikon; set KATHIKON_DEBUG=1 to see "
            "the traceback)"
        )
        return 1


def _add_commands() -> None:
    # Imported here, after the helpers they use are defined. The benchmark module is not
    # imported by the other commands' modules, so they do not pay for it.
    from .bench.command import bench_command
    from .cli_insert import insert_command

    cli.add_command(insert_command)
    cli.add_command(bench_command)


def main() -> NoReturn:
    """The ``kathikon`` console script."""
    sys.exit(run())


if __name__ == "__main__":
    # Run as `python -m kathikon.cli`: this copy of the module is `__main__`, while the
    # command modules add their commands to the group of `kathikon.cli`; run that one.
    from kathikon.cli import main as _main

    _main()
else:
    _add_commands()
