"""Listing, counting and bulk actions by filter: the checks that turn ``app.jobs(...)``'s
keyword arguments into the core's filter (``_native.ListFilter``, applied in the core so the
socket client and any store serve the same calls), the cursor, and :class:`JobPage`."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Callable, Literal, Optional, TypedDict, Union

from ._native import ListFilter
from .errors import InvalidJobError
from .job import Job, JobState
from .options import _EPOCH, _MICROSECOND, encode_json, shown

Order = Literal["asc", "desc"]
TimeValue = Union[datetime, int, float]
States = Union[str, JobState, Iterable[Union[str, JobState]]]

# The cursor's version tag: a cursor from another version is refused by name, never misread.
_CURSOR_TAG = "k1"
_TIME_NAMES = (
    "inserted_after",
    "inserted_before",
    "scheduled_after",
    "scheduled_before",
    "finished_after",
    "finished_before",
)


class JobFilterExtras(TypedDict, total=False):
    """The filters of :class:`JobFilter` beyond state, queue and worker (which ``app.jobs``
    also takes by position)."""

    tags: Union[str, Iterable[str], None]
    args: Optional[Mapping[str, Any]]
    meta: Optional[Mapping[str, Any]]
    inserted_after: Optional[TimeValue]
    inserted_before: Optional[TimeValue]
    scheduled_after: Optional[TimeValue]
    scheduled_before: Optional[TimeValue]
    finished_after: Optional[TimeValue]
    finished_before: Optional[TimeValue]


class JobFilter(JobFilterExtras, total=False):
    """The filters shared by ``app.jobs``, ``app.count`` and the bulk actions. Every given
    filter must hold (they combine with AND); ``*_after`` times are inclusive and
    ``*_before`` times exclusive."""

    state: Optional[States]
    queue: Optional[str]
    worker: Any


_FILTER_NAMES = ("state", "queue", "worker", *JobFilterExtras.__optional_keys__)


class JobPage(list[Job]):
    """One page of ``app.jobs``: a list of jobs, and ``cursor``, an opaque string that
    ``app.jobs(..., cursor=page.cursor)`` continues from (``None`` on the last page)."""

    cursor: Optional[str]

    def __init__(self, jobs: Iterable[Job], cursor: Optional[str]) -> None:
        super().__init__(jobs)
        self.cursor = cursor


def encode_cursor(order: Order, last_id: int) -> str:
    raw = f"{_CURSOR_TAG}:{order}:{last_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: Any, order: Order) -> int:
    bad = InvalidJobError(
        f"cursor {shown(cursor)} is not one app.jobs returned; pass the previous page's "
        "JobPage.cursor unchanged, or None for the first page"
    )
    if not isinstance(cursor, str):
        raise bad
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        tag, cursor_order, last = base64.urlsafe_b64decode(padded).decode().split(":")
        last_id = int(last)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    if tag != _CURSOR_TAG or not 0 <= last_id < 2**64 or cursor_order not in ("asc", "desc"):
        raise bad
    if cursor_order != order:
        raise InvalidJobError(
            f"cursor {shown(cursor)} continues a listing in order={cursor_order!r}, not "
            f"order={order!r}; pass the order of the page it came from"
        )
    return last_id


def _states(state: Any) -> list[str]:
    if state is None:
        return []
    values = [state] if isinstance(state, (str, JobState)) else state
    try:
        values = list(values)
    except TypeError:
        values = [state]
    out = []
    for value in values:
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            out.append(JobState(value).value)
        except ValueError:
            raise InvalidJobError(
                f"state {shown(value)} is not a job state; use one of "
                f"{', '.join(s.value for s in JobState)} (or a list of them)"
            ) from None
    if not out:
        raise InvalidJobError("state=[] selects no job; pass None for every state")
    return out


def _tags(tags: Any) -> list[str]:
    if tags is None:
        return []
    values = [tags] if isinstance(tags, str) else tags
    try:
        values = list(values)
    except TypeError:
        values = None
    if values is None or not all(isinstance(t, str) for t in values):
        raise InvalidJobError(f"tags {shown(tags)} must be a tag (a str) or a list of tags")
    return values


def _micros(name: str, value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidJobError(
                f"{name}={value.isoformat()} is naive (no timezone); pass an aware datetime, "
                "e.g. datetime.now(timezone.utc), or epoch seconds"
            )
        us: int = (value - _EPOCH) // _MICROSECOND
        return us
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")) or abs(value) > 2**53:
            raise InvalidJobError(f"{name}={shown(value)} is not a usable time")
        return round(value * 1_000_000)
    raise InvalidJobError(
        f"{name}={shown(value)} must be an aware datetime or epoch seconds (an int or float)"
    )


def _json(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    return encode_json(value, f"the {name} filter")


def build_filter(
    filters: Mapping[str, Any],
    worker_name: Callable[[Any], str],
    *,
    order: Any = "asc",
    limit: int = 0,
    after: Optional[int] = None,
    cursor: Optional[str] = None,
) -> ListFilter:
    """The core's filter for ``filters`` (a :class:`JobFilter`), refusing any bad value with
    an :class:`InvalidJobError` that names it. ``limit`` 0 means no limit."""
    unknown = sorted(set(filters) - set(_FILTER_NAMES))
    if unknown:
        raise InvalidJobError(
            f"unknown filter {', '.join(unknown)}; the filters are {', '.join(_FILTER_NAMES)}"
        )
    if order not in ("asc", "desc"):
        raise InvalidJobError(f"order {shown(order)} must be 'asc' (oldest first) or 'desc'")
    queue = filters.get("queue")
    if queue is not None and not isinstance(queue, str):
        raise InvalidJobError(f"queue {shown(queue)} must be a queue name (a str) or None")
    worker = filters.get("worker")
    before_id: Optional[int] = None
    if cursor is not None:
        if after is not None:
            raise InvalidJobError(
                f"after={shown(after)} and cursor={shown(cursor)} were both given; pass one"
            )
        last = _decode_cursor(cursor, order)
        after, before_id = (last, None) if order == "asc" else (None, last)
    times = {name: _micros(name, filters.get(name)) for name in _TIME_NAMES}
    return ListFilter(
        states=_states(filters.get("state")),
        queue=queue,
        worker=None if worker is None else worker_name(worker),
        tags=_tags(filters.get("tags")),
        args=_json("args", filters.get("args")),
        meta=_json("meta", filters.get("meta")),
        after=after,
        before=before_id,
        descending=order == "desc",
        limit=limit,
        **times,
    )


__all__ = [
    "JobFilter",
    "JobFilterExtras",
    "JobPage",
    "Order",
    "States",
    "build_filter",
    "encode_cursor",
]
