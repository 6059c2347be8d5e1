"""Bulk actions by filter: ``kathikon cancel/retry --state ... --queue ...`` (the id-less
forms of those commands, see ``manage.py``) and ``kathikon delete``."""

from __future__ import annotations

from typing import Any, Optional

import click

from .base import CliError, cli, emit_json, json_option, stdout_console, store_options
from .filters import filter_options, filter_values
from .load import opened

_DONE = {"cancel": "cancelled", "retry": "retried", "delete": "deleted"}


def run_bulk(
    action: str,
    app_spec: Optional[str],
    path: Optional[str],
    every: bool,
    as_json: bool,
    params: dict[str, Any],
    force: bool = False,
) -> None:
    """Apply ``action`` to the jobs the filter options in ``params`` select; print how many."""
    filters = filter_values(params)
    if not filters and not every:
        raise CliError(
            f"{action} what? name job ids, or filters (--state, --queue, --tag, --args, ...), "
            "or --all for every job"
        )
    if filters and every:
        raise CliError("--all selects every job; leave out the filters, or --all")
    with opened(app_spec, path) as app:
        if action == "cancel":
            count = app.cancel_jobs(**filters)
        elif action == "retry":
            count = app.retry_jobs(**filters)
        else:
            count = app.delete_jobs(force=force, **filters)
    if as_json:
        emit_json({"action": action, "count": count, "filters": _shown(filters)})
    else:
        stdout_console().print(f"{_DONE[action]} {count} job{'' if count == 1 else 's'}")


def _shown(filters: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in filters.items()}


def all_option(f: Any) -> Any:
    return click.option("--all", "every", is_flag=True, help="Every job (with no filter).")(f)


@cli.command("delete")
@store_options
@filter_options
@all_option
@click.option("--force", is_flag=True, help="Also delete jobs that are not finished.")
@json_option
def delete_command(
    app_spec: Optional[str],
    path: Optional[str],
    every: bool,
    force: bool,
    as_json: bool,
    **params: Any,
) -> None:
    """Delete the finished (completed, cancelled, discarded) jobs matching every filter
    given; with --force, jobs in any state. Prints how many."""
    run_bulk("delete", app_spec, path, every, as_json, params, force=force)
