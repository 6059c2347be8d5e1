"""The names Python shares with the core, taken from ``kathikon._native`` where the core
defines them (``rust/kathikon-core``: ``Outcome::KINDS``, ``JobState::ALL``,
``EngineEvent::NAMES``, ``Durability::NAMES``, ``MAX_PRIORITY``), so that no Python module
spells them on its own. Compare against these names, not against literals."""

from __future__ import annotations

from ._native import DURABILITIES, ENGINE_EVENTS, JOB_STATES, MAX_PRIORITY, OUTCOME_KINDS

# -- outcome kinds: what an ack tuple names, and the stop event's ``outcome`` ----------------

#: In the core's order: the worker returned; it raised (retried while attempts remain);
#: ``Snooze``; ``Cancel``; ``Discard`` (see :mod:`kathikon.outcomes`); handed back unfinished
#: by a worker whose shutdown grace period ran out (due again, no attempt used up).
COMPLETE, FAIL, SNOOZE, CANCEL, DISCARD, INTERRUPT = OUTCOME_KINDS

#: Python's own outcome names in telemetry, beside the kinds: a ``fail`` with attempts left
#: (the outcome events' and contrib's ``retry``), and a result the store refused as stale
#: (the stop event's ``ignored``).
RETRY = "retry"
IGNORED = "ignored"

# -- engine events -----------------------------------------------------------------------

#: ``Engine.next_events`` names: a scheduler tick, a quarantined record, a pruner tick, a
#: cron entry's slot inserting its job.
SCHEDULER_TICK, JOB_QUARANTINE, PRUNER_TICK, CRON_INSERT = ENGINE_EVENTS

# -- durability --------------------------------------------------------------------------

#: ``Kathikon(durability=...)``: every commit fsync'd (the default), or not.
FSYNC, NO_FSYNC = DURABILITIES

__all__ = [
    "CANCEL",
    "COMPLETE",
    "CRON_INSERT",
    "DISCARD",
    "DURABILITIES",
    "ENGINE_EVENTS",
    "FAIL",
    "FSYNC",
    "IGNORED",
    "INTERRUPT",
    "JOB_QUARANTINE",
    "JOB_STATES",
    "MAX_PRIORITY",
    "NO_FSYNC",
    "OUTCOME_KINDS",
    "PRUNER_TICK",
    "RETRY",
    "SCHEDULER_TICK",
    "SNOOZE",
]
