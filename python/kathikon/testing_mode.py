"""Testing modes: an app that keeps its jobs in memory and never runs workers on its own.

``Kathikon(..., testing="manual" | "inline")``, or ``KATHIKON_TESTING=manual | inline`` in the
environment (which overrides the argument for every app made in the process, so that a test
suite can switch the app a module creates at import time), gives an app that:

- keeps its jobs in a fresh in-memory store: the ``path`` it was given is kept as
  ``app.path`` but never created, opened or connected to (a running worker's store stays
  untouched by the tests);
- runs on a manual clock (``app.advance_clock``), so schedules and backoffs are exact;
- starts no workers: ``app.start()`` (and ``with app:``) only logs that it did not, so that
  code starting workers beside a web app runs unchanged under test; ``app.run()`` and
  ``kathikon worker``, which exist only to run workers, raise instead of waiting forever.

``manual`` stores jobs and leaves running them to the test (:func:`kathikon.testing.drain_jobs`,
:func:`~kathikon.testing.perform_job`). ``inline`` runs each inserted job at once, in the
caller, once (as Oban's ``testing: :inline`` does; a job scheduled for later runs at once too),
and ``insert`` returns the job as that attempt left it: completed, retryable, discarded,
cancelled, or scheduled again (snoozed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Optional

from . import telemetry
from ._native import Engine
from .drain import _run_to_completion
from .engine_events import EventPump
from .errors import ConfigurationError
from .execute import AckTuple, Attempt, run_async, run_sync
from .job import Job, JobState
from .vocabulary import FAIL, FSYNC

if TYPE_CHECKING:
    from .app import Kathikon

log = logging.getLogger("kathikon")

#: The environment variable that puts every app made in the process in a testing mode.
ENV = "KATHIKON_TESTING"
MANUAL = "manual"
INLINE = "inline"
MODES = (MANUAL, INLINE)


def resolve(argument: Optional[str]) -> Optional[str]:
    """The app's testing mode: ``KATHIKON_TESTING`` when set (and not empty), else the
    ``testing=`` argument; ``None`` for a normal app."""
    env = os.environ.get(ENV, "")
    if env:
        if env not in MODES:
            raise ConfigurationError(
                f"{ENV}={env!r} is not a testing mode; set it to {MANUAL!r} or {INLINE!r}, "
                "or unset it (or set it empty) for normal apps"
            )
        return env
    if argument is not None and argument not in MODES:
        raise ConfigurationError(
            f"testing={argument!r} is not a testing mode; pass {MANUAL!r} (jobs are stored "
            f"and run by drain_jobs), {INLINE!r} (each insert runs its job at once) or None "
            "(the default: a normal app)"
        )
    return argument


def open_engine(app: Kathikon) -> Engine:
    """A fresh in-memory store on a manual clock starting now, with the app's settings."""
    config = app.config
    return Engine(
        None,
        fsync=config.durability == FSYNC,
        scheduler_interval=config.scheduler_interval,
        prune_interval=config.prune_interval,
        retention_period=config.retention_period,
        manual_clock=time.time_ns() // 1000,  # the clock starts at now
    )


def reset(app: Kathikon) -> None:
    """Give a testing-mode app an empty store (ids from 1, the clock at now), keeping its
    workers and settings; reopens the app if it was closed. Nothing may run on it meanwhile:
    a testing-mode app runs jobs only in the thread that drains or inserts."""
    if app.testing is None:
        raise ConfigurationError(f"{app!r} is not in a testing mode; only those can be reset")
    old = app._engine
    if not app.closed:
        app._closed.set()
        app._events.join(timeout=2)
        app._unwatch()
        old.close()
    app._engine = open_engine(app)
    app._closed.clear()
    app._events = EventPump(app._engine, app._closed)
    app._unwatch = telemetry.watch(app._telemetry_changed)
    app._telemetry_changed()


def not_started(app: Kathikon) -> None:
    """What ``app.start()`` does in a testing mode: nothing but say so."""
    log.info(
        "%r: testing=%r, so no workers start; jobs run when a test drains them "
        "(kathikon.testing.drain_jobs) or, inline, as they are inserted",
        app,
        app.testing,
    )


def refuse_run(app: Kathikon, call: str) -> ConfigurationError:
    """The error for running workers until a signal (``app.run()``, ``kathikon worker``) in
    a testing mode, where no worker would ever run a job and the call would wait forever."""
    env = os.environ.get(ENV)
    source = f"{ENV}={env!r} is set" if env else f"testing={app.testing!r} was passed"
    return ConfigurationError(
        f"{call} runs workers, but this app is in testing mode ({source}): it keeps jobs in "
        "memory and never runs workers. Run jobs in tests with kathikon.testing.drain_jobs(app);"
        f" to run workers, unset {ENV} and do not pass testing="
    )


def run_inserted(app: Kathikon, jobs: list[Job]) -> list[Job]:
    """``testing="inline"``: run the jobs an insert just stored, at once and once each, in
    this thread, in the order given, and return each as its attempt left it.

    All of them are claimed before the first runs, so that an insert made by one of them (a
    nested insert, which runs inside it) claims its own job and not a sibling. A job that was
    already available in the same queue and is claimed with them (one made due again by
    ``advance_clock`` or ``retry``) runs first.
    """
    engine = app._engine
    if any(job.conflict for job in jobs):
        # A unique insert that found its job stored nothing new: that job is not run again
        # here, and comes back as the insert found it.
        fresh = iter(run_inserted(app, [job for job in jobs if not job.conflict]))
        return [job if job.conflict else next(fresh) for job in jobs]
    ids = {job.id for job in jobs}
    for job in jobs:
        if job.state is not JobState.AVAILABLE:
            engine.retry(job.id)  # scheduled for later: run now, as Oban's inline mode does
    engine.sync()  # the inserted jobs are in their claim queues
    claimed: dict[int, Job] = {}
    earlier: list[Job] = []
    for queue in dict.fromkeys(job.queue for job in jobs):
        wanted = {job.id for job in jobs if job.queue == queue}
        while wanted:
            got = engine.claim(queue, len(wanted), 0.0)
            if not got:
                break  # the rest were cancelled meanwhile
            for job in got:
                if job.id in ids:
                    claimed[job.id] = job
                    wanted.discard(job.id)
                else:
                    earlier.append(job)
    ran = _run_claimed(app, earlier + [claimed[job.id] for job in jobs if job.id in claimed])
    return [ran.get(job.id) or engine.get(job.id) for job in jobs]


def _run_claimed(app: Kathikon, claimed: list[Job]) -> dict[int, Job]:
    """Run claimed jobs one by one, recording each outcome before the next starts; the jobs
    as stored after their outcome, by id (missing: the outcome was stale, e.g. the job was
    cancelled while it ran)."""
    engine = app._engine
    finished: dict[int, Job] = {}
    loop: Optional[asyncio.AbstractEventLoop] = None
    try:
        for job in claimed:
            attempt = Attempt(job, app._workers.get(job.worker))
            reg = attempt.registration
            ack: AckTuple
            if reg is not None and reg.is_async:
                loop = loop or asyncio.new_event_loop()
                ack = _run_to_completion(loop, run_async(attempt))
            else:
                ack = run_sync(attempt)
            stored = engine.ack([ack])[0]
            attempt.report(stored)
            if stored is None:
                continue
            if ack[2] == FAIL:
                log.warning(
                    "inline job %d (%s) failed on attempt %d of %d, now %s:\n%s",
                    stored.id,
                    stored.worker,
                    stored.attempt,
                    stored.max_attempts,
                    stored.state.value,
                    ack[3],
                )
            finished[stored.id] = stored
    finally:
        if loop is not None:
            loop.close()
    return finished
