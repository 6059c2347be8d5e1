"""Queue limits that hold across every process of the store: ``global_limit`` (at most N jobs
of the queue executing at once) and ``rate_limit`` (at most N job starts per sliding period),
each for the whole queue or per partition (by worker and/or chosen args keys).

Declared in the constructor's queue settings, or changed at runtime with
``app.scale_queue(queue, global_limit=..., rate_limit=...)``::

    queues={
        "api": {"concurrency": 10, "global_limit": 20,
                "rate_limit": {"allowed": 100, "period": 60,
                               "partition": {"fields": ["args"], "keys": ["account_id"]}}},
    }

The limits are stored with the queue's settings and enforced by the store's owner where it
decides claims, so they are exact across worker processes and separate ``kathikon worker``
commands, and a restart keeps a rate window's starts. This module checks what users pass and
converts it to and from the engine's JSON form.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, TypedDict, Union

from .errors import ConfigurationError

#: The longest rate-limit period, in seconds (one week).
MAX_PERIOD = 7 * 86_400.0

#: The largest ``allowed`` a limit accepts (the store keeps it as a 32-bit number).
MAX_ALLOWED = 2**32 - 1

#: What a partition may group jobs by.
PARTITION_FIELDS = ("worker", "args")


class Partition(TypedDict):
    """Limit each distinct value of these fields apart."""

    fields: list[str]
    """``"worker"`` and/or ``"args"``."""
    keys: list[str]
    """With ``"args"``: the args keys whose values make the partition (empty: all args)."""


class GlobalLimit(TypedDict):
    """At most ``allowed`` jobs of the queue executing at once over the whole store."""

    allowed: int
    partition: Optional[Partition]


class RateLimit(TypedDict):
    """At most ``allowed`` job starts in any ``period`` seconds over the whole store."""

    allowed: int
    period: float
    partition: Optional[Partition]


class LimitUsage(TypedDict):
    """How much of a queue's limits is in use now, per partition (``""``: a queue limited as a
    whole; a partition by its worker and/or the keys' JSON values, joined by ``", "``)."""

    executing: dict[str, int]
    """Jobs counted against the global limit (claimed and not finished)."""
    window: dict[str, int]
    """Starts within the rate limit's current window."""


class Unset(enum.Enum):
    """The default of ``scale_queue``'s arguments: leave that setting as it is."""

    UNSET = "unset"


UNSET = Unset.UNSET

#: What ``global_limit=`` accepts: an int (``allowed``), a dict, or ``None`` (no limit).
GlobalLimitSpec = Union[int, Mapping[str, Any], None]
#: What ``rate_limit=`` accepts: a dict with ``allowed`` and ``period``, or ``None``.
RateLimitSpec = Union[Mapping[str, Any], None]


def _allowed(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ALLOWED:
        raise ConfigurationError(
            f"{what} allowed={value!r} must be an int from 1 to {MAX_ALLOWED}; to run none of "
            "the queue's jobs, pause it"
        )
    return value


def _partition(what: str, value: Any) -> Optional[Partition]:
    if value is None:
        return None
    example = '{"fields": ["args"], "keys": ["account_id"]}'
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{what} partition={value!r} must be a dict such as {example}")
    unknown = set(value) - {"fields", "keys"}
    if unknown:
        raise ConfigurationError(
            f"{what} partition has unknown settings {sorted(unknown)}; use fields and keys, "
            f"e.g. {example}"
        )
    fields = value.get("fields")
    if (
        isinstance(fields, (str, bytes))
        or not isinstance(fields, Sequence)
        or not fields
        or any(f not in PARTITION_FIELDS for f in fields)
        or len(set(fields)) != len(fields)
    ):
        raise ConfigurationError(
            f'{what} partition fields={fields!r} must be a list naming "worker", "args" or '
            f"both, each once, e.g. {example}"
        )
    keys = value.get("keys", [])
    if (
        isinstance(keys, (str, bytes))
        or not isinstance(keys, Sequence)
        or any(not isinstance(k, str) or not k for k in keys)
    ):
        raise ConfigurationError(
            f"{what} partition keys={keys!r} must be a list of args keys (non-empty str), "
            f"e.g. {example}"
        )
    if keys and "args" not in fields:
        raise ConfigurationError(
            f'{what} partition keys={list(keys)!r} need "args" among the fields, e.g. {example}'
        )
    return {"fields": list(fields), "keys": list(keys)}


def parse_global(queue: str, value: Any) -> Optional[GlobalLimit]:
    """``global_limit=`` for ``queue`` checked: an int, ``{"allowed": n, "partition": …}``, or
    ``None`` (no limit)."""
    what = f"queue {queue!r}: global_limit"
    if value is None:
        return None
    if isinstance(value, Mapping):
        unknown = set(value) - {"allowed", "partition"}
        if unknown:
            raise ConfigurationError(
                f"{what} has unknown settings {sorted(unknown)}; use allowed and partition, "
                'e.g. {"allowed": 1, "partition": {"fields": ["args"], "keys": ["customer"]}}'
            )
        return {
            "allowed": _allowed(what, value.get("allowed")),
            "partition": _partition(what, value.get("partition")),
        }
    return {"allowed": _allowed(what, value), "partition": None}


def parse_rate(queue: str, value: Any) -> Optional[RateLimit]:
    """``rate_limit=`` for ``queue`` checked: ``{"allowed": n, "period": seconds,
    "partition": …}``, or ``None`` (no limit)."""
    what = f"queue {queue!r}: rate_limit"
    if value is None:
        return None
    example = '{"allowed": 100, "period": 60}'
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{what}={value!r} must be a dict such as {example}")
    unknown = set(value) - {"allowed", "period", "partition"}
    if unknown:
        raise ConfigurationError(
            f"{what} has unknown settings {sorted(unknown)}; use allowed, period and "
            f"partition, e.g. {example}"
        )
    period = value.get("period")
    if (
        isinstance(period, bool)
        or not isinstance(period, (int, float))
        or not math.isfinite(period)
        or not 0.001 <= period <= MAX_PERIOD
    ):
        raise ConfigurationError(
            f"{what} period={period!r} must be a number of seconds from 0.001 to "
            f"{MAX_PERIOD:.0f} (one week), e.g. {example}"
        )
    return {
        "allowed": _allowed(what, value.get("allowed")),
        "period": float(period),
        "partition": _partition(what, value.get("partition")),
    }


@dataclass(frozen=True)
class Declared:
    """The limits a queue's constructor settings name: each one the settings leave out is
    :data:`UNSET` (the stored one stays), ``None`` removes it."""

    global_limit: Union[GlobalLimit, None, Unset] = UNSET
    rate_limit: Union[RateLimit, None, Unset] = UNSET


def declared(queue: str, spec: Mapping[str, Any]) -> Optional[Declared]:
    """The limits a queue's settings dict declares, checked; ``None`` if it names none."""
    if "global_limit" not in spec and "rate_limit" not in spec:
        return None
    return Declared(
        parse_global(queue, spec["global_limit"]) if "global_limit" in spec else UNSET,
        parse_rate(queue, spec["rate_limit"]) if "rate_limit" in spec else UNSET,
    )


def global_json(limit: Optional[GlobalLimit]) -> Optional[str]:
    """The engine's JSON form of ``limit``."""
    if limit is None:
        return None
    return json.dumps({"allowed": limit["allowed"], "partition": limit["partition"]})


def rate_json(limit: Optional[RateLimit]) -> Optional[str]:
    """The engine's JSON form of ``limit`` (the period in whole microseconds)."""
    if limit is None:
        return None
    period_us = round(limit["period"] * 1_000_000)
    return json.dumps(
        {"allowed": limit["allowed"], "period_us": period_us, "partition": limit["partition"]}
    )


def _stored_partition(value: Any) -> Optional[Partition]:
    if value is None:
        return None
    return {"fields": list(value["fields"]), "keys": list(value.get("keys", []))}


def global_from_json(text: Optional[str]) -> Optional[GlobalLimit]:
    """A stored global limit, from the engine's JSON form."""
    if text is None:
        return None
    value = json.loads(text)
    return {"allowed": value["allowed"], "partition": _stored_partition(value.get("partition"))}


def rate_from_json(text: Optional[str]) -> Optional[RateLimit]:
    """A stored rate limit, from the engine's JSON form."""
    if text is None:
        return None
    value = json.loads(text)
    return {
        "allowed": value["allowed"],
        "period": value["period_us"] / 1_000_000,
        "partition": _stored_partition(value.get("partition")),
    }


def _per(partition: Optional[Partition]) -> str:
    if partition is None:
        return ""
    keys = ", ".join(f"args[{k}]" for k in partition["keys"]) or "args"
    return " per " + ", ".join("worker" if f == "worker" else keys for f in partition["fields"])


def _in_use(counts: dict[str, int], what: str) -> str:
    total = sum(counts.values())
    partitions = sum(1 for key in counts if key)
    spread = f" over {partitions} partition{'' if partitions == 1 else 's'}" if partitions else ""
    return f" ({total} {what}{spread})"


def describe(
    global_limit: Optional[GlobalLimit],
    rate_limit: Optional[RateLimit],
    usage: Optional[LimitUsage] = None,
) -> str:
    """A queue's limits in a few words (``kathikon queues``, the dashboard), with what is in
    use when ``usage`` is given, e.g. ``≤ 20 at once (3 running); 100 per 60 s per args[user]
    (41 in window over 2 partitions)``; ``-`` for none."""
    out = []
    if global_limit is not None:
        text = f"≤ {global_limit['allowed']} at once{_per(global_limit['partition'])}"
        out.append(text + ("" if usage is None else _in_use(usage["executing"], "running")))
    if rate_limit is not None:
        period = f"{rate_limit['period']:g}"
        text = f"{rate_limit['allowed']} per {period} s{_per(rate_limit['partition'])}"
        out.append(text + ("" if usage is None else _in_use(usage["window"], "in window")))
    return "; ".join(out) or "-"


__all__ = [
    "MAX_PERIOD",
    "Declared",
    "UNSET",
    "GlobalLimit",
    "GlobalLimitSpec",
    "LimitUsage",
    "Partition",
    "RateLimit",
    "RateLimitSpec",
    "Unset",
    "describe",
    "parse_global",
    "parse_rate",
]
