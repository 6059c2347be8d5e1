"""The job filter options shared by ``kathikon jobs`` and the bulk forms of ``cancel``,
``retry`` and ``delete``, turned into ``app.jobs``'s keyword arguments (which check them)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable, Optional, TypeVar, Union

import click

from ..job import JobState
from .base import SHORT_STATES, STATE_OF_HEADING, CliError

F = TypeVar("F", bound=Callable[..., Any])

_TIMES = ("inserted", "scheduled", "finished")


def _time(value: str, name: str) -> Union[datetime, float]:
    """ISO 8601 (a time without a zone is UTC) or epoch seconds."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(
            f"--{name} {value!r} is not a time; pass ISO 8601 (2026-12-07T10:00:00+00:00, "
            "UTC when no zone is given) or epoch seconds"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def _json(value: Optional[str], name: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as e:
        raise CliError(
            f"--{name} {value!r} is not JSON ({e}); pass an object, e.g. '{{\"user_id\": 7}}'"
        ) from None


def filter_options(f: F) -> F:
    """Add the filter options to a command; it receives them as ``filter_values``."""
    options = [
        click.option(
            "--state",
            "states",
            multiple=True,
            type=click.Choice([s.value for s in JobState] + list(SHORT_STATES.values())),
            help="Only this state (repeat for any of several; a `kathikon stats` heading "
            "such as done works too).",
        ),
        click.option("--queue", help="Only this queue."),
        click.option("--worker", "worker_name", metavar="NAME", help="Only this worker."),
        click.option("--tag", "tags", multiple=True, help="Only jobs with this tag (repeat: all)."),
        click.option(
            "--args", "args_json", metavar="JSON", help="Only jobs whose args contain it."
        ),
        click.option(
            "--meta", "meta_json", metavar="JSON", help="Only jobs whose meta contains it."
        ),
    ]
    for what in _TIMES:
        for side, word in (("after", "at or after"), ("before", "before")):
            options.append(
                click.option(
                    f"--{what}-{side}",
                    f"{what}_{side}",
                    metavar="TIME",
                    help=f"Only jobs {what} {word} TIME (ISO 8601 or epoch seconds).",
                )
            )
    for option in reversed(options):
        f = option(f)
    return f


def filter_values(params: dict[str, Any]) -> dict[str, Any]:
    """Pop the filter options from a command's ``params``; return ``app.jobs`` filters for
    the ones given."""
    out: dict[str, Any] = {}
    states = params.pop("states")
    if states:
        out["state"] = [STATE_OF_HEADING.get(s, s) for s in states]
    for key, name in (("queue", "queue"), ("worker_name", "worker")):
        value = params.pop(key)
        if value is not None:
            out[name] = value
    tags = params.pop("tags")
    if tags:
        out["tags"] = list(tags)
    for key, name in (("args_json", "args"), ("meta_json", "meta")):
        value = _json(params.pop(key), name)
        if value is not None:
            out[name] = value
    for what in _TIMES:
        for side in ("after", "before"):
            value = params.pop(f"{what}_{side}")
            if value is not None:
                out[f"{what}_{side}"] = _time(value, f"{what}-{side}")
    return out
