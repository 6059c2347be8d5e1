"""Unique jobs: :class:`Unique` says when an insert must return an existing job instead of
storing a new one, and ``replace=`` what such an insert overwrites on the job it found.

The check itself runs in the core, inside the writer's transaction (see
``rust/kathikon-core/src/unique.rs``), so it is exact for threads, worker processes and a
takeover of the store. This module only checks and encodes what the caller declared.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Optional, Union

from .errors import ConfigurationError, InvalidJobError
from .options import shown
from .vocabulary import JOB_STATES

#: What a key may be made of.
FIELDS = ("worker", "queue", "args", "meta")

#: What a conflicting insert may overwrite on the job it found (while that job is still
#: scheduled, available or retryable).
REPLACEABLE = ("args", "meta", "tags", "priority", "queue", "scheduled_at", "max_attempts")

_INCOMPLETE = frozenset({"scheduled", "available", "executing", "retryable"})

#: The native form of a unique spec: (fields, keys, period in µs or None, states, replace).
NativeUnique = tuple[list[str], list[str], Optional[int], list[str], list[str]]


def _names(value: Any, what: str, allowed: Iterable[str], example: str) -> tuple[str, ...]:
    """``value`` as a tuple of names among ``allowed``, refusing anything else by name."""
    allowed = tuple(allowed)
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(
            f"Unique {what}={shown(value)} must be a tuple of names, e.g. {what}={example}"
        )
    names = tuple(value)
    for name in names:
        if not isinstance(name, str) or str(name) not in allowed:
            raise ConfigurationError(
                f"Unique {what} has {shown(name)}, which is not one of {', '.join(allowed)}"
            )
    return tuple(str(name) for name in names)


@dataclass(frozen=True)
class Unique:
    """How a job is unique: an insert while a job with the same key exists (in one of
    ``states``, inserted less than ``period`` seconds ago) returns that job, with
    ``job.conflict`` set, and stores nothing.

    Args:
        period: seconds (or a timedelta) during which a job holds its key after its insert;
            ``None`` for as long as it exists. Defaults to 60, as in Oban.
        fields: what the key is made of, among ``"worker"``, ``"queue"``, ``"args"`` and
            ``"meta"``. Defaults to worker, queue and args.
        keys: compare only these keys of args (and meta); all of them when empty.
        states: the states in which a job holds its key: job state names or
            :class:`~kathikon.JobState` members. Defaults to every state a job can still run
            in plus completed (:attr:`Unique.INCOMPLETE` and ``"completed"``).

    Raises:
        ConfigurationError: a value is unusable (an unknown field or state, a negative period,
            keys that are not strings), naming it.
    """

    # Normalised by __post_init__: period to float seconds (or None), fields and keys to
    # tuples, states to a frozenset of state names.
    period: Union[float, timedelta, None] = 60.0
    fields: Sequence[str] = ("worker", "queue", "args")
    keys: Sequence[str] = ()
    states: Iterable[str] = _INCOMPLETE | {"completed"}

    #: Every state in which a job may still run: scheduled, available, executing, retryable.
    INCOMPLETE: ClassVar[frozenset[str]] = _INCOMPLETE
    #: Every state: a job holds its key for as long as it exists (within the period).
    ALL: ClassVar[frozenset[str]] = frozenset(JOB_STATES)

    def __post_init__(self) -> None:
        object.__setattr__(self, "period", _period(self.period))
        fields = _names(self.fields, "fields", FIELDS, '("worker", "args")')
        if not fields:
            raise ConfigurationError(
                f"Unique fields=() makes every job the same; name some of {', '.join(FIELDS)}"
            )
        object.__setattr__(self, "fields", fields)
        keys = self.keys
        if isinstance(keys, str) or not isinstance(keys, Iterable):
            raise ConfigurationError(
                f"Unique keys={shown(keys)} must be a tuple of strings, e.g. keys=({keys!r},)"
                if isinstance(keys, str)
                else f"Unique keys={shown(keys)} must be a tuple of strings"
            )
        keys = tuple(keys)
        for key in keys:
            if not isinstance(key, str):
                raise ConfigurationError(
                    f"Unique keys has {shown(key)} ({type(key).__name__}); keys are the "
                    "strings args and meta are keyed by"
                )
        if keys and not {"args", "meta"} & set(fields):
            raise ConfigurationError(
                f"Unique keys={keys!r} restrict args and meta, but fields={fields!r} names "
                'neither; add "args" to fields, or drop keys'
            )
        object.__setattr__(self, "keys", keys)
        states = frozenset(_names(self.states, "states", JOB_STATES, "Unique.INCOMPLETE"))
        if not states:
            raise ConfigurationError(
                "Unique states is empty, so no job would ever hold its key; pass e.g. "
                "states=Unique.INCOMPLETE"
            )
        object.__setattr__(self, "states", states)

    def native(self, replace: tuple[str, ...] = ()) -> NativeUnique:
        """The spec as the core takes it, with the fields a conflict overwrites."""
        seconds = _period(self.period)
        period = None if seconds is None else round(seconds * 1_000_000)
        return (list(self.fields), list(self.keys), period, sorted(self.states), list(replace))


def _period(period: Any) -> Optional[float]:
    if period is None:
        return None
    if isinstance(period, timedelta):
        period = period.total_seconds()
    if isinstance(period, bool) or not isinstance(period, (int, float)) or math.isnan(period):
        raise ConfigurationError(
            f"Unique period={shown(period)} must be seconds (or a timedelta), or None for as "
            "long as the job exists"
        )
    if math.isinf(period):
        raise ConfigurationError(
            f"Unique period={period!r}: pass None for as long as the job exists"
        )
    if period <= 0:
        raise ConfigurationError(
            f"Unique period={period!r} must be above 0 seconds, or None for as long as the job "
            "exists"
        )
    return float(period)


def check_unique(unique: Any, where: str) -> Optional[Unique]:
    """``unique=`` as given to a worker or an insert: a :class:`Unique` or ``None``."""
    if unique is None or isinstance(unique, Unique):
        return unique
    raise ConfigurationError(
        f"{where}: unique={shown(unique)} must be a kathikon.Unique, e.g. "
        "unique=kathikon.Unique(period=300)"
    )


def check_replace(replace: Any) -> tuple[str, ...]:
    """``replace=`` as given to an insert: names among :data:`REPLACEABLE`."""
    if replace is None:
        return ()
    if isinstance(replace, str) or not isinstance(replace, Iterable):
        raise InvalidJobError(
            f"replace={shown(replace)} must be a tuple of field names, e.g. "
            'replace=("scheduled_at",)'
        )
    names = tuple(replace)
    for name in names:
        if not isinstance(name, str) or name not in REPLACEABLE:
            raise InvalidJobError(
                f"replace has {shown(name)}, which is not a field a conflicting insert can "
                f"replace; pick among {', '.join(REPLACEABLE)}"
            )
    return names


def native_unique(
    unique: Optional[Unique], replace: Union[tuple[str, ...], None]
) -> Optional[NativeUnique]:
    """The core's spec for an insert with ``unique`` (or the worker's) and ``replace``."""
    if unique is None:
        if replace:
            raise InvalidJobError(
                f"replace={replace!r} applies to the job a unique insert finds, but this "
                "insert is not unique; pass unique=kathikon.Unique(...) or declare it on the "
                "worker"
            )
        return None
    return unique.native(replace or ())


__all__ = ["FIELDS", "REPLACEABLE", "Unique", "check_replace", "check_unique", "native_unique"]
