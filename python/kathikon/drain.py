"""Running every due job in the calling thread until none is left, for tests:
:meth:`Kathikon.drain <kathikon.Kathikon.drain>` and :func:`kathikon.testing.drain_jobs`."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import Counter
from collections.abc import Coroutine, Generator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union

from .errors import InvalidJobError, UnknownQueueError
from .execute import AckTuple, Attempt, run_async, run_sync
from .job import Job, from_micros
from .queues import stored as stored_queue_settings
from .vocabulary import IGNORED

if TYPE_CHECKING:
    from .app import Kathikon

_T = TypeVar("_T")
# One round's `(job as claimed, job after its outcome)` pairs; `None` after: the ack was stale.
Round = list[tuple[Job, Optional[Job]]]


def drain(
    app: Kathikon, queue: Optional[str], with_scheduled: Union[bool, datetime]
) -> dict[str, int]:
    """:meth:`Kathikon.drain`: run rounds until none runs anything, and count the attempts
    by the state each one left its job in."""
    counts: Counter[str] = Counter()
    for ran in drain_rounds(app, queue, with_scheduled):
        for _claimed, stored in ran:
            counts[stored.state.value if stored is not None else IGNORED] += 1
    return dict(counts)


def drain_rounds(
    app: Kathikon, queue: Optional[str], with_scheduled: Union[bool, datetime]
) -> Generator[Round, None, None]:
    """Check :meth:`Kathikon.drain`'s arguments, then run due jobs in rounds (one claimed
    batch per queue each), yielding each round until a round runs nothing. Closing the
    generator ends the drain."""
    if queue is not None and queue not in app.config.queues and not app._started_at_runtime(queue):
        raise UnknownQueueError(f"queue {queue!r} is not configured in this app")
    # Queues started at runtime too. A paused queue's claims take nothing, so its jobs wait
    # for the resume here as they do for workers.
    queues = list(app.config.queues) + _runtime_started(app) if queue is None else [queue]
    if with_scheduled is True:
        until: Optional[int] = 2**63 - 1
    elif with_scheduled is False:
        until = None
    elif isinstance(with_scheduled, datetime) and with_scheduled.utcoffset() is not None:
        until = (with_scheduled - from_micros(0)) // timedelta(microseconds=1)
    else:
        raise InvalidJobError(
            f"with_scheduled={with_scheduled!r}: pass True, False or an aware datetime"
        )
    return _drain_loop(app, queues, until)


def _drain_loop(
    app: Kathikon, queues: list[str], until: Optional[int]
) -> Generator[Round, None, None]:
    engine = app._engine
    loop: Optional[asyncio.AbstractEventLoop] = None
    try:
        while True:
            engine.sync(until)  # promotes everything due (as of `until`, if later)
            ran: Round = []
            for name in queues:
                attempts: list[Attempt] = []
                acks: list[AckTuple] = []
                try:
                    for job in engine.claim(name, 100, 0.0):
                        attempt = Attempt(job, app._workers.get(job.worker))
                        reg = attempt.registration
                        if reg is not None and reg.is_async:
                            loop = loop or asyncio.new_event_loop()
                            ack = _run_to_completion(loop, run_async(attempt))
                        else:
                            ack = run_sync(attempt)
                        attempts.append(attempt)
                        acks.append(ack)
                finally:
                    # One commit for the whole claimed batch, also when the batch was cut
                    # short, so jobs that ran are never left executing.
                    stored = engine.ack(acks) if acks else []
                for attempt, after in zip(attempts, stored):
                    attempt.report(after)
                    ran.append((attempt.job, after))
            if not ran:
                return
            yield ran
    finally:
        if loop is not None:
            loop.close()


def _run_to_completion(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on ``loop``; when this thread already runs an event loop (Jupyter, an
    async test), run it on ``loop`` in a helper thread instead, since a loop cannot be
    re-entered."""
    if asyncio._get_running_loop() is None:
        return loop.run_until_complete(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kathikon-drain") as pool:
        return pool.submit(loop.run_until_complete, coro).result()


def _runtime_started(app: Kathikon) -> list[str]:
    """Queues started with ``start_queue`` that the app does not declare."""
    return sorted(
        name
        for name, settings in stored_queue_settings(app._engine)[1].items()
        if settings.started is not None and name not in app.config.queues
    )
