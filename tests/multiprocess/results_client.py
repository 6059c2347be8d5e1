"""A second app on a store another process owns, for ``test_results.py``: it inserts a job that
returns a value and one that fails, prints their ids, then waits for each with ``app.result``
(in a thread of its own, so the wait is one native call, woken at the owner) and prints what it
got and how long the first wait took."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import kathikon

app = kathikon.Kathikon(os.environ["KATHIKON_MP_STORE"], queues={"default": 2}, poll_interval=30)


@app.worker(name="t.value", max_attempts=3)
def value(job: kathikon.Job) -> Any:
    return job.args["value"]


@app.worker(name="t.boom", max_attempts=1)
def boom(job: kathikon.Job) -> Any:
    raise RuntimeError("always")


def main() -> dict[str, Any]:
    assert app.role == "client", app.role
    job = value.insert({"value": {"from": "client"}})
    failed = boom.insert()
    print(json.dumps({"ids": [job.id, failed.id]}), flush=True)
    started = time.monotonic()
    result = app.result(job.id, timeout=120)
    report: dict[str, Any] = {"result": result, "finished_at": time.time()}
    report["waited"] = time.monotonic() - started
    try:
        app.result(failed.id, timeout=120)
    except kathikon.JobFailedError as error:
        report["failed"] = str(error.job.state)
    return report


if __name__ == "__main__":
    out: list[dict[str, Any]] = []
    waiter = threading.Thread(target=lambda: out.append(main()))
    waiter.start()
    waiter.join()
    app.close()
    print(json.dumps(out[0]), flush=True)
