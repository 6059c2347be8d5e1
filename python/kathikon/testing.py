"""Helpers for testing code that uses Kathikon, the way ``Oban.Testing`` serves Oban users.

Installing kathikon registers this module as a pytest plugin (the ``pytest11`` entry point),
which provides two fixtures:

``kathikon_app``
    A fresh in-memory app (``path=None``) on a manual clock (``clock="manual"``), closed after
    the test. Move its time with ``kathikon_app.advance_clock(seconds)``. After
    :func:`use` ``(app)``, that app instead, with an empty store for each test.
``kathikon_app_options``
    The keyword arguments ``kathikon_app`` is built with, on top of those defaults (``{}``).
    Override it (in a ``conftest.py`` or a test module) to set queues, ``max_attempts``, …

The helpers need no pytest and work with any app (``unittest`` users: :func:`make_app`):

- :func:`assert_enqueued`, :func:`refute_enqueued`, :func:`all_enqueued`: look for stored jobs
  by worker, args (matched as a subset), queue, state, priority, tags, meta and schedule.
- :func:`drain_jobs`: run the jobs that are due (or, ``with_scheduled=True``, all of them)
  in this thread and count the outcomes (see :data:`OUTCOMES`).
- :func:`perform_job` / :func:`aperform_job`: run one worker inline on args, without
  storing a job, with the outcome rules applied (see :class:`PerformResult`).
- :func:`use`: test the app a module creates at import time (put in a testing mode by
  ``KATHIKON_TESTING``) through the ``kathikon_app`` fixture.

docs/testing.md has a worked example.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib.util import find_spec
from typing import Any, Optional, Union, cast

from typing_extensions import Unpack

from ._native import unsaved_job
from .app import Kathikon, WorkerRef
from .drain import drain_rounds
from .errors import ConfigurationError, InvalidJobError
from .execute import Attempt
from .job import Job, JobState
from .options import (
    JobLabels,
    RunOptions,
    Seconds,
    check_option_names,
    check_priority,
    check_tags,
    encode_json,
    seconds_of,
)
from .outcomes import JobOutcome
from .vocabulary import CANCEL, COMPLETE, DISCARD, SNOOZE
from .worker import Registration, Worker, WorkerFunction

__all__ = [
    "ENQUEUED_STATES",
    "OUTCOMES",
    "PerformResult",
    "all_enqueued",
    "aperform_job",
    "assert_enqueued",
    "drain_jobs",
    "make_app",
    "perform_job",
    "refute_enqueued",
    "use",
]

#: What :func:`drain_jobs` counts and :attr:`PerformResult.outcome` says, one per attempt:
#: ``completed`` (returned), ``retryable`` (raised; it will run again after its backoff),
#: ``discarded`` (returned/raised ``Discard``, or raised on its last attempt), ``cancelled``
#: (returned/raised ``Cancel``, or was cancelled while it ran), ``snoozed`` (``Snooze``).
OUTCOMES = ("completed", "retryable", "discarded", "cancelled", "snoozed")

#: The states the ``*_enqueued`` helpers look at unless told otherwise: jobs waiting to run
#: for the first time (as Oban.Testing does). Pass ``state=None`` for every state.
ENQUEUED_STATES = ("scheduled", "available")

#: Most attempts :func:`drain_jobs` runs before deciding that jobs keep coming back forever.
MAX_DRAIN_RUNS = 10_000

StateFilter = Union[str, JobState, Iterable[Union[str, JobState]], None]


class EnqueuedFilter(JobLabels, total=False):
    """What :func:`all_enqueued`, :func:`assert_enqueued` and :func:`refute_enqueued` look
    for (by keyword; see :func:`all_enqueued`): ``queue``, ``priority``, ``tags`` and ``meta``
    as the job options spell them, and these."""

    worker: Optional[WorkerRef]
    args: Optional[Mapping[str, Any]]
    state: StateFilter
    scheduled_at: Optional[datetime]
    delta: Seconds


_FILTER_NAMES = frozenset(EnqueuedFilter.__annotations__)
_RUN_OPTION_NAMES = frozenset(RunOptions.__annotations__)

_SHOWN = 20  # jobs listed in a failure message


def make_app(**options: Any) -> Kathikon:
    """An app for a test: in memory (``path=None``) on a manual clock (``clock="manual"``)
    unless ``options`` say otherwise; every other option as for :class:`Kathikon`. Close it
    after the test (the ``kathikon_app`` fixture does)."""
    return Kathikon(**{"path": None, "clock": "manual", **options})


# The app `kathikon_app` yields, set by use(); None: a new app per test.
_used: Optional[Kathikon] = None


def use(app: Optional[Kathikon]) -> None:
    """Make the ``kathikon_app`` fixture yield ``app``, the app your code creates at module
    level, instead of a new one per test; ``None`` goes back to new ones.

    Call it in ``conftest.py``, after setting ``os.environ["KATHIKON_TESTING"] = "manual"``
    (or ``"inline"``) and then importing the module that creates the app. The app keeps its
    registered workers (function workers too, which belong to the app they were decorated on)
    and gets an empty in-memory store before and after every test that uses the fixture, so
    tests do not see each other's jobs (ids restart at 1, the clock at now, a closed app is
    reopened). ``kathikon_app_options`` do not apply to it: configure the app itself.

    Raises:
        ConfigurationError: ``app`` is not in a testing mode (its jobs would go to its store
            file, or to a running worker).
        TypeError: ``app`` is not a :class:`~kathikon.Kathikon` app.
    """
    global _used
    if app is not None:
        app = _require_app(app, "use(")
        if app.testing is None:
            raise ConfigurationError(
                f"kathikon.testing.use({app!r}): the app is not in a testing mode, so tests "
                "would use its store file (or a running worker). In conftest.py, set "
                'os.environ["KATHIKON_TESTING"] = "manual" before importing the module that '
                'creates the app (or create it with testing="manual")'
            )
    _used = app


def used_app() -> Optional[Kathikon]:
    """The app given to :func:`use`, or ``None``."""
    return _used


def _require_app(app: object, call: str) -> Kathikon:
    """``app`` if it is a :class:`Kathikon` app, else a ``TypeError`` saying what to pass
    (for a worker handle given in its place: the app, with the worker by keyword), before
    anything deeper fails on it. ``call`` is how the caller was called, e.g. ``"drain_jobs("``
    or ``"perform_job(..., app="``."""
    if isinstance(app, Kathikon):
        return app
    if isinstance(app, (WorkerFunction, Worker)) or (
        isinstance(app, type) and issubclass(app, Worker)
    ):
        handle = app if isinstance(app, (WorkerFunction, type)) else type(app)
        name = handle.__name__
        raise TypeError(
            f"{call}{name}): {name} is a worker, not the app; pass the kathikon.Kathikon app "
            f"it is registered with (and the worker by keyword, e.g. worker={name})"
        )
    raise TypeError(f"{call}{app!r:.60}): pass a kathikon.Kathikon app")


# -- finding jobs ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Filter:
    """What the ``*_enqueued`` helpers were asked to look for, checked and normalised."""

    worker: Optional[str]
    args: Optional[dict[str, Any]]
    queue: Optional[str]
    states: Optional[tuple[str, ...]]
    priority: Optional[int]
    tags: Optional[list[str]]
    meta: Optional[dict[str, Any]]
    scheduled_at: Optional[datetime]
    delta: float

    def matches(self, job: Job, *, ignore_state: bool = False) -> bool:
        return (
            (self.worker is None or job.worker == self.worker)
            and (self.queue is None or job.queue == self.queue)
            and (ignore_state or self.states is None or job.state.value in self.states)
            and (self.priority is None or job.priority == self.priority)
            and (self.tags is None or all(tag in job.tags for tag in self.tags))
            and (self.args is None or _contains(job.args, self.args))
            and (self.meta is None or _contains(job.meta, self.meta))
            and (
                self.scheduled_at is None
                or abs((job.scheduled_at - self.scheduled_at).total_seconds()) <= self.delta
            )
        )

    def describe(self) -> str:
        parts = [
            f"{name}={value!r}"
            for name, value in (
                ("worker", self.worker),
                ("args", self.args),
                ("queue", self.queue),
                ("priority", self.priority),
                ("tags", self.tags),
                ("meta", self.meta),
            )
            if value is not None
        ]
        if self.scheduled_at is not None:
            parts.append(f"scheduled_at={self.scheduled_at.isoformat()} ± {self.delta:g} s")
        return f"{', '.join(parts) or 'any job'} ({_states_text(self.states)})"

    def line(self, job: Job) -> str:
        """One job, showing the fields this filter looks at."""
        text = f"#{job.id} {job.worker} queue={job.queue!r} state={job.state.value} "
        text += f"args={job.args!r}"
        if self.priority is not None:
            text += f" priority={job.priority}"
        if self.tags is not None:
            text += f" tags={job.tags!r}"
        if self.meta is not None:
            text += f" meta={job.meta!r}"
        if self.scheduled_at is not None or job.state.value in ("scheduled", "retryable"):
            text += f" scheduled_at={job.scheduled_at.isoformat()}"
        return text


def _states_text(states: Optional[tuple[str, ...]]) -> str:
    return "any state" if states is None else f"state {' or '.join(states)}"


def _contains(actual: Any, expected: Any) -> bool:
    """Whether JSON value ``actual`` has everything ``expected`` has: dicts as subsets (at
    every depth), lists element by element, ``True`` never equal to ``1``."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and _contains(actual[key], value) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(_contains(a, e) for a, e in zip(actual, expected))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and actual == expected
    return bool(actual == expected)


def _json_value(value: Optional[Mapping[str, Any]], what: str) -> Optional[dict[str, Any]]:
    """``value`` as a stored job would have it (checked as insert checks it)."""
    if value is None:
        return None
    decoded: dict[str, Any] = json.loads(encode_json(value, what))
    return decoded


def _states(state: StateFilter) -> Optional[tuple[str, ...]]:
    if state is None:
        return None
    items = [state] if isinstance(state, (str, JobState)) else list(state)
    out = []
    for item in items:
        try:
            out.append(JobState(item).value)
        except ValueError:
            raise InvalidJobError(
                f"state {item!r} is not a job state; use one of "
                f"{', '.join(s.value for s in JobState)}, a list of them, or None for any"
            ) from None
    if not out:
        raise InvalidJobError("state=[] matches nothing; pass None for any state")
    return tuple(dict.fromkeys(out))


def _worker_name(app: Kathikon, worker: Optional[WorkerRef]) -> Optional[str]:
    if worker is None or isinstance(worker, str):
        return worker
    return app._resolve(worker).name


def _build_filter(app: Kathikon, filters: EnqueuedFilter) -> _Filter:
    check_option_names(filters, _FILTER_NAMES)
    scheduled_at = filters.get("scheduled_at")
    if scheduled_at is not None and (
        not isinstance(scheduled_at, datetime) or scheduled_at.utcoffset() is None
    ):
        raise InvalidJobError(f"scheduled_at {scheduled_at!r} must be an aware datetime")
    priority = filters.get("priority")
    tags = filters.get("tags")
    return _Filter(
        worker=_worker_name(app, filters.get("worker")),
        args=_json_value(filters.get("args"), "args"),
        queue=filters.get("queue"),
        states=_states(filters.get("state", ENQUEUED_STATES)),
        priority=None if priority is None else check_priority(priority),
        tags=None if tags is None else check_tags(tags),
        meta=_json_value(filters.get("meta"), "meta"),
        scheduled_at=scheduled_at,
        delta=abs(seconds_of(filters.get("delta", 1.0), "delta")),
    )


def _stored(
    app: Kathikon,
    states: Optional[tuple[str, ...]],
    queue: Optional[str] = None,
    worker: Optional[str] = None,
) -> list[Job]:
    """Every stored job in ``states`` (all when ``None``), oldest first."""
    found: list[Job] = []
    for state in states if states is not None else (None,):
        after: Optional[int] = None
        while True:
            page = app.jobs(state=state, queue=queue, worker=worker, limit=1000, after=after)
            found.extend(page)
            if len(page) < 1000:
                break
            after = page[-1].id
    return sorted(found, key=lambda job: job.id)


def _listing(jobs: list[Job], flt: _Filter) -> str:
    lines = [f"  {flt.line(job)}" for job in jobs[:_SHOWN]]
    if len(jobs) > _SHOWN:
        lines.append(f"  … and {len(jobs) - _SHOWN} more")
    return "\n".join(lines)


def all_enqueued(
    app: Kathikon,
    **filters: Unpack[EnqueuedFilter],
) -> list[Job]:
    """The stored jobs matching every filter given, oldest first.

    Args:
        app: the app whose store to look in.

    Keyword Args:
        worker (WorkerRef): a ``@app.worker`` function, a registered :class:`Worker`, or a
            worker name.
        args (Mapping[str, Any]): matched as a subset: every key given must be there with an
            equal value; nested dicts are matched the same way, lists element by element.
            Checked as ``insert`` checks it, so a value no job could hold is an error, not a
            miss.
        queue (str): the queue's name.
        state (StateFilter): a state, a list of states, or ``None`` for any. Default:
            scheduled or available (waiting for their first run), as Oban.Testing does.
        priority (int): exactly this priority.
        tags (Iterable[str]): the job has all of these tags (and maybe more).
        meta (Mapping[str, Any]): matched as a subset, like ``args``.
        scheduled_at (datetime): an aware datetime the job is due at, give or take ``delta``
            seconds (default 1; with the manual clock, times are exact and ``delta=0`` works).

    Raises:
        InvalidJobError: a filter value is unusable (bad state, args not JSON, …).
        UnknownWorkerError: ``worker`` is a function or class not registered with ``app``.
    """
    app = _require_app(app, "all_enqueued(")
    flt = _build_filter(app, filters)
    return [job for job in _stored(app, flt.states, flt.queue, flt.worker) if flt.matches(job)]


def assert_enqueued(
    app: Kathikon,
    **filters: Unpack[EnqueuedFilter],
) -> Job:
    """Assert that at least one stored job matches (filters as for :func:`all_enqueued`) and
    return the oldest that does.

    Raises:
        AssertionError: none matches; the message lists the jobs that are there (in the
            states looked at), and any job that matches in another state.
    """
    app = _require_app(app, "assert_enqueued(")
    flt = _build_filter(app, filters)
    present = _stored(app, flt.states)
    for job in present:
        if flt.matches(job):
            return job
    message = f"Expected a job matching {flt.describe()}; none matched."
    if present:
        message += f"\nJobs in {_states_text(flt.states)} ({len(present)}):\n"
        message += _listing(present, flt)
    else:
        message += f"\nThere are no jobs in {_states_text(flt.states)}."
    if flt.states is not None:
        elsewhere = [
            job
            for job in _stored(app, None, flt.queue, flt.worker)
            if job.state.value not in flt.states and flt.matches(job, ignore_state=True)
        ]
        if elsewhere:
            message += (
                f"\nMatching jobs in other states ({len(elsewhere)}; pass state=... or "
                f"state=None to include them):\n{_listing(elsewhere, flt)}"
            )
    raise AssertionError(message)


def refute_enqueued(
    app: Kathikon,
    **filters: Unpack[EnqueuedFilter],
) -> None:
    """Assert that no stored job matches (filters as for :func:`all_enqueued`).

    Raises:
        AssertionError: some do; the message lists them.
    """
    app = _require_app(app, "refute_enqueued(")
    found = all_enqueued(app, **filters)
    if found:
        flt = _build_filter(app, filters)
        raise AssertionError(
            f"Expected no job matching {flt.describe()}; found {len(found)}:\n"
            + _listing(found, flt)
        )


# -- running jobs ------------------------------------------------------------------------


def _outcome(stored: Optional[Job]) -> str:
    if stored is None:  # the ack was stale: the job was cancelled while it ran
        return "cancelled"
    return "snoozed" if stored.state is JobState.SCHEDULED else stored.state.value


def drain_jobs(
    app: Kathikon,
    queue: Optional[str] = None,
    *,
    with_scheduled: Union[bool, datetime] = False,
    max_runs: int = MAX_DRAIN_RUNS,
) -> Counter[str]:
    """Run jobs in this thread until none is due, and count the attempts by outcome.

    Jobs that jobs insert, and retries or snoozes due at once, run too, so the queue is
    empty of due work when it returns. The clock does not move: move it with
    ``app.advance_clock(seconds)`` and drain again to run what became due.

    Args:
        app: the app to drain.
        queue: only this queue (default: every configured queue).
        with_scheduled: ``True`` also runs scheduled and retryable jobs now, as if their
            time had come, before every round — so a failing job is retried until it
            completes or uses up its attempts; an aware datetime runs those due by then.
            Promotion is store-wide (the store cannot promote one queue alone): with
            ``queue``, other queues' jobs become available too but do not run.
        max_runs: most attempts to run; more fails the test (a job snoozing forever,
            or failing with a zero backoff and many attempts, would never finish).

    Returns:
        A :class:`collections.Counter` of :data:`OUTCOMES` holding only the outcomes that
        happened, so ``drain_jobs(app) == {"completed": 2}`` is an exact check and
        ``counts["discarded"]`` is 0 when none was.

    Raises:
        UnknownQueueError: ``queue`` is not configured.
        AssertionError: more than ``max_runs`` attempts ran.
    """
    app = _require_app(app, "drain_jobs(")
    counts: Counter[str] = Counter()
    rounds = drain_rounds(app, queue, with_scheduled)
    runs = 0
    try:
        for ran in rounds:
            for _claimed, stored in ran:
                counts[_outcome(stored)] += 1
            runs += len(ran)
            if runs > max_runs:
                again = ", ".join(f"#{job.id} {job.worker}" for job, _ in ran[:5])
                raise AssertionError(
                    f"drain_jobs ran {runs} attempts (more than max_runs={max_runs}) and jobs "
                    f"keep becoming due (last: {again}); is a job snoozing forever, or failing "
                    "with a zero backoff? (with_scheduled=True runs snoozed and retried jobs "
                    f"again at once.) Outcomes so far: {dict(counts)}"
                )
    finally:
        rounds.close()
    return counts


@dataclass(frozen=True)
class PerformResult:
    """What :func:`perform_job` saw and what the job would become.

    Attributes:
        outcome: one of :data:`OUTCOMES`: the state the job would be in after this attempt
            (``snoozed``: scheduled again).
        job: the job the worker was given (never stored: its ``id`` is 0).
        value: what the worker returned (``None`` if it raised).
        error: what it raised (a ``Cancel``, ``Snooze`` or ``Discard`` too), or ``None``.
        reason: the text the job's ``errors`` would gain: the ``Cancel`` / ``Discard``
            reason, or a failure's traceback; ``None`` when completed or snoozed.
        snooze: seconds until a snoozed job runs again.
        retry_in: seconds until a ``retryable`` job runs again, as the worker's ``backoff``
            decided; ``None`` for the default backoff (15 s + 2^attempt s, ±10 % jitter).
    """

    outcome: str
    job: Job
    value: Any = None
    error: Optional[BaseException] = None
    reason: Optional[str] = None
    snooze: Optional[float] = None
    retry_in: Optional[float] = None


def _prepare(
    worker: WorkerRef,
    args: Optional[Mapping[str, Any]],
    app: Optional[Kathikon],
    attempt: int,
    options: RunOptions,
) -> tuple[Job, Registration]:
    """Check everything as ``insert`` would, then build the claimed job the worker gets."""
    check_option_names(options, _RUN_OPTION_NAMES)
    own: Optional[Kathikon] = None
    if app is not None:
        app = _require_app(app, "perform_job(..., app=")
    if app is None:
        if isinstance(worker, WorkerFunction):
            app = worker._app
        elif isinstance(worker, Worker) or (
            isinstance(worker, type) and issubclass(worker, Worker)
        ):
            # A throwaway app, so the class is registered and checked exactly as in production.
            queues = {worker.queue: 1}
            queue = options.get("queue")
            if queue is not None:
                queues[queue] = 1
            app = own = make_app(queues=queues)
        else:
            raise TypeError(
                f"perform_job({worker!r}, ...): pass app=... to run a worker given by name, "
                "or pass the @app.worker function or the kathikon.Worker class itself"
            )
    try:
        if own is not None:
            own.register(cast("Union[type[Worker], Worker]", worker))
        spec = app.new(worker, args, **options)
        reg = app._resolve(worker)
        now = app._engine.now()
    finally:
        if own is not None:
            own.close()
    max_attempts = spec.max_attempts
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise InvalidJobError(f"attempt {attempt!r} must be an int of at least 1")
    if attempt > max_attempts:
        raise InvalidJobError(
            f"attempt {attempt} is more than max_attempts {max_attempts}; a job never runs "
            "past its last attempt (pass max_attempts=... too)"
        )
    return unsaved_job(spec, attempt, now), reg


async def _call_async(reg: Registration, job: Job) -> tuple[Any, Optional[Exception]]:
    """Await an async worker as the runner does, enforcing its timeout."""
    try:
        coro = reg.perform(job)
        if reg.timeout is None:
            return await coro, None
        try:
            return await asyncio.wait_for(coro, reg.timeout), None
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"job {job.id} ({reg.name}) timed out after {reg.timeout:g} s"
            ) from None
    except Exception as exc:
        return None, exc


def _call_sync(reg: Registration, job: Job) -> tuple[Any, Optional[Exception]]:
    try:
        return reg.perform(job), None
    except Exception as exc:
        return None, exc


def _settle(
    job: Job,
    reg: Registration,
    started: float,
    value: Any,
    error: Optional[Exception],
    reraise: bool,
) -> PerformResult:
    """Apply the outcome rules the runner applies (:meth:`Attempt.settle`)."""
    if error is not None and not isinstance(error, JobOutcome) and reraise:
        raise error
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise AssertionError(
            f"worker {reg.name!r} returned {value!r}, which Kathikon does not await: it is "
            "registered as a sync worker, so the job would complete without running it. Is "
            "an `async def` hidden behind a decorator? (use functools.wraps)"
        )
    if isinstance(value, type) and issubclass(value, JobOutcome):
        raise AssertionError(
            f"worker {reg.name!r} returned the class {value.__name__}, which completes the "
            f"job; return an instance, e.g. {value.__name__}(...)"
        )
    run = Attempt(job, reg, started=started)
    _id, _attempt, kind, text, delay_us, _result = run.settle(result=value, error=error)
    delay = None if delay_us is None else delay_us / 1e6
    if kind == COMPLETE:
        return PerformResult("completed", job, value)
    if kind == SNOOZE:
        return PerformResult("snoozed", job, value, error, snooze=delay)
    if kind == CANCEL:
        return PerformResult("cancelled", job, value, error, reason=text)
    if kind == DISCARD:
        return PerformResult("discarded", job, value, error, reason=text)
    exhausted = job.attempt >= job.max_attempts
    if exhausted:
        return PerformResult("discarded", job, value, error, reason=text)
    return PerformResult("retryable", job, value, error, reason=text, retry_in=delay)


def perform_job(
    worker: WorkerRef,
    args: Optional[Mapping[str, Any]] = None,
    *,
    app: Optional[Kathikon] = None,
    attempt: int = 1,
    reraise: bool = True,
    **options: Unpack[RunOptions],
) -> PerformResult:
    """Run ``worker`` on ``args`` in this thread, now, without storing a job, and return
    what the job's attempt would end in.

    Everything is checked as ``insert`` checks it (the worker is registered, the queue
    exists, ``args`` and ``meta`` are JSON, …) and ``args`` reach the worker as a stored job
    would carry them (through JSON), so a test fails where production would. The worker gets
    a :class:`Job` in state ``executing`` (``id`` 0, times from the app's clock). Async
    workers run on a new event loop, their ``timeout`` enforced (inside a running loop,
    ``await aperform_job(...)`` instead). No telemetry is emitted and nothing is stored.

    Outcome rules, as the runner applies them: returning completes; returning or raising
    ``Cancel`` / ``Snooze`` / ``Discard`` does what they say; raising anything else
    re-raises it here by default (``reraise=True``: the test fails with the worker's own
    traceback, or checks it with ``pytest.raises``); with ``reraise=False`` it becomes
    ``retryable`` (with the worker's ``backoff``) or, on the last attempt, ``discarded``.
    A sync worker returning a coroutine, or an outcome class instead of an instance, fails
    with ``AssertionError``: production would silently complete the job.

    Args:
        worker: a ``@app.worker`` function (its app is used), a :class:`Worker` subclass
            (registered with ``app`` if given, else checked on its own), or a worker name
            (with ``app``).
        args: the job's args.
        app: the app the worker is registered with.
        attempt: the attempt number the job is on (1 = first run).
        reraise: re-raise what the worker raised (see above).

    Keyword Args:
        queue (str): as for ``insert``.
        priority (int): as for ``insert``.
        max_attempts (int): as for ``insert``.
        tags (Iterable[str]): as for ``insert``.
        meta (Mapping[str, Any]): as for ``insert``.
    """
    job, reg = _prepare(
        worker,
        args,
        app,
        attempt,
        options,
    )
    started = time.perf_counter()
    if reg.is_async:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            value, error = asyncio.run(_call_async(reg, job))
        else:
            raise RuntimeError(
                f"perform_job({reg.name!r}) was called inside a running event loop; in an "
                "async test use `await aperform_job(...)`"
            )
    else:
        value, error = _call_sync(reg, job)
    return _settle(job, reg, started, value, error, reraise)


async def aperform_job(
    worker: WorkerRef,
    args: Optional[Mapping[str, Any]] = None,
    *,
    app: Optional[Kathikon] = None,
    attempt: int = 1,
    reraise: bool = True,
    **options: Unpack[RunOptions],
) -> PerformResult:
    """:func:`perform_job` for async tests: awaits an async worker on the running loop
    (a sync worker runs in this thread, blocking the loop as it would block a test)."""
    job, reg = _prepare(
        worker,
        args,
        app,
        attempt,
        options,
    )
    started = time.perf_counter()
    if reg.is_async:
        value, error = await _call_async(reg, job)
    else:
        value, error = _call_sync(reg, job)
    return _settle(job, reg, started, value, error, reraise)


# -- the pytest plugin -------------------------------------------------------------------

if find_spec("pytest") is not None:  # the helpers above work without pytest
    from ._pytest_plugin import kathikon_app as kathikon_app
    from ._pytest_plugin import kathikon_app_options as kathikon_app_options
