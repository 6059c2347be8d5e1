"""The background runner.

Sync jobs run on *lanes*: threads that each claim jobs, run them one after another and
acknowledge them in one call per batch. While the queues' concurrency adds up to at most
:data:`MAX_THREADS`, each queue has ``concurrency`` lanes of its own, each waiting in the
engine's claim on that queue. Beyond it, :data:`MAX_THREADS` lanes are shared by all the
queues and one watcher thread waits for any of them to have jobs
(:mod:`kathikon.ready_queues`), so threads follow the concurrency that can run, not the
number of queues; each queue's :class:`Slots` still bound how many of its jobs run at once.
A lane claims more than one job at a time only while jobs are finishing fast: it sizes its
next claim so that the batch takes about :data:`PREFETCH_BUDGET` seconds at the pace it has
measured (capped at :data:`MAX_BATCH`; :data:`CLIENT_PREFETCH_BUDGET` in a process that uses
another process's store). Slow
jobs are therefore claimed one at a time and never wait behind each other, while no-op-sized
jobs share one fsync per batch instead of paying one each.

Async jobs run on the app's asyncio loop thread; a queue's :class:`Slots` bound sync and async
jobs together. A lane hands its claimed async jobs to the loop in one hop and waits until the
loop has started them all; the loop starts each as a slot frees, with no thread in between,
and sends the outcomes of all the jobs that finished in one pass of the loop in one call. The
engine's claim waits with the GIL released and is woken as soon as a job lands, so idle queues
cost nothing.

Queues change at runtime (:mod:`kathikon.queues`): a settings thread looks at the store's
queue settings every :data:`kathikon.queues.SETTINGS_POLL` seconds and, when they changed,
sets each queue's :class:`Slots` limit to its new concurrency, spawns lanes for a queue
scaled up or started, and leaves the lanes past a lowered limit idle (0 for a stopped queue).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Optional

from . import handback, telemetry
from . import queues as _queues
from ._native import Engine
from .errors import ConfigurationError, EngineClosedError, KathikonError, OwnerGoneError
from .execute import (
    OUTCOME_EVENTS,
    START,
    STOP,
    AckTuple,
    Attempt,
    report_interrupted,
    run_async,
    run_sync,
    run_sync_unwatched,
)
from .job import Job
from .ready_queues import ReadyQueues

if TYPE_CHECKING:
    from .app import Kathikon
    from .worker import Registration

log = logging.getLogger("kathikon")
POLL = ("kathikon", "dispatcher", "poll")
#: Longest a lane's claimed-ahead jobs are expected to wait for their turn, in seconds.
PREFETCH_BUDGET = 0.002
#: The same, in a process that is a client of the store's owner (a worker process): each
#: claim there is a round trip plus a commit in the owner, whose CPU the worker processes
#: share, so a claim is made to serve more jobs: with short CPU-bound jobs, two worker
#: processes gain little over one at 2 ms and most of what they can at 20 ms
#: (measured: ``benches/RESULTS-archive.md``).
CLIENT_PREFETCH_BUDGET = 0.02
#: The soonest a sync job stopped by its timeout is retried, µs: its worker process ends
#: within milliseconds of storing the failure, so the retry goes to another process.
TIMED_OUT_RETRY_FLOOR_US = 1_000_000
#: Most jobs a lane claims at once.
MAX_BATCH = 256
#: Most lanes a runner starts by default: queues whose concurrency adds up to more share this
#: many lanes. Each lane is an OS thread with its own stack, so 10,000 queues must not mean
#: 10,000 threads; but an app that asks one queue for 100 threads of I/O-bound sync jobs (as
#: Celery and RQ users do) gets them, each waiting in its own claim, which is also the fastest
#: way to drain one busy queue (async jobs run on the event loop and are not bound by it).
MAX_THREADS = max(256, 8 * (os.cpu_count() or 1))


class Slots:
    """How many jobs of one queue run now, bounded by its concurrency."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._cond = threading.Condition()
        #: Called after each release (outside the lock): the runner starts async jobs
        #: waiting for a slot.
        self.on_release: Optional[Callable[[], None]] = None

    def take_up_to(self, n: int) -> int:
        """Take as many free slots as there are, up to ``n``; returns how many."""
        with self._cond:
            taken = max(0, min(n, self.limit - self.running))
            self.running += taken
            return taken

    def take(self) -> None:
        """Wait for a free slot and take it, for a job already claimed: one runs even while
        the queue is stopped (limit 0), so claimed jobs finish instead of waiting for ever."""
        with self._cond:
            while self.running >= max(self.limit, 1):
                self._cond.wait(0.5)
            self.running += 1

    def take_claimed(self, n: int) -> int:
        """:meth:`take_up_to` for jobs already claimed (async ones waiting on the loop): as
        :meth:`take`, one runs even while the queue is stopped."""
        with self._cond:
            taken = max(0, min(n, max(self.limit, 1) - self.running))
            self.running += taken
            return taken

    def set_limit(self, limit: int) -> None:
        """A new concurrency (scaled, started or stopped at runtime): wakes every waiter."""
        with self._cond:
            self.limit = limit
            self._cond.notify_all()

    def wait_for_lane(self, lane: int, timeout: float) -> None:
        """Wait up to ``timeout`` s until lane number ``lane`` is within the limit."""
        with self._cond:
            if lane >= self.limit:
                self._cond.wait(timeout)

    def release(self, n: int = 1) -> None:
        with self._cond:
            self.running -= n
            self._cond.notify(n)
        if self.on_release is not None:
            self.on_release()

    def wait_idle(self, deadline: float) -> bool:
        with self._cond:
            while self.running > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True


class Runner:
    def __init__(
        self,
        app: Kathikon,
        queues: Optional[dict[str, int]] = None,
        max_threads: Optional[int] = None,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        self._app = app
        # The queues this runner was asked to run, at their configured concurrency; what it
        # runs is these with the runtime settings applied (`_plan`), and queues started at
        # runtime. `share`: (this process's index, processes) in a pool, which splits a
        # runtime concurrency as it splits configured ones.
        self._queues = dict(app.config.queues) if queues is None else queues
        self._share = share
        # Dedicated lanes spawned per queue; held while queues change (and while stopping).
        self._lanes: dict[str, int] = {}
        self._changes = threading.Lock()
        self._max_threads = MAX_THREADS if max_threads is None else max_threads
        # Set when lanes are shared by the queues; then per queue, the next claim's size and
        # the smoothed seconds per job (a dedicated lane keeps its own).
        self._ready: Optional[ReadyQueues] = None
        self._demand: dict[str, int] = {}
        self._pace: dict[str, float] = {}
        self._engine: Engine = app._engine
        # Sync jobs are stopped (past their timeout, or cancelled with cancel="kill") in
        # worker processes, which may end themselves.
        self._stops = app._in_worker_process
        if not self._stops:
            refuse_sync_stops(app, self._queues)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._slots: dict[str, Slots] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._loop_lock = threading.Lock()
        # The async jobs running on the loop, by job id.
        self._running: dict[int, tuple[Attempt, asyncio.Task[None]]] = {}
        # Loop thread only: per queue, async jobs handed over by lanes and waiting for a
        # slot, each with the event its lane waits on when it is the last of a hand-over.
        self._waiting: dict[str, deque[tuple[Attempt, Optional[threading.Event]]]] = {}
        # Loop thread only: finished async jobs whose outcomes the next flush sends.
        self._finished: list[tuple[Attempt, AckTuple, str]] = []
        # Per queue, for lanes to size their claims of async jobs by: jobs the loop
        # finishes per second and how long one runs (both smoothed), and when the last
        # ones finished.
        self._async_rate: dict[str, float] = {}
        self._async_run_time: dict[str, float] = {}
        self._async_done_at: dict[str, float] = {}
        # Shutdown hand-back (see kathikon.handback): the batches lanes are working through,
        # and whether the grace period ran out (then the shutdown owns what lanes hold).
        # Both change only under the lock; lanes read `_abandoned` without it.
        self._handback = threading.Lock()
        self._batches: set[handback.LaneBatch] = set()
        self._abandoned = False
        self._grace = 0.0
        # Set (under the lock) by the first lane that finds the store stopped writing.
        self._store_failed = False
        # Loop thread only, filled as the shutdown cancels them: async jobs to hand back.
        self._async_back: list[Job] = []
        #: The jobs the last :meth:`stop` handed back as interrupted by shutdown.
        self.interrupted: list[Job] = []
        # The owner whose going away was last logged, so that the lanes that all meet it log
        # one line (an owner change is routine: a deploy stops the owner).
        self._owner_change_lock = threading.Lock()
        self._owner_gone_noted: Optional[int] = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        shared = sum(self._queues.values()) > self._max_threads
        try:
            seen, plan = self._plan()
        except KathikonError:
            log.exception("reading the queues' runtime settings failed; using the configured")
            seen, plan = None, dict(self._queues)
        for queue, concurrency in plan.items():
            self._slots[queue] = Slots(concurrency)
        if shared:
            poll = self._app.config.poll_interval
            self._ready = ReadyQueues(self._engine, self._slots, poll, self._stopping)
            self._ready.set_queues([q for q, s in self._slots.items() if s.limit > 0])
        for queue, slots in self._slots.items():
            slots.on_release = self._release_hook(queue)
            if not shared:
                self._add_lanes(queue, slots.limit)
        self._spawn(self._watch_settings, (seen,), "kathikon-queues")
        if self._ready is not None:
            self._spawn(self._ready.watch, (), "kathikon-watcher")
            for lane in range(self._max_threads):
                self._spawn(self._shared_lane, (self._ready,), f"kathikon-lane-{lane}")

    def _add_lanes(self, queue: str, concurrency: int) -> None:
        """Dedicated lanes for ``queue`` up to ``concurrency`` (those already spawned stay;
        lanes past a lowered limit idle)."""
        have = self._lanes.get(queue, 0)
        want = min(concurrency, self._max_threads)
        for lane in range(have, want):
            self._spawn(self._lane, (queue, lane), f"kathikon-{queue}-{lane}")
        self._lanes[queue] = max(have, want)

    # -- queues at runtime -----------------------------------------------------------------

    def _plan(self) -> tuple[tuple[int, int], dict[str, int]]:
        """What the settings say now: the generations seen and each queue's concurrency."""
        generation, settings = _queues.stored(self._engine)
        local = self._app._local_queues
        seen = (generation, local.generation)
        return seen, _queues.plan(self._queues, settings, local.all(), self._share)

    def _watch_settings(self, seen: Optional[tuple[int, int]]) -> None:
        """The settings thread: apply changed runtime settings within a poll."""
        while not self._stopping.wait(_queues.SETTINGS_POLL):
            try:
                now, plan = self._plan()
            except EngineClosedError:
                return
            except KathikonError:
                continue  # the owner is changing hands, say: the next look retries
            if now != seen:
                seen = now
                self._apply(plan)

    def _apply(self, plan: dict[str, int]) -> None:
        """Run each queue at its planned concurrency from now on."""
        with self._changes:
            if self._stopping.is_set():
                return
            for queue in self._slots:
                plan.setdefault(queue, 0)  # no longer run here (its runtime start was undone)
            for queue, concurrency in plan.items():
                slots = self._slots.get(queue)
                if slots is None:
                    slots = Slots(concurrency)
                    slots.on_release = self._release_hook(queue)
                    self._slots[queue] = slots
                elif slots.limit == concurrency:
                    continue
                else:
                    lowered = concurrency < slots.limit
                    slots.set_limit(concurrency)
                    if lowered:
                        # Lanes past the new limit stop waiting in a claim at once.
                        self._engine.interrupt(queue)
                log.info("queue %r now runs at concurrency %d here", queue, concurrency)
                if self._ready is None:
                    self._add_lanes(queue, concurrency)
            if self._ready is not None:
                self._ready.set_queues([q for q, s in self._slots.items() if s.limit > 0])
                self._ready.wake_all()

    def _spawn(self, target: Callable[..., None], args: tuple[object, ...], name: str) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def stop(self, timeout: float) -> bool:
        """Stop claiming and wait up to ``timeout`` s for running and claimed jobs; True if
        all finished. Jobs still held then are handed back as interrupted by shutdown (due
        again, the attempt not counted; listed in :attr:`interrupted`). Outcomes sent so far
        are committed before this returns."""
        self._grace = timeout
        with self._changes:
            self._stopping.set()  # no queue change spawns lanes from here on
        for queue in self._slots:
            self._engine.interrupt(queue)
        if self._ready is not None:
            self._ready.wake_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        idle = not any(t.is_alive() for t in self._threads)
        idle = all(slots.wait_idle(deadline) for slots in self._slots.values()) and idle
        taken = [] if idle else self._take_batches()
        loop = self._loop
        if loop is not None:
            # Async jobs still running past the grace period are cancelled (and handed back
            # below), so the loop can stop.
            loop.call_soon_threadsafe(self._cancel_all, loop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)
        if taken or self._async_back:
            self._hand_back(taken, timeout)
        try:
            self._engine.sync()
        except KathikonError:
            log.exception("committing the last outcomes failed")
        return idle

    def _take_batches(self) -> list[tuple[handback.LaneBatch, int, int, int]]:
        """Mark the runner abandoned and take every lane's batch, with its counters as they
        stand: from here on the shutdown reports them and lanes start no further job."""
        with self._handback:
            self._abandoned = True
            taken = [(b, b.started, len(b.acks), b.handed) for b in self._batches]
            for batch, *_ in taken:
                batch.taken = True
            self._batches.clear()
        return taken

    def _hand_back(
        self, taken: list[tuple[handback.LaneBatch, int, int, int]], grace: float
    ) -> None:
        """Send the finished outcomes of the taken batches and hand back every job this
        runner still held (lanes' and the loop's) as interrupted by shutdown."""
        is_async = handback.async_workers(self._app._workers)
        back: list[Job] = []
        for batch, started, acked, handed in taken:
            attempts, finished, rest = batch.settle(is_async, started, acked, handed)
            if finished:
                self._ack(attempts, finished)
            back += rest
        back += self._async_back
        if not back:
            return
        acks = handback.interrupt_acks(back, handback.interrupt_reason(grace))
        try:
            stored = self._engine.ack(acks, wait=True)
        except KathikonError:
            log.exception(
                "handing back %d interrupted job(s) failed; they stay executing and are "
                "rescued at the next open: %s",
                len(back),
                handback.describe(back),
            )
            return
        self.interrupted = [job for job, after in zip(back, stored) if after is not None]
        for job, after in zip(back, stored):
            report_interrupted(job, after, handback.running_for(job))
        if self.interrupted:
            log.warning(
                "grace period of %s s ran out: %d job(s) interrupted by shutdown and handed "
                "back (due again, the attempt not counted): %s",
                f"{grace:g}",
                len(self.interrupted),
                handback.describe(self.interrupted),
            )

    # -- lanes ---------------------------------------------------------------------------

    def _lane(self, queue: str, lane: int) -> None:
        slots = self._slots[queue]
        poll = self._app.config.poll_interval
        batch = 1
        pace: Optional[float] = None  # seconds per job, smoothed
        while not self._stopping.is_set():
            if lane >= slots.limit:
                # Past the queue's concurrency (scaled down or stopped): claim nothing.
                slots.wait_for_lane(lane, poll)
                continue
            try:
                records = self._engine.claim(queue, batch, poll)
            except EngineClosedError:
                return
            except OwnerGoneError:
                # The next call goes to the next owner (or makes this process the owner).
                self._note_owner_change(f"claiming from queue {queue!r}")
                continue
            except KathikonError:
                if self._store_stopped():
                    return
                log.exception("claiming from queue %r failed; retrying in %s s", queue, poll)
                self._stopping.wait(poll)
                continue
            if telemetry.has_handlers(POLL):
                telemetry.execute(
                    POLL, {"claimed": len(records), "demand": batch}, {"queue": queue}
                )
            if not records:
                # An idle lane claims nothing from the store, so it looks here (once a poll
                # interval at most) whether the store stopped writing meanwhile.
                if self._store_stopped():
                    return
                batch = 1
                continue
            batch, pace = self._run_and_size(queue, records, slots, pace, held=False)

    def _store_stopped(self) -> bool:
        """Whether this process's store stopped writing after a storage failure (asked when a
        claim failed or found nothing). Its lanes then stop: every claim would fail until the
        app is reopened. The first lane to find out logs it, once."""
        failure = self._engine.failure
        if failure is None:
            return False
        with self._handback:
            first = not self._store_failed
            self._store_failed = True
        if first:
            log.error(
                "the store %s stopped writing: %s. This app's workers claim no more jobs; "
                "jobs running now cannot record their outcomes, stay executing and are "
                "rescued (the attempt counted) when the store is next opened. Close the app "
                "and open it again once the cause is fixed, or restart its process",
                self._app.path,
                failure,
            )
        return True

    def _shared_lane(self, ready: ReadyQueues) -> None:
        """A lane shared by the queues: take a hot queue with a free slot, claim from it
        without waiting, run what came holding that slot, and start over."""
        poll = self._app.config.poll_interval
        while True:
            taken = ready.take()
            if taken is None:
                return
            queue, look = taken
            slots = self._slots[queue]
            demand = self._demand.get(queue, 1)
            try:
                records = self._engine.claim(queue, demand, 0.0)
            except EngineClosedError:
                slots.release()
                return
            except KathikonError:
                if self._store_stopped():
                    slots.release()
                    return
                log.exception("claiming from queue %r failed; retrying in %s s", queue, poll)
                slots.release()
                ready.claimed(queue, look, got_jobs=True)
                self._stopping.wait(poll)
                continue
            if telemetry.has_handlers(POLL):
                telemetry.execute(
                    POLL, {"claimed": len(records), "demand": demand}, {"queue": queue}
                )
            ready.claimed(queue, look, got_jobs=bool(records))
            if not records:
                slots.release()
                if self._store_stopped():
                    return
                self._demand[queue] = 1
                continue
            demand, pace = self._run_and_size(
                queue, records, slots, self._pace.get(queue), held=True
            )
            self._demand[queue] = demand
            if pace is not None:
                self._pace[queue] = pace

    def _run_and_size(
        self,
        queue: str,
        records: list[Job],
        slots: Slots,
        pace: Optional[float],
        held: bool,
    ) -> tuple[int, Optional[float]]:
        """Run a claimed batch (``held``: with one of the queue's slots already taken, which
        this releases) and size the next claim; returns it and the updated pace."""
        started = time.perf_counter()
        had_async, ran = self._run_batch(queue, records, slots, held)
        budget = PREFETCH_BUDGET if self._engine.role == "owner" else CLIENT_PREFETCH_BUDGET
        if had_async:
            return self._next_async_claim(queue, budget, max(slots.limit, 1)), pace
        # The jobs' run time, not the ack after them: a job claimed ahead waits for the jobs
        # before it in its batch, never for their ack (sent once the batch has run). Where an
        # ack waits for a commit (a database's), counting it would shrink the claims as acks
        # slow down under load, which makes more acks and claims: a collapse to one job per
        # claim.
        per_job = (ran - started) / len(records)
        pace = _smoothed(pace, per_job)
        return max(1, min(MAX_BATCH, int(budget / max(pace, 1e-7)))), pace

    def _note_owner_change(self, doing: str) -> None:
        """Log once per owner that went away (every lane meets it): INFO, not an error, as
        a graceful stop of the owner is routine and the next call carries on."""
        try:
            owner = self._engine.owner_pid
        except KathikonError:
            owner = None
        with self._owner_change_lock:
            if owner is not None and owner == self._owner_gone_noted:
                return
            self._owner_gone_noted = owner
        log.info(
            "the store's owner (pid %s) went away while %s; carrying on with the next owner "
            "(jobs whose outcome it had not recorded are rescued and run again)",
            owner,
            doing,
        )

    def _next_async_claim(self, queue: str, budget: float, concurrency: int) -> int:
        """How many jobs a lane claims after handing async jobs to the loop.

        How long the lane waited says little: its jobs queued behind other lanes'. A job
        claimed now waits for the ones already waiting and for those claimed with it, at
        the pace the loop finishes jobs (its CPU) and at least at the pace slots free up
        (the jobs' run time over the concurrency). The claim is sized to keep that wait
        within ``budget``. Both paces are needed: jobs that run side by side finish a few
        µs apart, so the loop's rate alone can look huge for jobs that each sleep for
        seconds."""
        per_job = 1.0 / max(self._async_rate.get(queue, 0.0), 1e-9)
        per_job = max(per_job, self._async_run_time.get(queue, 0.0) / concurrency)
        ahead = budget / per_job - len(self._waiting.get(queue, ()))
        return max(1, min(MAX_BATCH, int(ahead)))

    def _run_batch(
        self, queue: str, jobs: list[Job], slots: Slots, held: bool = False
    ) -> tuple[bool, float]:
        """Run a lane's claimed jobs in order: sync ones here, holding one of the queue's
        slots while they run one after another (``held``: the lane took it before claiming;
        it is released either way); async ones handed to the loop, which starts each when a
        slot is free. Returns once every job has run or started, so a lane does not claim
        more while its async jobs still wait for a slot: whether there were async jobs, and
        when (``time.perf_counter()``) the sync ones had run, before their outcomes were
        sent."""
        acks: list[AckTuple] = []
        attempts: list[Attempt] = []
        batch = handback.LaneBatch(jobs, acks, attempts)
        with self._handback:
            if self._abandoned:
                # Claimed as the grace period ran out: hand them back unstarted.
                reason = handback.interrupt_reason(self._grace)
                self._ack([], handback.interrupt_acks(jobs, reason))
                if held:
                    slots.release()
                return False, time.perf_counter()
            self._batches.add(batch)
        handed: list[threading.Event] = []
        try:
            self._work_through(queue, batch, slots, handed, held)
        finally:
            with self._handback:
                self._batches.discard(batch)
        ran = time.perf_counter()
        if batch.taken:
            return False, ran  # the shutdown reported this batch
        if len(acks) > batch.sent:
            self._ack(*batch.unsent())
        for started in handed:
            self._wait_started(started)
        return bool(handed), ran

    def _work_through(
        self,
        queue: str,
        batch: handback.LaneBatch,
        slots: Slots,
        handed: list[threading.Event],
        held: bool,
    ) -> None:
        """:meth:`_run_batch`'s loop: appends the sync jobs' outcomes to ``batch.acks`` (and
        their attempts, when watched, to ``batch.attempts``) and an event per hand-over to
        the loop to ``handed``. Stops before the next job once the shutdown took the batch."""
        workers = self._app._workers
        watched = _jobs_watched()
        to_loop: list[Attempt] = []
        try:
            for job in batch.jobs:
                # Counted before the check: a shutdown that read the count before this
                # increment hands this job back as not started, and one that read it after
                # as unfinished; either way this lane then sees the mark and does not run it.
                batch.started += 1
                if self._abandoned:
                    break
                reg = workers.get(job.worker)
                if reg is not None and reg.is_async:
                    to_loop.append(Attempt(job, reg))
                    continue
                if to_loop:
                    # Start them while this lane runs the sync jobs after them.
                    handed.append(self._hand_over(queue, to_loop, batch, batch.started - 1))
                    to_loop = []
                if not held:
                    slots.take()
                    held = True
                    if self._abandoned:
                        break
                self._run_sync_job(job, reg, batch, watched)
        finally:
            if held:
                slots.release()
            if to_loop:
                handed.append(self._hand_over(queue, to_loop, batch, batch.started))

    def _run_sync_job(
        self, job: Job, reg: Optional[Registration], batch: handback.LaneBatch, watched: bool
    ) -> None:
        """Run one sync job of ``batch`` here, its outcome appended to the batch; under the
        watchdog when this is a worker process and its worker has a timeout or
        ``cancel="kill"``."""
        timeout = reg.timeout if reg is not None and self._stops else None
        kill = reg is not None and reg.kill_on_cancel and self._stops
        if timeout is not None or kill:
            self._send_unsent(batch)
            error = ""
            retry_in: Optional[int] = None
            if timeout is not None:
                # The worker's backoff, as for any failure, but not before this process is
                # gone: a retry due at once could be claimed by another lane here, and
                # rescued with it.
                retry_in = Attempt(job, reg).retry_delay()
                if retry_in is not None:
                    retry_in = max(retry_in, TIMED_OUT_RETRY_FLOOR_US)
                error = timeout_error(job, timeout)
            self._engine.watch(
                job.id,
                job.attempt,
                timeout=timeout,
                error=error,
                retry_in=retry_in,
                kill_on_cancel=kill,
            )
        if watched or reg is None:
            attempt = Attempt(job, reg)
            batch.acks.append(run_sync(attempt))
            batch.attempts.append(attempt)
        else:
            batch.acks.append(run_sync_unwatched(job, reg))
        if timeout is not None or kill:
            self._engine.unwatch(job.id)

    def _send_unsent(self, batch: handback.LaneBatch) -> None:
        """Send the outcomes of the batch's jobs that finished so far: the next job's timeout
        may end this process, and they must not be run again."""
        with self._handback:
            if batch.taken or len(batch.acks) == batch.sent:
                return
            attempts, acks = batch.unsent()
        self._ack(attempts, acks)

    def _wait_started(self, started: threading.Event) -> None:
        while not started.wait(0.5):
            loop = self._loop
            if loop is None or not loop.is_running():
                return  # handed over as the runner stopped: nothing will start them

    def _ack(self, attempts: list[Attempt], acks: list[AckTuple]) -> None:
        """Record outcomes. Without listeners for outcome events nothing needs the stored
        result, so the outcomes are sent without waiting: they join the next group commit,
        and one lost to a crash leaves its job executing, to be rescued and run again."""
        wait = _outcomes_watched()
        if wait and len(attempts) < len(acks):
            # Handlers came after the batch ran unwatched: nothing to report for it.
            wait, attempts = False, []
        try:
            if wait:
                stored: list[Optional[Job]] = self._engine.ack(acks, wait=True)
            else:
                self._engine.ack(acks, wait=False)
                stored = []
        except OwnerGoneError:
            # Not recorded: the jobs were rescued when the owner closed this process's
            # connections (or at the next owner's open) and run again.
            self._note_owner_change(f"recording the outcome of {len(acks)} job(s)")
            return
        except KathikonError:
            # The jobs stay executing in the store and are rescued at the next open.
            log.exception("recording the outcome of %d job(s) failed", len(acks))
            return
        if wait:
            for attempt, after in zip(attempts, stored):
                attempt.report(after)
        else:
            for attempt in attempts:
                attempt.report_sent()

    # -- async ---------------------------------------------------------------------------

    def _hand_over(
        self, queue: str, attempts: list[Attempt], batch: handback.LaneBatch, upto: int
    ) -> threading.Event:
        """Give async jobs to the loop (one hop for all of them); the event is set once the
        last of them has started (or the runner stopped before it could). Under the
        hand-back lock: a batch the shutdown took keeps its jobs for it to hand back, and
        one not taken reaches the loop before the shutdown's cancellation does (the shutdown
        marks batches taken under the same lock before it cancels the loop's tasks)."""
        started = threading.Event()
        with self._handback:
            if batch.taken:
                started.set()
                return started
            loop = self._event_loop()
            # The async jobs of batch.jobs[:upto] are the loop's from here on.
            batch.handed = upto
            try:
                loop.call_soon_threadsafe(self._enqueue, queue, attempts, started)
            except RuntimeError:
                # The loop is closed (the runner stopped): the jobs stay executing, to be
                # rescued at the next open.
                started.set()
        return started

    def _enqueue(self, queue: str, attempts: list[Attempt], started: threading.Event) -> None:
        """On the loop thread: queue handed-over jobs behind earlier ones, start what fits."""
        waiting = self._waiting.setdefault(queue, deque())
        waiting.extend((attempt, None) for attempt in attempts[:-1])
        waiting.append((attempts[-1], started))
        self._start_waiting(queue)

    def _start_waiting(self, queue: str) -> None:
        """On the loop thread: start waiting async jobs of ``queue`` while slots are free."""
        waiting = self._waiting.get(queue)
        if not waiting:
            return
        loop = asyncio.get_running_loop()
        for _ in range(self._slots[queue].take_claimed(len(waiting))):
            attempt, started = waiting.popleft()
            job_id = attempt.job.id
            task = loop.create_task(self._run_async(queue, job_id, attempt))
            self._running[job_id] = (attempt, task)
            if started is not None:
                started.set()

    def _release_hook(self, queue: str) -> Callable[[], None]:
        """What a slot's release does beyond waking a lane: a slot freed by a lane may be
        what an async job waiting on the loop needs (the loop's own releases start waiting
        jobs themselves)."""

        def released() -> None:
            loop = self._loop
            if not self._waiting.get(queue) or loop is None:
                return
            if threading.current_thread() is self._loop_thread:
                return
            try:
                loop.call_soon_threadsafe(self._start_waiting, queue)
            except RuntimeError:
                pass  # the loop is closed: the runner has stopped

        ready = self._ready
        if ready is None:
            return released

        def released_shared() -> None:
            ready.wake()  # a shared lane may be waiting for this queue's slot
            released()

        return released_shared

    async def _run_async(self, queue: str, job_id: int, attempt: Attempt) -> None:
        ack: Optional[AckTuple] = None
        try:
            ack = await run_async(attempt)
        except asyncio.CancelledError:
            pass  # cancelled as asked (app.cancel, shutdown): there is nothing to send
        finally:
            self._running.pop(job_id, None)
            if ack is None:
                self._slots[queue].release()
                self._start_waiting(queue)
        if ack is not None:
            # Sent with every other outcome of this pass of the loop, in one call; the slot
            # is freed once it is sent.
            if not self._finished:
                asyncio.get_running_loop().call_soon(self._flush)
            self._finished.append((attempt, ack, queue))

    def _flush(self) -> None:
        """On the loop thread: send the finished async jobs' outcomes, then free their slots
        and start the jobs waiting for them."""
        finished, self._finished = self._finished, []
        attempts = [attempt for attempt, _, _ in finished]
        acks = [ack for _, ack, _ in finished]
        if _outcomes_watched():
            # Waiting for the stored outcomes blocks: do it off the loop.
            loop = asyncio.get_running_loop()
            sent = loop.run_in_executor(None, self._ack, attempts, acks)
            sent.add_done_callback(lambda _: self._release(finished))
        else:
            self._ack(attempts, acks)  # sent without waiting: does not block the loop
            self._release(finished)

    def _release(self, finished: list[tuple[Attempt, AckTuple, str]]) -> None:
        done: dict[str, int] = {}
        run_time: dict[str, float] = {}
        for attempt, _, queue in finished:
            done[queue] = done.get(queue, 0) + 1
            run_time[queue] = run_time.get(queue, 0.0) + attempt.duration
        now = time.perf_counter()
        for queue, n in done.items():
            self._slots[queue].release(n)
            self._async_run_time[queue] = _smoothed(
                self._async_run_time.get(queue), run_time[queue] / n
            )
            last = self._async_done_at.get(queue)
            self._async_done_at[queue] = now
            if last is not None and now > last:
                self._async_rate[queue] = _smoothed(self._async_rate.get(queue), n / (now - last))
            self._start_waiting(queue)

    def cancel_running(self, job_id: int) -> None:
        """Cancel an async job running here, or drop it if it still waits for a slot (the
        store already says cancelled, so it must not start). Sync jobs cannot be
        interrupted: their late result is refused by the engine."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._cancel_on_loop, job_id)
        except RuntimeError:
            pass  # the loop is closed: nothing of this runner runs any more

    def _cancel_on_loop(self, job_id: int) -> None:
        running = self._running.get(job_id)
        if running is not None:
            attempt, task = running
            attempt.cancel_requested = True
            task.cancel()
            return
        for waiting in self._waiting.values():
            for i, (attempt, started) in enumerate(waiting):
                if attempt.job.id == job_id:
                    del waiting[i]
                    if started is not None:
                        started.set()  # its lane may claim again a little early
                    return

    def _cancel_all(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop thread: cancel every task (the jobs' as asked for, so they are not
        failures) and stop the loop. The jobs running or still waiting for a slot go to
        :attr:`_async_back`, for the shutdown to hand back; their lanes stop waiting."""
        for attempt, _ in self._running.values():
            attempt.cancel_requested = True
            self._async_back.append(attempt.job)
        for waiting in self._waiting.values():
            for attempt, started in waiting:
                self._async_back.append(attempt.job)
                if started is not None:
                    started.set()
            waiting.clear()
        _cancel_all(loop)

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


def timeout_error(job: Job, timeout: float) -> str:
    """The failure a sync job past its timeout records (the watchdog stores it)."""
    return (
        f"timeout: job {job.id} ({job.worker}) ran past its timeout of {timeout:g} s; worker "
        f"process {os.getpid()} was stopped to end it (a thread cannot be) and another started"
    )


def refuse_sync_stops(app: Kathikon, queues: dict[str, int]) -> None:
    """A sync worker's timeout and ``cancel="kill"`` hold only in worker processes: refuse to
    run such a worker here."""
    ours = [reg for reg in app._workers.values() if not reg.is_async and reg.queue in queues]
    timed = sorted(reg.name for reg in ours if reg.timeout is not None)
    if timed:
        raise ConfigurationError(
            f"sync worker(s) {', '.join(map(repr, timed))} have a timeout, which only worker "
            "processes can enforce (a thread cannot be stopped, its process can): run with "
            'processes=N or "auto" (kathikon worker --processes N), make the function '
            "`async def`, or drop the timeout"
        )
    killed = sorted(reg.name for reg in ours if reg.kill_on_cancel)
    if killed:
        raise ConfigurationError(
            f'sync worker(s) {", ".join(map(repr, killed))} have cancel="kill", which only '
            "worker processes can do (a thread cannot be stopped, its process can): run with "
            'processes=N or "auto" (kathikon worker --processes N), or drop cancel="kill" '
            "(a cancelled job then runs on and its outcome is refused)"
        )


def _smoothed(before: Optional[float], sample: float) -> float:
    """An exponentially weighted average: the sample alone at first, then 30 % of each."""
    return sample if before is None else 0.7 * before + 0.3 * sample


def _jobs_watched() -> bool:
    """Whether a handler listens for any job event (start, stop or an outcome)."""
    return telemetry.has_handlers(START) or telemetry.has_handlers(STOP) or _outcomes_watched()


def _outcomes_watched() -> bool:
    """Whether a handler listens for retry/discard/cancel/snooze/sleep events, which need
    the job as stored after its outcome (so the ack must wait for its commit)."""
    return any(telemetry.has_handlers(e) for events in OUTCOME_EVENTS.values() for e in events)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()

    async def finish() -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        loop.stop()

    loop.create_task(finish())
