"""The app's settings, checked once at construction."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from .errors import ConfigurationError
from .job import TERMINAL_STATES, JobState
from .limits import Declared, declared
from .options import not_utf8
from .results import DEFAULT_MAX_RESULT_BYTES, check_max_result_bytes
from .vocabulary import DURABILITIES, FSYNC, NO_FSYNC

QueueSpec = Union[int, Mapping[str, Any]]

DEFAULT_QUEUES: dict[str, QueueSpec] = {"default": 10}

#: How long a finished job is kept, in seconds, unless ``retention_period`` says otherwise.
DEFAULT_RETENTION = 7 * 86_400.0

#: ``retention_period``: seconds for every finished state, or finished state → seconds.
Retention = Union[float, dict[str, float]]


@dataclass(frozen=True)
class Config:
    """Every setting of a :class:`~kathikon.Kathikon` app, with its default.

    Attributes:
        queues: queue name → concurrency (jobs of that queue running at once).
        limits: queue name → the ``global_limit`` / ``rate_limit`` its settings declare (only
            queues that declare one), applied to the store when the app opens it.
        max_attempts: default attempts per job before it is discarded.
        poll_interval: longest an idle worker waits before looking again (it is normally
            woken at once when a job arrives).
        scheduler_interval: longest the scheduler sleeps (it normally wakes exactly at the
            next due time).
        prune_interval: how often finished jobs past ``retention_period`` are deleted.
        retention_period: how long completed, cancelled and discarded jobs are kept: seconds
            for all three, or a dict of state → seconds naming every one of them (a state
            the app left out has :data:`DEFAULT_RETENTION`).
        max_args_bytes: largest encoded ``args`` (UTF-8 JSON bytes) a job may carry; ``None``
            (the default) for no limit.
        max_result_bytes: largest value a worker's job keeps as its result (UTF-8 JSON
            bytes, 1 MiB by default); a larger one is not kept, and the job's errors say so.
        durability: ``"fsync"`` (each commit reaches the disk before ``insert`` returns) or
            ``"none"`` (faster; a crash loses changes since the last fsync'd commit).
    """

    queues: dict[str, int] = field(default_factory=lambda: {"default": 10})
    limits: dict[str, Declared] = field(default_factory=dict)
    max_attempts: int = 20
    poll_interval: float = 1.0
    scheduler_interval: float = 1.0
    prune_interval: float = 60.0
    retention_period: Retention = DEFAULT_RETENTION
    durability: str = "fsync"
    max_args_bytes: Optional[int] = None
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES


def positive_seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name}={value!r} must be a number of seconds")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(f"{name}={value!r} must be a finite number of seconds above 0")
    return float(value)


def retention(value: Any) -> Retention:
    """``retention_period`` checked: a number of seconds, or a dict naming only finished
    states, completed with :data:`DEFAULT_RETENTION` for the states it leaves out."""
    if not isinstance(value, Mapping):
        return positive_seconds("retention_period", value)
    finished = [state.value for state in JobState if state in TERMINAL_STATES]
    for state in value:
        if state not in finished:
            raise ConfigurationError(
                f"retention_period names {state!r}, which is not a finished state; use "
                f"{', '.join(map(repr, finished))}, e.g. "
                '{"completed": 3600, "discarded": 7 * 86400}'
            )
    return {
        state: positive_seconds(f"retention_period[{state!r}]", value[state])
        if state in value
        else DEFAULT_RETENTION
        for state in finished
    }


#: The settings a queue's dict may hold.
QUEUE_SETTINGS = ("concurrency", "global_limit", "rate_limit")


def parse_concurrency(queue: str, spec: Any) -> int:
    """A queue's concurrency from an int or ``{"concurrency": n, …}``, checked."""
    value = spec.get("concurrency") if isinstance(spec, Mapping) else spec
    if isinstance(spec, Mapping):
        unknown = set(spec) - set(QUEUE_SETTINGS)
        if unknown:
            raise ConfigurationError(
                f"queue {queue!r} has unknown settings {sorted(unknown)}; "
                f"the settings are {', '.join(QUEUE_SETTINGS)}"
            )
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"queue {queue!r} has concurrency {value!r}; pass an int of at least 1, "
            f'e.g. queues={{"{queue}": 10}} or {{"{queue}": {{"concurrency": 10}}}}'
        )
    return value


def _byte_limit(value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ConfigurationError(
            f"max_args_bytes={value!r} must be None (no limit) or an int of at least 2 "
            "(the size of {})"
        )
    return value


def build_config(
    queues: Mapping[str, QueueSpec] | None,
    max_attempts: Any,
    poll_interval: Any,
    scheduler_interval: Any,
    prune_interval: Any,
    retention_period: Any,
    durability: Any,
    max_args_bytes: Any = None,
    max_result_bytes: Any = DEFAULT_MAX_RESULT_BYTES,
) -> Config:
    """Check every setting and return the :class:`Config`."""
    queues = DEFAULT_QUEUES if queues is None else queues
    if not isinstance(queues, Mapping) or not queues:
        raise ConfigurationError(
            f"queues={queues!r} must be a non-empty dict of name → concurrency, "
            'e.g. {"default": 10}'
        )
    parsed: dict[str, int] = {}
    limits: dict[str, Declared] = {}
    for name, spec in queues.items():
        if not isinstance(name, str) or not name or name != name.strip():
            raise ConfigurationError(f"queue name {name!r} must be a non-empty string")
        if not_utf8(name):
            raise ConfigurationError(f"queue name {name!r} holds a lone surrogate; use UTF-8 text")
        parsed[name] = parse_concurrency(name, spec)
        named = declared(name, spec) if isinstance(spec, Mapping) else None
        if named is not None:
            limits[name] = named
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ConfigurationError(f"max_attempts={max_attempts!r} must be an int of at least 1")
    if durability not in DURABILITIES:
        raise ConfigurationError(
            f'durability={durability!r}: use "{FSYNC}" (the default) or "{NO_FSYNC}"'
        )
    return Config(
        queues=parsed,
        limits=limits,
        max_attempts=max_attempts,
        poll_interval=positive_seconds("poll_interval", poll_interval),
        scheduler_interval=positive_seconds("scheduler_interval", scheduler_interval),
        prune_interval=positive_seconds("prune_interval", prune_interval),
        retention_period=retention(retention_period),
        durability=durability,
        max_args_bytes=_byte_limit(max_args_bytes),
        max_result_bytes=check_max_result_bytes(max_result_bytes),
    )
