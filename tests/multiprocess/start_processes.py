"""A user's script: the app and its worker at module level, ``app.start(processes=N)`` under
the main guard (N from ``KATHIKON_MP_PROCESSES``: a number or ``auto``; 2 by default). The
worker processes import this file again (as ``__mp_main__``) to find the app. Prints the
jobs' ids and the worker processes' pids as JSON."""

from __future__ import annotations

import json
import os
import time

import kathikon

app = kathikon.Kathikon(os.environ["KATHIKON_MP_STORE"], queues={"default": 2}, poll_interval=0.2)


@app.worker(name="script.job")
def job(j: kathikon.Job) -> None:
    with open(os.environ["KATHIKON_MP_SIDE"], "a") as side:
        side.write(f"ran {os.getpid()} {j.id} {j.attempt} {time.monotonic()}\n")


if __name__ == "__main__":
    ids = [job.insert().id for _ in range(20)]
    wanted = os.environ.get("KATHIKON_MP_PROCESSES", "2")
    app.start(processes="auto" if wanted == "auto" else int(wanted))
    pids = app.worker_pids
    deadline = time.monotonic() + 60
    while app.stats()["default"]["completed"] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    clean = app.stop(timeout=10)
    app.close()
    print(json.dumps({"ids": ids, "pids": pids, "clean": clean, "me": os.getpid()}))
