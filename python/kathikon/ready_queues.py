"""Which queues have jobs to claim, for lanes shared by many queues.

A runner whose queues add up to more concurrency than it has threads for (see
:data:`kathikon.runner.MAX_THREADS`) does not give each queue lanes of its own: a fixed pool
of lanes serves every queue, and one *watcher* thread waits for all of them at once with the
engine's ``wait_ready``. Idle queues therefore cost no thread and no claim: 10,000 configured
queues run on the same few threads as ten.

The queues known to have jobs are *hot*, kept in a round-robin line. A lane takes the first
hot queue with a free slot (taking the slot, so a queue never runs more than its
concurrency), claims from it without waiting, and puts it back at the end of the line if it
got jobs, so a busy queue takes its turn behind the others instead of keeping every lane.
A claim that comes back empty makes the queue cold again, unless the watcher saw jobs ready
in it after the claim began (they may have landed after the claim looked). The watcher hands
the engine the generation it last saw, so it wakes only when something changed, not each
time it looks while a backlog is drained.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Optional

from .errors import EngineClosedError, KathikonError

if TYPE_CHECKING:
    from ._native import Engine
    from .runner import Slots

log = logging.getLogger("kathikon")


class ReadyQueues:
    """The hot queues of one runner and the watcher that finds them."""

    def __init__(
        self,
        engine: Engine,
        slots: dict[str, Slots],
        poll: float,
        stopping: threading.Event,
    ) -> None:
        self._engine = engine
        self._slots = slots
        self._names = list(slots)
        self._poll = poll
        self._stopping = stopping
        self._cond = threading.Condition()
        # Hot queues not being claimed from right now, in turn order; `_hot` also holds
        # those a lane is claiming from (so the watcher does not queue them twice).
        self._line: deque[str] = deque()
        self._hot: set[str] = set()
        # How many times the watcher has looked, and when it last saw each queue ready.
        self._looks = 0
        self._seen_ready: dict[str, int] = {}

    def set_queues(self, names: list[str]) -> None:
        """Watch these queues from the next look on (queues started, stopped or scaled at
        runtime); a queue dropped leaves the line when a lane finds it has no free slot."""
        self._names = list(names)

    def watch(self) -> None:
        """The watcher thread: wait for queues to have jobs ready, mark them hot."""
        seen: Optional[int] = None
        while not self._stopping.is_set():
            try:
                seen, ready = self._engine.wait_ready(self._names, seen, self._poll)
            except EngineClosedError:
                return
            except KathikonError:
                log.exception("watching queues for jobs failed; retrying in %s s", self._poll)
                seen = None
                self._stopping.wait(self._poll)
                continue
            with self._cond:
                self._looks += 1
                fresh = 0
                for queue in ready:
                    self._seen_ready[queue] = self._looks
                    if queue not in self._hot:
                        self._hot.add(queue)
                        self._line.append(queue)
                        fresh += 1
                if fresh:
                    self._cond.notify(fresh)

    def take(self) -> Optional[tuple[str, int]]:
        """Wait for a hot queue with a free slot and take one of its slots. Returns the queue
        and the watcher's look count (for :meth:`claimed`), or None once the runner stops."""
        with self._cond:
            while not self._stopping.is_set():
                for _ in range(len(self._line)):
                    queue = self._line.popleft()
                    if self._slots[queue].take_up_to(1):
                        return queue, self._looks
                    self._line.append(queue)  # full: its turn waits for a free slot
                self._cond.wait(self._poll)
        return None

    def claimed(self, queue: str, look: int, got_jobs: bool) -> None:
        """After a claim from a queue :meth:`take` gave: back in line, or cold."""
        with self._cond:
            if got_jobs or self._seen_ready.get(queue, 0) > look:
                self._line.append(queue)
                self._cond.notify()
            else:
                self._hot.discard(queue)

    def wake(self) -> None:
        """A slot was freed: a lane waiting for one may go on."""
        with self._cond:
            self._cond.notify()

    def wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()


__all__ = ["ReadyQueues"]
