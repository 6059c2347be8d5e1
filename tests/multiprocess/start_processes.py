"""A user's script: the app and its worker at module level, ``app.start(processes=2)`` under
the main guard. The worker processes import this file again (as ``__mp_main__``) to find the
app. Prints the jobs' ids and the worker processes' pids as JSON."""

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
    app.start(processes=2)
    pids = app.worker_pids
    deadline = time.monotonic() + 60
    while app.stats()["default"]["completed"] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    clean = app.stop(timeout=10)
    app.close()
    print(json.dumps({"ids": ids, "pids": pids, "clean": clean, "me": os.getpid()}))
