"""kathikon.stop_signal.StopRequest, what worker processes and `kathikon worker` wait on for
SIGTERM: set from another thread or twice, the wait wakes at once and stays set. (Why not a
threading.Event: its set() from a signal handler can deadlock on the lock the interrupted wait
holds; tests/multiprocess/test_fork.py's worker-processes case hung so about once in 12 runs.)"""

from __future__ import annotations

import threading
import time

from kathikon.stop_signal import StopRequest


def test_set_wakes_a_long_wait_at_once() -> None:
    stop = StopRequest()
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    try:
        assert stop.wait(30)
    finally:
        stop.close()
    assert time.monotonic() - started < 10
    # Set twice (a second SIGTERM) and waited again: still set, still no block.
    stop2 = StopRequest()
    stop2.set()
    stop2.set()
    assert stop2.wait(30) and stop2.is_set()
    stop2.close()
