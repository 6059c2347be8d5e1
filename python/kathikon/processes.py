"""Worker processes: ``app.start(processes=N)`` and ``kathikon worker --processes N``
(``"auto"``: one per CPU core this process may use).

The process that calls ``start`` keeps (or connects to) the store and runs no jobs itself;
it starts N child processes with :mod:`multiprocessing`'s *spawn* method (a fresh
interpreter: no inherited file locks, threads or sockets). Each child imports the app the
same way the parent did, finds the store held, and becomes a client of its owner: it claims
jobs over the owner's socket under a lease its native heartbeat thread renews.

Worker processes never own the store (their apps open with ``takeover=False``): a job that
crashes its process must not take the store down for every client. When the owner goes
away, the parent takes the store over (it checks every 0.2 s, as it makes no calls of its
own) and the children connect to it; if the parent itself was the owner and died, the
children stop, as they do whenever their parent is gone.

Concurrency is split, so each queue's limit holds across all processes together: a queue
of concurrency C gets ``C // N`` lanes in every child, plus one more in the first ``C % N``
children. A child whose share is empty is not started.

A child that exits unexpectedly is started again (at most once a second); the jobs it was
running are rescued by the owner as soon as its connections drop. A child that exits with an
error before it started its app (an import error, no app found) is tried again after 1 s,
then 2, 4, … up to a minute, each failure logged as an error: a broken deployment neither
spins nor floods the log, and one that gets fixed (a file restored, a service back)
recovers by itself.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Optional, Union

from .errors import ConfigurationError, KathikonError
from .stop_signal import StopRequest

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from .app import Kathikon

log = logging.getLogger("kathikon")

#: Apps alive in this process, by the real path of their store: how a child finds the app
#: its parent meant once the app's module has been imported.
_APPS: weakref.WeakValueDictionary[str, Kathikon] = weakref.WeakValueDictionary()


#: Set in a worker process's environment (by its parent, at spawn): the real path of the
#: store whose apps in that process must not take it over. Set before the child starts, as
#: a child whose app is created by its ``__main__`` module opens it before any pool code runs.
NO_TAKEOVER_ENV = "KATHIKON_WORKER_PROCESS_OF"


def may_take_over(path: Optional[str]) -> bool:
    """Whether an app on ``path`` in this process may own the store: not in a worker process
    of a pool on that store."""
    store = os.environ.get(NO_TAKEOVER_ENV)
    return store is None or path is None or os.path.realpath(path) != store


def store_key(app: Kathikon) -> Optional[str]:
    """What names the app's store to its worker processes: the file's real path, or the
    database url; ``None`` for an in-memory store."""
    if app.url is not None:
        return app.url
    return None if app.path is None else os.path.realpath(app.path)


def remember(app: Kathikon) -> None:
    key = store_key(app)
    if key is not None:
        _APPS[key] = app


def split(queues: dict[str, int], processes: int) -> list[dict[str, int]]:
    """Each child's queues: concurrency divided so that the sum over children is the total."""
    shares: list[dict[str, int]] = [{} for _ in range(processes)]
    for name, concurrency in queues.items():
        base, extra = divmod(concurrency, processes)
        for i, share in enumerate(shares):
            lanes = base + (1 if i < extra else 0)
            if lanes:
                share[name] = lanes
    return [share for share in shares if share]


def cores() -> int:
    """The CPU cores this process may run on (its affinity and, on Python 3.13+, the
    ``PYTHON_CPU_COUNT`` override), at least 1: what ``processes="auto"`` starts."""
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        return max(1, count() or 1)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve(processes: object) -> int:
    """How many worker processes ``processes=`` asks for: an int of at least 1, or ``"auto"``
    for one per core (:func:`cores`)."""
    if processes == "auto":
        return cores()
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ConfigurationError(
            f'processes={processes!r} must be an int of at least 1, or "auto" for one per core'
        )
    return processes


def restart_delay(failures: int) -> float:
    """Seconds before starting a child again after ``failures`` starts in a row that failed."""
    return min(60.0, 2.0 ** (failures - 1)) if failures > 0 else 1.0


def _find_app(origin: str, key: str) -> Kathikon:
    """In a child: the app on the store ``key`` names (:func:`store_key`), importing the
    module that created it if needed."""
    app = _APPS.get(key)
    if app is None and origin not in ("__main__", "__mp_main__"):
        importlib.import_module(origin)
        app = _APPS.get(key)
    if app is None:
        raise ConfigurationError(
            f"worker process {os.getpid()} imported {origin!r} but found no Kathikon app on "
            f"{key!r}; create the app at module level (not under `if __name__ == "
            '"__main__":`) so worker processes can import it'
        )
    return app


def _child_main(
    origin: str,
    key: str,
    queues: dict[str, int],
    grace: float,
    parent: int,
    ready: Any,
    share: tuple[int, int] = (0, 1),
) -> None:
    """A worker process: run ``queues`` of the app until SIGTERM or the parent's death."""
    stop = StopRequest()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; Ctrl-C reaches both
    from . import joblog

    joblog.inherit()  # the job lines and log format of `kathikon worker`, if it started us
    app = _find_app(origin, key)
    app._pool_share = share  # a queue scaled or started at runtime is split as `queues` was
    app._in_worker_process = True  # sync jobs' timeouts hold here: the process may end itself
    app.start(queues)
    ready.set()
    try:
        while not stop.wait(0.5):
            if os.getppid() != parent:
                log.warning(
                    "worker process %d: its parent %d is gone; stopping", os.getpid(), parent
                )
                break
        finished = app.stop(timeout=grace)
    finally:
        app.close(timeout=0)
    sys.stdout.flush()
    sys.stderr.flush()
    # Threads of jobs that outlived the grace period would keep the interpreter alive.
    os._exit(0 if finished else 3)


#: Held while the environment carries a child's settings.
_SPAWN_ENV = threading.Lock()


class ProcessPool:
    """N worker processes for one app, kept running until :meth:`stop`."""

    def __init__(self, app: Kathikon, queues: dict[str, int], processes: Union[int, str]) -> None:
        key = store_key(app)
        if key is None:
            raise ConfigurationError(
                "processes= needs a store file or a database: worker processes cannot reach "
                "an in-memory store; pass path= (or url=) to Kathikon"
            )
        processes = resolve(processes)
        self._app = app
        self._key = key
        self._shares = split(queues, processes)
        self._context = multiprocessing.get_context("spawn")
        self._children: list[Optional[BaseProcess]] = [None] * len(self._shares)
        self._started_at: list[float] = [0.0] * len(self._shares)
        # Set by each child once its app runs.
        self._ready: list[Any] = [None] * len(self._shares)
        self._failures: list[int] = [0] * len(self._shares)
        self.start_failures = 0
        self._stopping = threading.Event()
        self._grace = 30.0
        self._lock = threading.Lock()
        self._monitor = threading.Thread(target=self._watch, name="kathikon-processes", daemon=True)

    @property
    def pids(self) -> list[int]:
        """The children's process ids (those running now)."""
        with self._lock:
            return [c.pid for c in self._children if c is not None and c.pid is not None]

    def start(self, grace: float = 30.0) -> None:
        self._grace = grace
        for slot in range(len(self._shares)):
            self._spawn(slot)
        self._monitor.start()

    def _spawn(self, slot: int) -> None:
        ready = self._context.Event()
        args: tuple[Any, ...] = (
            self._app._origin,
            self._key,
            self._shares[slot],
            self._grace,
            os.getpid(),
            ready,
            (slot, len(self._shares)),
        )
        child = self._context.Process(
            target=_child_main, args=args, name=f"kathikon-worker-{slot}", daemon=False
        )
        with _SPAWN_ENV:
            # A spawned child gets this process's environment as it is at start(). (A
            # database has no owner to take over; the variable is then never matched.)
            before = os.environ.get(NO_TAKEOVER_ENV)
            os.environ[NO_TAKEOVER_ENV] = self._key
            try:
                child.start()
            finally:
                if before is None:
                    del os.environ[NO_TAKEOVER_ENV]
                else:
                    os.environ[NO_TAKEOVER_ENV] = before
        with self._lock:
            self._children[slot] = child
            self._ready[slot] = ready
            self._started_at[slot] = time.monotonic()
        log.info("worker process %d started (queues %s)", child.pid, self._shares[slot])

    def _keep_store(self) -> None:
        """Take the store over if its owner went away: the children never do."""
        try:
            self._app._engine.keep()
        except KathikonError as exc:
            log.warning("the store's owner went away and no process took it over yet: %s", exc)

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            self._keep_store()
            for slot, child in enumerate(list(self._children)):
                if child is None or child.is_alive() or self._stopping.is_set():
                    continue
                # An error exit before the app ran is the child's own failure (killed by a
                # signal is not): it would fail the same way at once, so back off.
                failed_to_start = not self._ready[slot].is_set() and (child.exitcode or 0) > 0
                if not failed_to_start:
                    self._failures[slot] = 0
                    log.warning(
                        "worker process %s exited with status %s; its jobs are rescued by the "
                        "store's owner; starting another",
                        child.pid,
                        child.exitcode,
                    )
                    # At most one restart a second per slot.
                    wait = self._started_at[slot] + 1.0 - time.monotonic()
                else:
                    self._failures[slot] += 1
                    self.start_failures += 1
                    wait = restart_delay(self._failures[slot])
                    log.error(
                        "worker process %s exited with status %s before it started (%d time(s) "
                        "in a row; its error is above); trying again in %g s",
                        child.pid,
                        child.exitcode,
                        self._failures[slot],
                        wait,
                    )
                if wait > 0 and self._stopping.wait(wait):
                    return
                self._spawn(slot)

    def stop(self, timeout: float) -> bool:
        """SIGTERM every child, wait up to ``timeout`` s, then SIGKILL what is left. True if
        every child finished its running jobs and exited cleanly."""
        self._stopping.set()
        if self._monitor.is_alive():
            self._monitor.join()
        with self._lock:
            children = [c for c in self._children if c is not None]
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        # The children wait `grace` themselves; a little more here for their exit.
        deadline = time.monotonic() + timeout + 5.0
        clean = True
        for child in children:
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
                child.join()
                clean = False
            elif child.exitcode not in (0, -signal.SIGTERM):
                # Killed by the SIGTERM itself: it came before the child installed its handler,
                # that is before it had an app, so it held no jobs.
                clean = False
        return clean
