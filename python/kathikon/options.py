"""Checking and encoding what a caller passes for one job, before anything reaches storage.

Every refusal is an :class:`InvalidJobError` whose message names the offending value (for
args, the path of the key) and says what to pass instead.
"""

from __future__ import annotations

import json
import json.encoder
import math
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, TypedDict, Union

from .errors import InvalidJobError
from .vocabulary import MAX_PRIORITY

if TYPE_CHECKING:
    from .unique import Unique

Seconds = Union[float, int, timedelta]


class JobLabels(TypedDict, total=False):
    """The options that say where a job goes and what it carries: also filters in
    :func:`kathikon.testing.assert_enqueued` and its kin. ``None`` means "not given"."""

    queue: Optional[str]
    """The queue's name; defaults to the worker's queue."""
    priority: Optional[int]
    """0 (runs first) … 9; defaults to the worker's."""
    tags: Optional[Iterable[str]]
    """Strings to label the job."""
    meta: Optional[Mapping[str, Any]]
    """A dict of JSON values kept with the job."""


class RunOptions(JobLabels, total=False):
    """:class:`JobLabels` and ``max_attempts``: the options that shape one attempt of a job,
    as :func:`kathikon.testing.perform_job` takes them."""

    max_attempts: Optional[int]
    """Attempts before the job is discarded; defaults to the worker's, then the app's."""


class JobOptions(RunOptions, total=False):
    """Every option of a job to insert, as :meth:`Kathikon.insert <kathikon.Kathikon.insert>`,
    :meth:`Kathikon.new <kathikon.Kathikon.new>` and a worker's ``insert``/``new`` take them
    (by keyword). Declared once so that type checkers catch a misspelt option everywhere."""

    schedule_in: Optional[Seconds]
    """Seconds or a timedelta from now. Not with ``schedule_at``."""
    schedule_at: Optional[datetime]
    """An aware datetime. Not with ``schedule_in``."""
    unique: Union[Unique, Literal[False], None]
    """Return the existing job instead of storing this one while a job with the same key
    exists (:class:`~kathikon.Unique`); defaults to the worker's. ``False``: not unique."""
    replace: Optional[Iterable[str]]
    """With a unique insert that finds a job still scheduled, available or retryable: the
    fields to overwrite on it (``args``, ``meta``, ``tags``, ``priority``, ``queue``,
    ``scheduled_at``, ``max_attempts``)."""


#: The names :class:`JobOptions` declares, checked at run time (where ``**options`` would
#: otherwise take any keyword).
JOB_OPTION_NAMES = frozenset(JobOptions.__annotations__)


def check_option_names(options: Mapping[str, Any], allowed: frozenset[str]) -> None:
    """Refuse a keyword that is not an option, as a signature that spelled them out would."""
    for name in options:
        if name not in allowed:
            raise TypeError(
                f"got an unexpected keyword argument {name!r}; the options are "
                f"{', '.join(sorted(allowed))}"
            )


class _ShortRepr(reprlib.Repr):
    """``repr`` cut to a few levels of nesting, with scalars and objects shown whole (the
    message cuts the whole text instead, so a datetime keeps its year)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = 200
        self.maxother = 200
        self.maxlong = 200


_SHORT_REPR = _ShortRepr()


def shown(value: Any, width: int = 60) -> str:
    """``repr(value)`` for an error message, at most ``width`` characters. Never raises: a
    caller's value may be a list nested 10,000 deep (a plain ``repr`` would exhaust Python's
    recursion limit) or an object whose ``__repr__`` fails (then its type is shown)."""
    try:
        text = _SHORT_REPR.repr(value)
    except Exception:  # a broken __repr__ must not hide the refusal
        return f"<{type(value).__name__} object>"
    return text if len(text) <= width else text[: width - 1] + "…"


def _path(parts: Sequence[Union[str, int]]) -> str:
    out = "args"
    for p in parts:
        out += f"[{p!r}]"
    return out


# Deeper than this is refused: the stdlib decoder would need as deep a recursion to read it
# back, and a worker should never fail on its own arguments.
MAX_DEPTH = 200


def not_utf8(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (e.g. from ``os.fsdecode`` of a bad file name),
    which UTF-8 — and so the store — cannot hold. ``isascii`` is O(1) in CPython."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _find_unencodable(
    value: Any, parts: list[Union[str, int]], what: str, seen: Optional[set[int]] = None
) -> Optional[str]:
    """Describe the first value under ``value`` that JSON cannot round-trip faithfully."""
    where = _path(parts).replace("args", what, 1)
    if len(parts) > MAX_DEPTH:
        return f"{what} is nested more than {MAX_DEPTH} levels deep (at {where[:80]}…); flatten it"
    if value is None or isinstance(value, (str, bool, int, float)):
        return _scalar_problem(value, where)
    if isinstance(value, (Mapping, list, tuple)):
        seen = set() if seen is None else seen
        if id(value) in seen:
            return f"{where} contains itself; JSON cannot represent a cycle"
        seen.add(id(value))
        try:
            if isinstance(value, Mapping):
                return _first_problem_in_mapping(value, parts, what, where, seen)
            for i, item in enumerate(value):
                found = _find_unencodable(item, [*parts, i], what, seen)
                if found:
                    return found
            return None
        finally:
            seen.discard(id(value))
    return (
        f"{where} is {type(value).__name__} ({shown(value)}), which is not JSON-serialisable; "
        "pass str, int, float, bool, None, list or dict (e.g. an id instead of an object)"
    )


def _scalar_problem(value: Any, where: str) -> Optional[str]:
    if isinstance(value, str) and not_utf8(value):
        return (
            f"{where} is {value!r:.60}, which holds a lone surrogate and is not valid UTF-8; "
            "pass text that encodes as UTF-8"
        )
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where} is {value!r}, which JSON cannot represent; use None or a string"
    return None


def _first_problem_in_mapping(
    value: Mapping[Any, Any],
    parts: list[Union[str, int]],
    what: str,
    where: str,
    seen: set[int],
) -> Optional[str]:
    for key, item in value.items():
        if not isinstance(key, str):
            return (
                f"{where} has the non-string key {shown(key)} ({type(key).__name__}); JSON keys "
                "are strings, so it would come back changed: convert the key to str"
            )
        if not_utf8(key):
            return (
                f"{where} has the key {key!r:.60}, which holds a lone surrogate and is not "
                "valid UTF-8; pass text that encodes as UTF-8"
            )
        found = _find_unencodable(item, [*parts, key], what, seen)
        if found:
            return found
    return None


_CONTAINERS = (dict, list, tuple)


def _flat(value: dict[Any, Any]) -> bool:
    """Whether every key is a string and no value is a container."""
    for key, child in value.items():  # a loop: twice as fast as all() over a generator
        if type(key) is not str or type(child) in _CONTAINERS:
            return False
    return True


def _needs_checking(value: dict[Any, Any]) -> bool:
    """Whether ``value`` holds something ``json.dumps`` accepts but would not round-trip: a
    non-string dict key (silently turned into a string) or nesting deeper than MAX_DEPTH
    (a cycle is infinitely deep). Only containers are visited, so flat arguments cost one
    pass over their keys."""
    if _flat(value):
        return False  # the common case, without the walk below
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if type(item) is dict:
            for key, child in item.items():
                if type(key) is not str:
                    return True
                if type(child) in (dict, list, tuple):
                    stack.append((child, depth + 1))
        elif type(item) in (list, tuple):
            stack.extend((child, depth + 1) for child in item if type(child) in (dict, list, tuple))
        elif isinstance(item, Mapping):  # a Mapping that is not a dict: check it the slow way
            return True
    return False


def _json_encoder() -> Callable[[Any], str]:
    """``json.dumps`` with this module's settings, made once.

    ``json.dumps`` with any non-default setting builds a ``JSONEncoder`` per call, and its
    ``encode`` builds the C encoder per call too, which costs more than the encoding itself.
    CPython's C encoder (``json.encoder.c_make_encoder``) is made once
    here, with no circular-reference check (``_needs_checking`` sends cycles to the slow
    path first). Where it is missing or does not answer as ``json.dumps`` does, the
    encoder's ``encode`` is used."""
    settings = {"allow_nan": False, "separators": (",", ":"), "ensure_ascii": False}
    encoder = json.JSONEncoder(**settings)  # type: ignore[arg-type]
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    try:
        c_encode = make(
            None,
            encoder.default,
            json.encoder.encode_basestring,
            None,
            ":",
            ",",
            False,
            False,
            False,
        )

        def encode(value: Any) -> str:
            return "".join(c_encode(value, 0))

        probe = {"a": [1, 2.5, None, True, "é\n"], "b": {"c": -3}}
        if encode(probe) != json.dumps(probe, **settings):  # type: ignore[arg-type]
            return encoder.encode
    except Exception:
        return encoder.encode  # a C encoder of another shape: use the plain one
    return encode


_encode = _json_encoder()


def encode_json(value: Any, what: str) -> str:
    """Encode job ``args``/``meta`` (a dict with string keys) as JSON text.

    The common case is one C-speed ``json.dumps``; the slow walk that names the offending key
    runs only when something is wrong.
    """
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise InvalidJobError(
            f"{what} must be a dict, got {type(value).__name__} ({shown(value)}); "
            f'wrap it, e.g. {{"value": ...}}'
        )
    if not value:
        return "{}"
    text: Optional[str] = None
    if type(value) is dict and not _needs_checking(value):
        try:
            text = _encode(value)
        except (TypeError, ValueError, RecursionError):
            text = None
    if text is not None and not not_utf8(text):
        return text
    problem = _find_unencodable(value, [], what)
    if problem:
        raise InvalidJobError(problem)
    try:
        text = json.dumps(dict(value), allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidJobError(f"{what} cannot be encoded as JSON: {exc}") from None
    if not_utf8(text):
        raise InvalidJobError(f"{what} holds a lone surrogate, which is not valid UTF-8")
    return text


def check_priority(priority: Any) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidJobError(
            f"priority {shown(priority)} must be an int from 0 (runs first) to {MAX_PRIORITY}"
        )
    if not 0 <= priority <= MAX_PRIORITY:
        raise InvalidJobError(
            f"priority {priority} is out of range; use 0 (runs first) to {MAX_PRIORITY}"
        )
    return priority


def check_max_attempts(max_attempts: Any) -> int:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
        raise InvalidJobError(f"max_attempts {shown(max_attempts)} must be an int of at least 1")
    if max_attempts < 1:
        raise InvalidJobError(f"max_attempts {max_attempts} must be at least 1")
    if max_attempts > 2**32 - 2:
        raise InvalidJobError(f"max_attempts {max_attempts} is too large; use at most 2**32 - 2")
    return max_attempts


def check_tags(tags: Any) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str) or not isinstance(tags, (list, tuple, set, frozenset)):
        raise InvalidJobError(f"tags {shown(tags)} must be a list of strings, e.g. ['billing']")
    for tag in tags:
        if not isinstance(tag, str):
            raise InvalidJobError(f"tag {shown(tag)} in tags must be a string")
        if not_utf8(tag):
            raise InvalidJobError(f"tag {tag!r:.60} holds a lone surrogate; tags must be UTF-8")
    return list(tags)


def seconds_of(value: Any, name: str) -> float:
    """A duration given as seconds or a timedelta, as float seconds."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidJobError(f"{name} {shown(value)} must be a number of seconds or a timedelta")
    if math.isinf(value):
        raise InvalidJobError(f"{name} {value!r} must be finite")
    return float(value)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)

#: The earliest and latest times a job may be scheduled for, in engine microseconds: those
#: Python's ``datetime`` can represent in UTC (years 1 to 9999). Every stored time must read
#: back as a ``datetime``, so nothing outside them is accepted.
EARLIEST_US = (datetime.min.replace(tzinfo=timezone.utc) - _EPOCH) // _MICROSECOND
LATEST_US = (datetime.max.replace(tzinfo=timezone.utc) - _EPOCH) // _MICROSECOND


def _delay_micros(schedule_in: Seconds) -> Union[int, float]:
    """``schedule_in`` in microseconds: exact for a timedelta; a float (maybe huge, never NaN)
    for seconds, so that an absurd delay is compared with the bounds before it is rounded."""
    if isinstance(schedule_in, timedelta):
        return schedule_in // _MICROSECOND
    return seconds_of(schedule_in, "schedule_in") * 1_000_000


def _out_of_range(what: str, us: Union[int, float], fix: str) -> InvalidJobError:
    side = "after the latest" if us > LATEST_US else "before the earliest"
    edge = datetime.max if us > LATEST_US else datetime.min
    return InvalidJobError(
        f"{what} puts the job {side} time Kathikon can store "
        f"({edge.replace(tzinfo=timezone.utc).isoformat()}, the range of Python's datetime); "
        f"{fix}"
    )


def scheduled_at_micros(
    now_us: int, schedule_in: Optional[Seconds], schedule_at: Optional[datetime]
) -> Optional[int]:
    """When the job should run, in engine microseconds; ``None`` means now. Refuses a time
    outside [``EARLIEST_US``, ``LATEST_US``], naming the value."""
    if schedule_in is not None and schedule_at is not None:
        raise InvalidJobError(
            f"schedule_in={shown(schedule_in)} and schedule_at={shown(schedule_at)} were both "
            "given; pass only one"
        )
    if schedule_in is not None:
        delay = _delay_micros(schedule_in)
        if not EARLIEST_US - now_us <= delay <= LATEST_US - now_us:
            raise _out_of_range(
                f"schedule_in={shown(schedule_in)}",
                now_us + delay,
                "pass a shorter delay, or schedule_at",
            )
        return now_us + (delay if isinstance(delay, int) else round(delay))
    if schedule_at is not None:
        if not isinstance(schedule_at, datetime):
            raise InvalidJobError(f"schedule_at {shown(schedule_at)} must be an aware datetime")
        if schedule_at.tzinfo is None or schedule_at.utcoffset() is None:
            raise InvalidJobError(
                f"schedule_at {schedule_at.isoformat()} is naive (no timezone); "
                "pass an aware datetime, e.g. datetime.now(timezone.utc) + timedelta(minutes=5)"
            )
        at_us: int = (schedule_at - _EPOCH) // _MICROSECOND
        if not EARLIEST_US <= at_us <= LATEST_US:
            raise _out_of_range(
                f"schedule_at {schedule_at.isoformat()}", at_us, "pass a time within it"
            )
        return at_us
    return None
