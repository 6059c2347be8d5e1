"""The commands that look at and change jobs: ``jobs``, ``job``, ``batch``, ``retry``,
``cancel`` and ``prune``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

import click

from ..app import Kathikon
from ..errors import JobNotFoundError, JobStateError, KathikonError
from ..job import Job
from ..progress import Progress
from .base import (
    CliError,
    cli,
    compact,
    emit_json,
    error_line,
    iso,
    job_to_dict,
    json_option,
    last_error_line,
    parse_duration,
    progress,
    stdout_console,
    store_options,
    styled_state,
    when,
)
from .bulk import all_option, run_bulk
from .filters import filter_options, filter_values
from .load import opened
from .process_list import progress_text, progress_to_dict

if TYPE_CHECKING:
    from rich.table import Table


@cli.command("jobs")
@store_options
@filter_options
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many."
)
@click.option(
    "--order",
    type=click.Choice(["asc", "desc"]),
    default="asc",
    show_default=True,
    help="Oldest (asc) or newest (desc) id first.",
)
@click.option("--cursor", help="Continue from the page that printed this cursor.")
@click.option(
    "--after", type=click.IntRange(min=0), metavar="ID", help="Only ids above this (paging)."
)
@json_option
def jobs_command(
    app_spec: Optional[str],
    path: Optional[str],
    limit: int,
    order: str,
    cursor: Optional[str],
    after: Optional[int],
    as_json: bool,
    **params: Any,
) -> None:
    """List jobs matching every filter given, oldest id first (--order desc: newest).

    A page that has a next one ends with its cursor (on stderr with --json, whose output
    stays a list of jobs): pass it as --cursor to continue.
    """
    filters = filter_values(params)
    with opened(app_spec, path) as app:
        found = app.jobs(
            limit=limit,
            after=after,
            order=order,  # type: ignore[arg-type]  # click.Choice checked it
            cursor=cursor,
            **filters,
        )
    if as_json:
        emit_json([job_to_dict(j) for j in found])
        if found.cursor is not None:
            click.echo(f"next page: --cursor {found.cursor}", err=True)
        return
    console = stdout_console()
    if not found:
        console.print("no jobs match", style="dim")
        return
    console.print(_jobs_table(found, console.width))
    if found.cursor is not None:
        hint = f" or --after {found[-1].id}" if order == "asc" else ""
        console.print(
            f"(the first {limit}; next page: --cursor {found.cursor}{hint})",
            style="dim",
            soft_wrap=True,
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
            when(j.scheduled_at),
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
        cells: list[Any] = [row[0], styled_state(row[1]), *(Text(c) for c in row[2:])]
        if room >= 24:
            cells += [Text(compact(j.args)), Text(last_error_line(j), style="red")]
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
        reported = app.progress(job_id)
    if as_json:
        emit_json({**job_to_dict(job), "progress": progress_to_dict(reported)})
    else:
        _print_job(job, reported)


@cli.command("batch")
@click.argument("batch_id", metavar="ID")
@store_options
@json_option
def batch_command(
    app_spec: Optional[str], path: Optional[str], batch_id: str, as_json: bool
) -> None:
    """Show one batch: its jobs per state, whether it finished, and its callback jobs."""
    with opened(app_spec, path) as app:
        status = app.batch(batch_id)
    data = {
        "id": status.id,
        "total": status.total,
        "pending": status.pending,
        "counts": status.counts,
        "created_at": iso(status.created_at),
        "finished_at": iso(status.finished_at),
        "callbacks": status.callbacks,
    }
    if as_json:
        emit_json(data)
        return
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("id", Text(status.id))
    done = status.total - status.pending
    grid.add_row("jobs", Text(f"{done} of {status.total} finished"))
    for state, n in status.counts.items():
        if n:
            grid.add_row("", Text.assemble(styled_state(state), f" {n}"))
    grid.add_row("created", Text(when(status.created_at)))
    grid.add_row(
        "finished", Text("not yet" if status.finished_at is None else when(status.finished_at))
    )
    for event, job_id in status.callbacks.items():
        grid.add_row(f"on_{event}", Text("not inserted" if job_id is None else f"job {job_id}"))
    stdout_console().print(grid)


def _print_job(job: Job, reported: Optional[Progress] = None) -> None:
    from rich.table import Table
    from rich.text import Text

    console = stdout_console()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in job_to_dict(job).items():
        if key == "errors":
            continue
        if key == "state":
            cell: Any = styled_state(value)
        elif key in ("args", "meta", "tags") or (key == "result" and value is not None):
            cell = Text(json.dumps(value, ensure_ascii=False, indent=2))
        else:
            cell = Text("" if value is None else str(value))
        grid.add_row(key, cell)
    grid.add_row("progress", Text("" if reported is None else progress_text(reported)))
    grid.add_row("errors", str(len(job.errors)))
    console.print(grid)
    for entry in job.errors:
        console.print()
        console.print(
            f"error of attempt {entry['attempt']} at {iso(entry['at'])}:", style="bold red"
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

    console = stdout_console()
    for job, before in changes:
        line = Text(f"job {job.id}: ").append_text(styled_state(before))
        if job.state.value == before:
            line.append(" (unchanged)", style="dim")
        else:
            line.append(" → ").append_text(styled_state(job.state.value))
        console.print(line)


@cli.command("retry")
@click.argument("job_ids", metavar="[ID]...", nargs=-1, type=int)
@store_options
@filter_options
@all_option
@json_option
@click.pass_context
def retry_command(
    ctx: click.Context,
    /,
    app_spec: Optional[str],
    path: Optional[str],
    job_ids: tuple[int, ...],
    every: bool,
    as_json: bool,
    **params: Any,
) -> None:
    """Make jobs available to run now (one more attempt if they had used them all).

    Executing jobs are refused. Every id is tried; the status is 1 if any failed. Without
    ids, every job the filters select (or --all) is retried in bulk, executing and available
    ones left alone, and the count printed.
    """
    if not job_ids:
        run_bulk("retry", app_spec, path, every, as_json, params)
        return
    if every or filter_values(params):
        raise CliError("name job ids or filters (or --all), not both")
    with opened(app_spec, path) as app:
        code = _apply(job_ids, app.retry, "retrying", as_json, app)
    ctx.exit(code)


@cli.command("cancel")
@click.argument("job_ids", metavar="[ID]...", nargs=-1, type=int)
@store_options
@filter_options
@all_option
@json_option
@click.pass_context
def cancel_command(
    ctx: click.Context,
    /,
    app_spec: Optional[str],
    path: Optional[str],
    job_ids: tuple[int, ...],
    every: bool,
    as_json: bool,
    **params: Any,
) -> None:
    """Cancel scheduled, available, retryable or executing jobs (finished jobs are left
    unchanged). Every id is tried; the status is 1 if any failed. Without ids, every job the
    filters select (or --all) is cancelled in bulk, and the count printed."""
    if not job_ids:
        run_bulk("cancel", app_spec, path, every, as_json, params)
        return
    if every or filter_values(params):
        raise CliError("name job ids or filters (or --all), not both")
    with opened(app_spec, path) as app:
        code = _apply(job_ids, app.cancel, "cancelling", as_json, app)
    ctx.exit(code)


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
            stdout_console().print(f"pruned {pruned} finished job{'' if pruned == 1 else 's'}")
