"""A user's script for ``test_results.py``: jobs that return values run in two worker processes
(``app.start(processes=2)``), and this process, their owner, reads each result with
``app.result``. Prints the results, the worker processes' pids and the pids that ran the jobs
as JSON."""

from __future__ import annotations

import json
import os

import kathikon

app = kathikon.Kathikon(os.environ["KATHIKON_MP_STORE"], queues={"default": 2}, poll_interval=30)


@app.worker(name="script.square")
def square(job: kathikon.Job) -> dict[str, int]:
    return {"square": job.args["n"] ** 2, "pid": os.getpid()}


if __name__ == "__main__":
    ids = [square.insert({"n": n}).id for n in range(6)]
    app.start(processes=2)
    results = [app.result(i, timeout=60) for i in ids]
    pids = app.worker_pids
    app.stop(timeout=10)
    app.close()
    print(json.dumps({"results": results, "pids": pids, "me": os.getpid()}))
