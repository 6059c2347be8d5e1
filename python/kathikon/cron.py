"""Cron: jobs inserted on the slots of cron expressions, declared in code.

An app declares its crontab with ``@app.worker(cron=...)`` and :meth:`Kathikon.cron
<kathikon.Kathikon.cron>`; each declaration hands the whole crontab to the engine, which fires
it while this process owns the store (every process of the app declares the same crontab, so
whichever owns the store fires it, and a process that takes the store over fires it from
then on). The expression and time zone are checked by the core's one parser at declaration.
See docs/guides/cron.md.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional

from ._native import CATCH_UP_POLICIES, JobSpec, cron_next
from .errors import ConfigurationError, InvalidJobError
from .job import from_micros
from .options import JobOptions, shown

if TYPE_CHECKING:
    from .app import Kathikon
    from .worker import Registration

#: ``catch_up=``'s default: slots missed while no process owned the store insert nothing.
SKIP = CATCH_UP_POLICIES[0]
#: Most jobs one catch-up inserts (``"all"``), or slot times it lists (``"once"``).
DEFAULT_CATCH_UP_LIMIT = 100
#: The time zone of an entry declared without one.
DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True)
class CronEntry:
    """One line of the crontab, as :meth:`Kathikon.crontab <kathikon.Kathikon.crontab>`
    lists it."""

    name: str
    """Unique in the crontab (the worker's name unless ``name=`` was given)."""
    expression: str
    """The cron expression, as declared."""
    timezone: str
    """The IANA time zone it is read in."""
    worker: str
    """The name of the worker each firing inserts a job for."""
    catch_up: str
    """``"skip"``, ``"once"`` or ``"all"``: what happens to slots missed while down."""
    next_at: Optional[datetime]
    """The next slot after now (aware, UTC); ``None`` for ``@reboot``."""
    last_slot: Optional[datetime]
    """The last slot that fired (aware, UTC), as stored; ``None`` if none has yet."""


@dataclass(frozen=True)
class _Declared:
    name: str
    expression: str
    timezone: str
    catch_up: str
    catch_up_limit: int
    worker: str
    job: JobSpec

    def row(self) -> tuple[str, str, str, str, int, JobSpec]:
        return (
            self.name,
            self.expression,
            self.timezone,
            self.catch_up,
            self.catch_up_limit,
            self.job,
        )


def _text(value: Any, what: str, name: str, example: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"cron entry {name!r}: {what}={shown(value)}; pass {example}")
    return value


#: Whether apps made in this process hand their crontab to their engine, so that the process
#: fires it whenever it owns the store. The command line's other commands (`kathikon cron`,
#: `stats`, `queues`, `insert`, ...) import an app only to use its store: they turn this off,
#: so running one never fires a slot, or an ``@reboot`` entry, of the app it reads.
_fires_in_this_process = True


def fire_nothing_in_this_process() -> None:
    """Keep every crontab declared from now on in this process to itself (listed by
    ``app.crontab()``, never fired here)."""
    global _fires_in_this_process
    _fires_in_this_process = False


class Crontab:
    """One app's declared crontab, handed to its engine on every change."""

    def __init__(self, app: Kathikon) -> None:
        self._app = app
        self._entries: list[_Declared] = []
        self._lock = threading.Lock()

    def add(
        self,
        expression: Any,
        reg: Registration,
        args: Optional[Mapping[str, Any]],
        name: Optional[str],
        timezone: Any,
        catch_up: Any,
        catch_up_limit: Any,
        options: JobOptions,
    ) -> None:
        """Check one entry and add it to the crontab (see :meth:`Kathikon.cron`)."""
        label = reg.name if name is None else name
        label = _text(label, "name", str(label), "a non-empty str naming the entry")
        expression = _text(expression, "cron", label, 'an expression such as "*/5 * * * *"')
        timezone = _text(timezone, "timezone", label, 'an IANA zone name such as "UTC"')
        if catch_up not in CATCH_UP_POLICIES:
            raise ConfigurationError(
                f"cron entry {label!r}: catch_up={shown(catch_up)} is not a catch-up policy; "
                f"use one of {', '.join(map(repr, CATCH_UP_POLICIES))}"
            )
        if (
            isinstance(catch_up_limit, bool)
            or not isinstance(catch_up_limit, int)
            or not 1 <= catch_up_limit < 2**32
        ):
            raise ConfigurationError(
                f"cron entry {label!r}: catch_up_limit={shown(catch_up_limit)}; pass an int "
                "of at least 1 (the most jobs one catch-up inserts)"
            )
        for option in ("schedule_in", "schedule_at"):
            if options.get(option) is not None:
                raise ConfigurationError(
                    f"cron entry {label!r}: {option}= cannot be given; a cron job runs at its slot"
                )
        cron_next(expression, timezone, 0)  # raises ConfigurationError naming a bad value
        try:
            job = self._app._new(reg, args, options)
        except InvalidJobError as e:
            raise ConfigurationError(f"cron entry {label!r}: {e}") from None
        entry = _Declared(label, expression, timezone, catch_up, catch_up_limit, reg.name, job)
        with self._lock:
            if any(e.name == label for e in self._entries):
                raise ConfigurationError(
                    f"a cron entry named {label!r} is already declared in this app; give one "
                    "of them another name (name=...)"
                )
            entries = [*self._entries, entry]
            if _fires_in_this_process:
                self._app._engine.set_crontab([e.row() for e in entries])
            self._entries = entries

    def entries(self) -> list[CronEntry]:
        """The crontab with each entry's next run time and last fired slot."""
        stored = {
            name: (slot, expression, timezone)
            for name, slot, expression, timezone in self._app._engine.cron_slots()
        }
        now = self._app._engine.now()
        out = []
        for e in self._entries:
            found = stored.get(e.name)
            last = (
                found[0] if found is not None and found[1:] == (e.expression, e.timezone) else None
            )
            following = cron_next(e.expression, e.timezone, now)
            out.append(
                CronEntry(
                    name=e.name,
                    expression=e.expression,
                    timezone=e.timezone,
                    worker=e.worker,
                    catch_up=e.catch_up,
                    next_at=None if following is None else from_micros(following),
                    last_slot=None if last is None else from_micros(last),
                )
            )
        return out
