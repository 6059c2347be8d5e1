"""The background runner: per queue, one dispatcher thread claims jobs while the queue has
free slots and hands them to a thread pool (sync workers) or to the app's asyncio loop (async
workers). The engine's claim call waits with the GIL released and is woken the moment a job
lands, so idle queues cost nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Optional

from . import telemetry
from ._native import Engine
from .errors import EngineClosedError, KathikonError
from .execute import AckTuple, Attempt, run_async, run_sync
from .job import Job

if TYPE_CHECKING:
    from .app import Kathikon

log = logging.getLogger("kathikon")
POLL = ("kathikon", "dispatcher", "poll")


class Slots:
    """How many jobs of one queue run now, bounded by its concurrency."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._cond = threading.Condition()

    def wait_free(self, timeout: float) -> int:
        with self._cond:
            if self.running >= self.limit:
                self._cond.wait(timeout)
            return max(0, self.limit - self.running)

    def take(self, n: int) -> None:
        with self._cond:
            self.running += n

    def release(self) -> None:
        with self._cond:
            self.running -= 1
            self._cond.notify_all()

    def wait_idle(self, deadline: float) -> bool:
        with self._cond:
            while self.running > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True


class Runner:
    def __init__(self, app: Kathikon) -> None:
        self._app = app
        self._engine: Engine = app._engine
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._slots: dict[str, Slots] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._loop_lock = threading.Lock()
        self._tasks: dict[int, concurrent.futures.Future[None]] = {}

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        for queue, concurrency in self._app.config.queues.items():
            self._slots[queue] = Slots(concurrency)
            self._pools[queue] = ThreadPoolExecutor(
                max_workers=concurrency, thread_name_prefix=f"kathikon-{queue}"
            )
            t = threading.Thread(
                target=self._dispatch, args=(queue,), name=f"kathikon-dispatch-{queue}", daemon=True
            )
            self._threads.append(t)
            t.start()

    def stop(self, timeout: float) -> bool:
        """Stop claiming, wait up to ``timeout`` s for running jobs; True if all finished."""
        self._stopping.set()
        for queue in self._slots:
            self._engine.interrupt(queue)
        for t in self._threads:
            t.join()
        deadline = time.monotonic() + timeout
        idle = all(slots.wait_idle(deadline) for slots in self._slots.values())
        for pool in self._pools.values():
            pool.shutdown(wait=False)
        loop = self._loop
        if loop is not None:
            # Jobs still running past the grace period stay executing in the store and are
            # rescued at the next open; cancel their tasks so the loop can stop.
            loop.call_soon_threadsafe(_cancel_all, loop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)
        return idle

    # -- dispatching ---------------------------------------------------------------------

    def _dispatch(self, queue: str) -> None:
        slots = self._slots[queue]
        poll = self._app.config.poll_interval
        while not self._stopping.is_set():
            free = slots.wait_free(poll)
            if free == 0 or self._stopping.is_set():
                continue
            try:
                records = self._engine.claim(queue, free, poll)
            except EngineClosedError:
                return
            except KathikonError:
                log.exception("claiming from queue %r failed; retrying in %s s", queue, poll)
                self._stopping.wait(poll)
                continue
            if telemetry.has_handlers(POLL):
                telemetry.execute(POLL, {"claimed": len(records), "demand": free}, {"queue": queue})
            if not records:
                continue
            slots.take(len(records))
            for record in records:
                job = Job(record)
                attempt = Attempt(job, self._app._workers.get(job.worker))
                reg = attempt.registration
                if reg is not None and reg.is_async:
                    loop = self._event_loop()
                    future = asyncio.run_coroutine_threadsafe(self._run_async(attempt, slots), loop)
                    self._tasks[job.id] = future
                else:
                    self._pools[queue].submit(self._run_sync, attempt, slots)

    def _run_sync(self, attempt: Attempt, slots: Slots) -> None:
        try:
            self._ack(attempt, run_sync(attempt))
        finally:
            slots.release()

    async def _run_async(self, attempt: Attempt, slots: Slots) -> None:
        try:
            ack = await run_async(attempt)
            await asyncio.get_running_loop().run_in_executor(None, self._ack, attempt, ack)
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.pop(attempt.job.id, None)
            slots.release()

    def _ack(self, attempt: Attempt, ack: AckTuple) -> None:
        try:
            (stored,) = self._engine.ack([ack])
        except KathikonError:
            # The job stays executing in the store and is rescued at the next open.
            log.exception("recording the outcome of job %s failed", attempt.job.id)
            return
        attempt.report(Job(stored) if stored is not None else None)

    def cancel_running(self, job_id: int) -> bool:
        """Cancel an async job running here; sync jobs cannot be interrupted (their late
        result is refused by the engine)."""
        future = self._tasks.get(job_id)
        if future is None:
            return False
        return future.cancel()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.close()

                self._loop_thread = threading.Thread(
                    target=run, name="kathikon-asyncio", daemon=True
                )
                self._loop_thread.start()
                ready.wait()
                self._loop = loop
            return self._loop


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()

    async def finish() -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        loop.stop()

    loop.create_task(finish())
