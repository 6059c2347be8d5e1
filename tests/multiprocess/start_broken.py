"""A user's script with the app created under the main guard, the mistake the docs warn
about: the worker processes import this file again, find no app and exit with an error before
they start. Runs until the pool has seen two such failures, then stops; prints what the pool
saw as JSON. The pool's log (warnings and errors) goes to stderr."""

from __future__ import annotations

import json
import os
import time

import kathikon

if __name__ == "__main__":
    app = kathikon.Kathikon(os.environ["KATHIKON_MP_STORE"], queues={"default": 1})

    @app.worker(name="script.job")
    def job(j: kathikon.Job) -> None:
        pass

    app.start(processes=1)
    pool = app._pool
    assert pool is not None
    deadline = time.monotonic() + 60
    while pool.start_failures < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    failures = pool.start_failures
    stopping = time.monotonic()
    clean = app.stop(timeout=5)  # during the 2 s back-off: must not wait it out
    stopped_in = time.monotonic() - stopping
    app.close()
    print(json.dumps({"failures": failures, "clean": clean, "stopped_in": stopped_in}))
