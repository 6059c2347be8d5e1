"""The commands that look at and control queues at runtime: ``queues``, ``pause``,
``resume``, ``scale``, ``start`` and ``stop`` (see :mod:`kathikon.queues`).

Each works on a store whose worker runs (through the owner's socket: the change reaches every
worker process within a second) and on a store no one runs (the change is stored, and
workers started later follow it).
"""

from __future__ import annotations

import json
from typing import Any, Optional

import click
from rich.table import Table
from rich.text import Text

from .. import queues as _queues
from ..app import Kathikon
from ..errors import ConfigurationError, UnknownQueueError
from ..limits import UNSET, describe
from ..queue_check import QueueCheck
from .base import cli, emit_json, json_option, stdout_console, store_options
from .load import opened


def _state(check: QueueCheck) -> str:
    if check.paused:
        return "paused"
    if check.stopped:
        return "stopped"
    return "running" if check.served else "idle"


def _concurrency(check: QueueCheck) -> str:
    return "-" if check.concurrency is None else str(check.concurrency)


@cli.command("queues")
@store_options
@json_option
def queues_command(app_spec: Optional[str], path: Optional[str], as_json: bool) -> None:
    """List every queue with its runtime settings and jobs: those the app declares, those
    changed at runtime, and those holding jobs."""
    with opened(app_spec, path) as app:
        checks = app.queues()
    if as_json:
        emit_json([c.to_dict() for c in checks])
        return
    table = Table(box=None, pad_edge=False)
    for heading in ("queue", "state", "concurrency", "configured", "available", "executing"):
        table.add_column(heading, justify="left" if heading in ("queue", "state") else "right")
    table.add_column("limits")
    table.add_column("served")
    for c in checks:
        configured = "-" if c.configured_concurrency is None else str(c.configured_concurrency)
        table.add_row(
            c.queue,
            _state(c),
            _concurrency(c),
            configured,
            str(c.available),
            str(c.executing),
            Text(
                describe(c.global_limit, c.rate_limit, c.limit_usage)
            ),  # not markup: args[key] is no style
            c.summary,
        )
    stdout_console().print(table)


def _known(app: Kathikon, queue: str) -> None:
    """Refuse a queue the store has never heard of (a typo): not declared by the app, with
    no runtime settings and no jobs."""
    if queue not in {c.queue for c in app.queues()}:
        raise UnknownQueueError(
            f"queue {queue!r} is neither declared by the app, nor started or changed at "
            "runtime, nor holds jobs (see `kathikon queues`); start it with "
            f"`kathikon start {queue} N`"
        )


def _report(app: Kathikon, queue: str, done: str, as_json: bool) -> None:
    check = app.check_queue(queue)
    if as_json:
        emit_json(check.to_dict())
        return
    stdout_console().print(
        f"{queue}: {done}; now {_state(check)}, concurrency {_concurrency(check)} per worker"
    )


def _change(
    app_spec: Optional[str],
    path: Optional[str],
    queue: str,
    what: str,
    concurrency: Optional[int],
    as_json: bool,
) -> None:
    with opened(app_spec, path) as app:
        if what == "start":
            app.start_queue(queue, concurrency)
        else:
            _known(app, queue)
            _queues.change(app, queue, what, concurrency)
        done = {"pause": "paused", "resume": "resumed", "stop": "stopped", "start": "started"}
        _report(app, queue, done.get(what, "scaled"), as_json)


@cli.command("pause")
@click.argument("queue")
@store_options
@json_option
def pause_command(app_spec: Optional[str], path: Optional[str], queue: str, as_json: bool) -> None:
    """Pause QUEUE: no new job of it starts in any process until `kathikon resume`; running
    jobs finish. Stored: it stays paused across restarts."""
    _change(app_spec, path, queue, "pause", None, as_json)


@cli.command("resume")
@click.argument("queue")
@store_options
@json_option
def resume_command(app_spec: Optional[str], path: Optional[str], queue: str, as_json: bool) -> None:
    """Resume a paused QUEUE: idle workers start its jobs at once."""
    _change(app_spec, path, queue, "resume", None, as_json)


def _limit_option(name: str, text: Optional[str]) -> Any:
    """A ``--global-limit``/``--rate-limit`` value: ``none``, an int, or a JSON object."""
    if text is None:
        return UNSET
    if text.strip().lower() == "none":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ConfigurationError(
            f"--{name} {text!r} is not JSON; pass none, a number, or an object such as "
            '\'{"allowed": 100, "period": 60}\''
        ) from None


@cli.command("scale")
@click.argument("queue")
@click.argument(
    "concurrency", metavar="N", type=click.IntRange(min=1, max=2**32 - 1), required=False
)
@click.option(
    "--global-limit",
    metavar="LIMIT",
    help="At most this many of its jobs running at once over the store: N, JSON such as "
    '\'{"allowed": 1, "partition": {"fields": ["args"], "keys": ["customer"]}}\', or none.',
)
@click.option(
    "--rate-limit",
    metavar="LIMIT",
    help="At most this many starts per sliding period over the store: JSON such as "
    '\'{"allowed": 100, "period": 60}\', or none.',
)
@store_options
@json_option
def scale_command(
    app_spec: Optional[str],
    path: Optional[str],
    queue: str,
    concurrency: Optional[int],
    global_limit: Optional[str],
    rate_limit: Optional[str],
    as_json: bool,
) -> None:
    """Run QUEUE at concurrency N in every worker, within a second; without N (and without a
    limit), back to each worker's configured concurrency. --global-limit and --rate-limit set
    the queue's limits over every process of the store (a limit left out stays)."""
    limits = {
        "global_limit": _limit_option("global-limit", global_limit),
        "rate_limit": _limit_option("rate-limit", rate_limit),
    }
    if all(v is UNSET for v in limits.values()):
        _change(app_spec, path, queue, "scale", concurrency, as_json)
        return
    with opened(app_spec, path) as app:
        _known(app, queue)
        app.scale_queue(queue, UNSET if concurrency is None else concurrency, **limits)
        _report(app, queue, "scaled", as_json)


@cli.command("start")
@click.argument("queue")
@click.argument(
    "concurrency", metavar="N", type=click.IntRange(min=1, max=2**32 - 1), required=False
)
@store_options
@json_option
def start_command(
    app_spec: Optional[str],
    path: Optional[str],
    queue: str,
    concurrency: Optional[int],
    as_json: bool,
) -> None:
    """Run QUEUE in every worker at concurrency N (a queue no app declares may then be
    inserted into), or run a stopped QUEUE again (N may be left out)."""
    _change(app_spec, path, queue, "start", concurrency, as_json)


@cli.command("stop")
@click.argument("queue")
@store_options
@json_option
def stop_command(app_spec: Optional[str], path: Optional[str], queue: str, as_json: bool) -> None:
    """Stop running QUEUE in every worker (running jobs finish); its jobs stay stored and
    `kathikon start QUEUE` runs it again."""
    _change(app_spec, path, queue, "stop", None, as_json)
