"""The job list's filter, read from a URL's query or a bulk action's form: every filter of
``app.jobs`` (several states, queue, worker, tags, args and meta as contained JSON, the six
time bounds), the order, the page size and the cursor.

A bad value raises :class:`~kathikon.InvalidJobError` naming it and the fix, which the page
shows with 400. The filters are only parsed here; ``app.jobs`` checks them again (an unknown
state, a bad cursor), and its error is shown the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional, Union

from ..errors import InvalidJobError
from ..listing import JobFilter, Order
from .settings import DEFAULT_PAGE, MAX_PAGE

#: The time filters, each a form field of the same name.
TIME_FIELDS = (
    "inserted_after",
    "inserted_before",
    "scheduled_after",
    "scheduled_before",
    "finished_after",
    "finished_before",
)
#: The order the list shows without ``order=`` in the URL: newest first, as dashboards do.
DEFAULT_ORDER: Order = "desc"

#: A query or form: each field name with its values, as ``parse_qs`` gives them.
Fields = Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class JobQuery:
    """One request's filter: what to pass ``app.jobs``/``app.count``/the bulk actions, and
    the fields as typed (to show them back in the form and carry them in links)."""

    filters: JobFilter
    order: Order = DEFAULT_ORDER
    limit: int = DEFAULT_PAGE
    cursor: Optional[str] = None
    form: dict[str, str] = field(default_factory=dict)
    """Each single-valued field as typed ("" when absent)."""
    states: list[str] = field(default_factory=list)

    def items(self) -> list[tuple[str, str]]:
        """The filter's fields (not the cursor), for a link or a form's hidden fields."""
        out = [("state", s) for s in self.states]
        out += [(k, v) for k, v in self.form.items() if v and k not in ("order", "limit")]
        if self.order != DEFAULT_ORDER:
            out.append(("order", self.order))
        if self.limit != DEFAULT_PAGE:
            out.append(("limit", str(self.limit)))
        return out

    @property
    def filtered(self) -> bool:
        """Whether any filter narrows the list (bulk "all matching" then says so)."""
        return bool(self.filters)


def _one(fields: Fields, name: str) -> str:
    values = fields.get(name) or [""]
    return values[0].strip()


def _time(name: str, text: str) -> Union[datetime, float]:
    """ISO 8601 (a browser's ``datetime-local`` sends one without a zone: read as UTC) or
    epoch seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidJobError(
            f"{name}={text!r} is not a time; give ISO 8601 such as 2026-12-07T10:00 (UTC when "
            "no zone is given) or epoch seconds"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def _json_object(name: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidJobError(
            f"{name}={text!r} is not JSON ({e}); give an object the job's {name} must "
            'contain, e.g. {"user_id": 7}'
        ) from None
    if not isinstance(value, dict):
        raise InvalidJobError(
            f"{name}={text!r} is not a JSON object; give an object the job's {name} must "
            'contain, e.g. {"user_id": 7}'
        )
    return value


def _limit(text: str) -> int:
    if not text:
        return DEFAULT_PAGE
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PAGE:
        raise InvalidJobError(f"limit={text!r} in the URL must be an int from 1 to {MAX_PAGE}")
    return int(text)


def parse(fields: Fields) -> JobQuery:
    """The :class:`JobQuery` of a query string's or a form's fields; unknown fields (``csrf``,
    ``done``, …) are ignored."""
    filters: JobFilter = {}
    form = {name: _one(fields, name) for name in ("queue", "worker", "tags", "args", "meta")}
    states = [s for s in (v.strip() for v in fields.get("state", [])) if s]
    if states:
        filters["state"] = states
    if form["queue"]:
        filters["queue"] = form["queue"]
    if form["worker"]:
        filters["worker"] = form["worker"]
    if form["tags"]:
        filters["tags"] = [t.strip() for t in form["tags"].split(",") if t.strip()]
    if form["args"]:
        filters["args"] = _json_object("args", form["args"])
    if form["meta"]:
        filters["meta"] = _json_object("meta", form["meta"])
    for name in TIME_FIELDS:
        text = form[name] = _one(fields, name)
        if text:
            filters[name] = _time(name, text)  # type: ignore[literal-required]
    order = _one(fields, "order") or DEFAULT_ORDER
    if order not in ("asc", "desc"):
        raise InvalidJobError(f"order={order!r} must be 'desc' (newest first) or 'asc'")
    form["order"] = order
    limit = _limit(_one(fields, "limit"))
    cursor = _one(fields, "cursor") or None
    return JobQuery(filters, order, limit, cursor, form, states)  # type: ignore[arg-type]
