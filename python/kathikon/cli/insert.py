"""``kathikon insert``: enqueue one job from the shell, as ``celery call`` or ``rq enqueue`` do.

The app is imported as ``kathikon worker`` imports it, so the worker is named as the app
registered it and the job is checked by the same rules as ``app.insert``: a name no worker of
the app registered is refused (a worker process of this app could not run it), and so is a
queue the app does not configure. While a worker runs, the job goes to its store through the
worker's socket. Every refusal is a usage error (status 2), and nothing is stored.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import click

from ..errors import InvalidJobError, StorageLockedError, UnknownWorkerError
from ..testing_mode import ENV as TESTING_ENV
from ..vocabulary import MAX_PRIORITY
from .base import (
    HELD_WHILE_INSPECTING,
    CliError,
    emit_json,
    job_to_dict,
    json_option,
    parse_duration,
)
from .load import load_app

#: What JSON calls the values ``json.loads`` returns, for a message about the wrong one.
_JSON_KINDS: dict[type, str] = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _json_object(name: str, value: Optional[str]) -> Optional[dict[str, Any]]:
    """``value`` parsed as a JSON object, or a usage error naming ``name`` and the fix."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise click.BadParameter(
            f"{value!r} is not JSON ({e.msg} at character {e.pos + 1}); pass an object in "
            f'single quotes, e.g. {name} \'{{"to": "ann@example.com"}}\'',
            param_hint=name,
        ) from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(
            f"{value!r} is a JSON {_JSON_KINDS.get(type(parsed), 'value')}, not an object; "
            "pass e.g. "
            f'{name} \'{{"to": "ann@example.com"}}\'',
            param_hint=name,
        )
    return parsed


def _args(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Any:
    return _json_object("--args", value)


def _meta(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Any:
    return _json_object("--meta", value)


def _duration(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Any:
    return None if value is None else parse_duration(ctx, param, value)


def _tags(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Any:
    if value is None:
        return None
    tags = [t.strip() for t in value.split(",")]
    if not all(tags):
        raise click.BadParameter(
            f"{value!r} has an empty tag; pass names separated by commas, e.g. billing,urgent",
            ctx,
            param,
        )
    return tags


def _in_memory(app_spec: str, testing: Optional[str]) -> str:
    """Why a job cannot be inserted into an app whose jobs live in this process's memory."""
    if testing is None:
        why, fix = "path=None", "give it a path=, or insert from the code that runs it"
    elif os.environ.get(TESTING_ENV):
        why, fix = f"{TESTING_ENV}={testing}", f"unset {TESTING_ENV} for this command"
    else:
        why, fix = f"testing={testing!r}", "create it without testing= outside tests"
    return (
        f"the app {app_spec} keeps its jobs in memory ({why}): a job inserted from here "
        f"would be lost when this command exits; {fix}"
    )


@click.command("insert")
@click.argument("app_spec", metavar="MODULE:APP")
@click.argument("worker_name", metavar="WORKER")
@click.option(
    "--args",
    "args",
    metavar="JSON",
    callback=_args,
    help='The job\'s args, a JSON object, e.g. \'{"to": "ann@example.com"}\'. Default: {}.',
)
@click.option("--queue", metavar="QUEUE", help="The queue (default: the worker's queue).")
@click.option(
    "--priority",
    type=click.IntRange(0, MAX_PRIORITY),
    metavar="N",
    help=f"0 (runs first) … {MAX_PRIORITY} (default: the worker's priority).",
)
@click.option(
    "--schedule-in",
    metavar="DURATION",
    callback=_duration,
    help="Run it this long from now, not at once: seconds, or e.g. 90s, 15m, 2h, 7d.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    metavar="N",
    help="Attempts before the job is discarded (default: the worker's, then the app's).",
)
@click.option("--tags", metavar="A,B", callback=_tags, help="Labels, comma-separated.")
@click.option("--meta", metavar="JSON", callback=_meta, help="A JSON object kept with the job.")
@json_option
def insert_command(
    app_spec: str,
    worker_name: str,
    args: Optional[dict[str, Any]],
    queue: Optional[str],
    priority: Optional[int],
    schedule_in: Optional[float],
    max_attempts: Optional[int],
    tags: Optional[list[str]],
    meta: Optional[dict[str, Any]],
    as_json: bool,
) -> None:
    """Insert a job for the worker named WORKER (its registered name) of the app MODULE:APP;
    print its id (or, with --json, the whole job).

    \b
    kathikon insert myapp.jobs:app myapp.jobs.send_email --args '{"to": "ann@example.com"}'
    kathikon insert myapp.jobs:app myapp.jobs.cleanup --schedule-in 1h --priority 5
    """
    try:
        app = load_app(app_spec)
    except StorageLockedError as e:
        raise CliError(f"{e} ({HELD_WHILE_INSPECTING})") from None
    if (app.path is None and app.url is None) or app.testing is not None:
        app.close()
        raise CliError(_in_memory(app_spec, app.testing))
    try:
        job = app.insert(
            worker_name,
            args,
            queue=queue,
            priority=priority,
            schedule_in=schedule_in,
            max_attempts=max_attempts,
            tags=tags,
            meta=meta,
        )
    except UnknownWorkerError:
        registered = ", ".join(sorted(app.workers)) or "none"
        raise click.UsageError(
            f"the app {app_spec} has no worker named {worker_name!r}; its workers: {registered}"
        ) from None
    except InvalidJobError as e:  # a bad queue, args too large, …: the option's value
        raise click.UsageError(str(e)) from None
    finally:
        app.close(timeout=5)
    if as_json:
        emit_json(job_to_dict(job))
    else:
        click.echo(job.id)
