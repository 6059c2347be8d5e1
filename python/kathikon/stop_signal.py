"""A stop request that a signal handler may set and the main thread waits on."""

from __future__ import annotations

import os
import select


class StopRequest:
    """Set from a signal handler, waited on by the thread the handler runs in.

    A :class:`threading.Event` cannot be set from a signal handler: Python runs the handler
    in the main thread between two bytecodes, possibly while that thread holds the event's
    own lock inside ``Event.wait``, and ``Event.set`` then waits for that lock forever (a
    worker process stopped by SIGTERM hung so). Setting this only stores a flag and writes a
    byte to a pipe, neither of which takes a lock; :meth:`wait` selects on the pipe, so it
    wakes at once.
    """

    def __init__(self) -> None:
        self._set = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def set(self) -> None:
        self._set = True
        try:
            os.write(self._write, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (already woken) or closed (the wait is over)

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        """Whether the stop was requested, waiting up to ``timeout`` s for it."""
        if not self._set:
            try:
                select.select([self._read], [], [], timeout)
            except InterruptedError:  # pragma: no cover - PEP 475 retries select itself
                pass
        return self._set

    def close(self) -> None:
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
