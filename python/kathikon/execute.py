"""Running one claimed job: call the worker, turn what happened into an outcome for the
engine, and report telemetry. Shared by the background runner and ``app.drain``."""

from __future__ import annotations

import asyncio
import inspect
import time
import traceback
from dataclasses import dataclass
from typing import Any, Optional

from . import telemetry
from .job import Job, JobState
from .outcomes import Cancel, Discard, JobOutcome, Snooze
from .results import kept
from .vocabulary import CANCEL, COMPLETE, DISCARD, FAIL, IGNORED, INTERRUPT, SNOOZE
from .worker import Registration

# (id, attempt, kind, text, delay_us, result): the native ack format; ``result`` is the
# value a completed job keeps, as JSON text (``text`` then says why one was not kept).
AckTuple = tuple[int, int, str, Optional[str], Optional[int], Optional[str]]

START = ("kathikon", "job", "start")
STOP = ("kathikon", "job", "stop")
# A snooze is told under two names with the same measurements and metadata: ``snooze`` and
# ``sleep`` (the seed's event vocabulary's name for a job put to sleep until a later time),
# so a handler of either name sees it.
OUTCOME_EVENTS: dict[str, tuple[telemetry.Event, ...]] = {
    FAIL: (("kathikon", "job", "retry"),),
    SNOOZE: (("kathikon", "job", "snooze"), telemetry.SLEEP_EVENT),
    CANCEL: (("kathikon", "job", "cancel"),),
    DISCARD: (("kathikon", "job", "discard"),),
}


@dataclass
class Attempt:
    """One run of one job: what was claimed, what it produced, how long it took."""

    job: Job
    registration: Optional[Registration]
    started: float = 0.0
    duration: float = 0.0
    ack: Optional[AckTuple] = None
    # Set by the runner before it cancels the job's task (app.cancel, shutdown). A
    # CancelledError nobody asked for is the job's own exception: its attempt failed.
    cancel_requested: bool = False

    def begin(self) -> None:
        self.started = time.perf_counter()
        if telemetry.has_handlers(START):
            telemetry.execute(START, {"queue_time": self.queue_time()}, {"job": self.job})

    def queue_time(self) -> float:
        attempted = self.job.attempted_at
        return (attempted - self.job.scheduled_at).total_seconds() if attempted else 0.0

    def settle(self, result: Any = None, error: Optional[BaseException] = None) -> AckTuple:
        """Turn the callback's return value or exception into the ack for the engine."""
        # Not begun: run unwatched (run_sync_unwatched), where nothing reads the duration.
        self.duration = time.perf_counter() - self.started if self.started else 0.0
        job = self.job
        outcome = error if isinstance(error, JobOutcome) else result
        if isinstance(outcome, Cancel):
            ack: AckTuple = (job.id, job.attempt, CANCEL, outcome.reason, None, None)
        elif isinstance(outcome, Discard):
            ack = (job.id, job.attempt, DISCARD, outcome.reason, None, None)
        elif isinstance(outcome, Snooze):
            ack = (job.id, job.attempt, SNOOZE, None, round(outcome.seconds * 1e6), None)
        elif error is not None:
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            ack = (job.id, job.attempt, FAIL, text, self.retry_delay(), None)
        else:
            reg = self.registration
            why, kept_json = kept(result, reg.result_limit if reg is not None else None)
            ack = (job.id, job.attempt, COMPLETE, why, None, kept_json)
        self.ack = ack
        return ack

    def fail_unregistered(self) -> AckTuple:
        self.duration = 0.0
        job = self.job
        self.ack = (
            job.id,
            job.attempt,
            FAIL,
            f"worker {job.worker!r} is not registered in this app; register it "
            "(@app.worker or app.register) in the process that runs queue "
            f"{job.queue!r}. The job will be retried.",
            None,
            None,
        )
        return self.ack

    def retry_delay(self) -> Optional[int]:
        """µs before a failed attempt's retry, by the worker's ``backoff``; ``None``: the
        default backoff."""
        reg = self.registration
        if reg is None or reg.backoff is None:
            return None
        try:
            seconds = reg.backoff(self.job)
        except Exception:  # a broken backoff must not lose the job: use the default
            return None
        if seconds is None:
            return None
        return max(0, round(float(seconds) * 1e6))

    def report_sent(self) -> None:
        """Emit stop for an outcome sent without waiting for the stored result."""
        if self.ack is not None and telemetry.has_handlers(STOP):
            telemetry.execute(
                STOP,
                {"duration": self.duration, "queue_time": self.queue_time()},
                self._stop_metadata(self.ack[2]),
            )

    def _stop_metadata(self, outcome: str) -> dict[str, Any]:
        """The stop event's metadata: ``error`` is the failure's traceback, the ``Cancel`` /
        ``Discard`` reason, or why a completed job's value was not kept (else None),
        ``registered`` whether this process knows the job's worker."""
        assert self.ack is not None
        return {
            "job": self.job,
            "outcome": outcome,
            "error": self.ack[3],
            "registered": self.registration is not None,
        }

    def report(self, stored: Optional[Job]) -> None:
        """Emit stop and the outcome's event; ``stored`` is the job after the ack (None if
        the ack was stale, e.g. the job was cancelled while it ran)."""
        if self.ack is None:
            return
        kind = self.ack[2]
        if telemetry.has_handlers(STOP):
            telemetry.execute(
                STOP,
                {"duration": self.duration, "queue_time": self.queue_time()},
                self._stop_metadata(kind if stored is not None else IGNORED),
            )
        if stored is None:
            return
        if kind == FAIL and stored.state is JobState.DISCARDED:
            kind = DISCARD
        events = OUTCOME_EVENTS.get(kind)
        if events is None or not any(map(telemetry.has_handlers, events)):
            return
        measurements: dict[str, Any] = {"duration": self.duration}
        metadata: dict[str, Any] = {"job": stored}
        if kind in (FAIL, SNOOZE):
            delay = stored.scheduled_at - (stored.attempted_at or stored.scheduled_at)
            measurements["delay"] = max(0.0, delay.total_seconds())
        if kind == FAIL:
            metadata["error"] = self.ack[3]
        if kind in (CANCEL, DISCARD):
            errors = stored.errors
            metadata["reason"] = errors[-1]["error"] if errors else None
        for event in events:
            telemetry.execute(event, measurements, metadata)


def report_interrupted(job: Job, stored: Optional[Job], duration: float) -> None:
    """Emit stop for a job the shutdown handed back (``interrupt``; ``ignored`` if the store
    refused it because the job had moved on, e.g. was cancelled meanwhile)."""
    if telemetry.has_handlers(STOP):
        queue_time = Attempt(job, None).queue_time()
        telemetry.execute(
            STOP,
            {"duration": duration, "queue_time": queue_time},
            {
                "job": job,
                "outcome": INTERRUPT if stored is not None else IGNORED,
                "error": None,
                "registered": True,
            },
        )


def run_sync(attempt: Attempt) -> AckTuple:
    """Run a sync worker in this thread."""
    reg = attempt.registration
    if reg is None:
        return attempt.fail_unregistered()
    attempt.begin()
    try:
        result = reg.perform(attempt.job)
    except BaseException as exc:
        return attempt.settle(error=exc)
    return _settle_sync(attempt, result)


def run_sync_unwatched(job: Job, reg: Registration) -> AckTuple:
    """:func:`run_sync` for when no telemetry handler listens to job events (the runner
    checks per batch): nothing is timed or reported, so a job that returns ``None``, the
    common case, completes without an :class:`Attempt`. Outcomes are as with ``run_sync``."""
    try:
        result = reg.perform(job)
    except BaseException as exc:
        return Attempt(job, reg).settle(error=exc)
    if result is None:
        return (job.id, job.attempt, COMPLETE, None, None, None)
    return _settle_sync(Attempt(job, reg), result)


def _settle_sync(attempt: Attempt, result: Any) -> AckTuple:
    """The ack for what a sync worker returned."""
    reg = attempt.registration
    assert reg is not None
    if inspect.isawaitable(result):
        # A sync callable that returns a coroutine (a lambda or a decorator without
        # functools.wraps around an `async def`): its body never ran, so completing the job
        # would lose the work silently. Fail the attempt instead, saying why.
        if inspect.iscoroutine(result):
            result.close()
        return attempt.settle(
            error=TypeError(
                f"worker {reg.name!r} returned {type(result).__name__} {result!r:.80} instead of "
                "running: it is registered as a sync function, so nothing awaited it. Make it "
                "`async def` (or wrap the async function with functools.wraps)."
            )
        )
    return attempt.settle(result=result)


async def run_async(attempt: Attempt) -> AckTuple:
    """Run an async worker on the current event loop, enforcing its timeout."""
    reg = attempt.registration
    if reg is None:
        return attempt.fail_unregistered()
    attempt.begin()
    try:
        coro = reg.perform(attempt.job)
        if reg.timeout is not None:
            try:
                # Before Python 3.12 wait_for runs the coroutine in a task of its own, and a
                # task re-raises KeyboardInterrupt and SystemExit out of the event loop (the
                # drain or the runner's loop thread would die with the job left executing):
                # catch them inside that task and hand them over as values.
                failed, result = await asyncio.wait_for(_caught(coro), reg.timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(
                    f"job {attempt.job.id} ({reg.name}) timed out after {reg.timeout:g} s"
                ) from None
            if failed:
                raise result
        else:
            result = await coro
    except asyncio.CancelledError as exc:
        # Cancelled by app.cancel (the store already says cancelled) or by a shutdown whose
        # grace period ran out (which hands the job back itself): nothing to ack here.
        if attempt.cancel_requested:
            raise
        # Raised by the job itself (nothing cancelled its task): a failure like any other,
        # not a reason to leave the job executing for as long as this process lives.
        return attempt.settle(error=exc)
    except BaseException as exc:
        return attempt.settle(error=exc)
    return attempt.settle(result=result)


async def _caught(coro: Any) -> tuple[bool, Any]:
    """Await ``coro``; ``(True, exc)`` if it raised anything but a cancellation, else
    ``(False, result)``."""
    try:
        return False, await coro
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return True, exc
