"""A user's script for ``test_batches.py``, run as another process on the test's store file.

``client``: an app on a store the test process owns inserts a batch with an ``on_finished``
callback and prints its id. ``processes``: the owner of a new store inserts a batch of 40 jobs
and runs them in two worker processes (``app.start(processes=2)``); the callback appends a line
to the side file; once it ran, prints the batch's status and the pids that ran its members.
"""

from __future__ import annotations

import json
import os
import sys
import time

import side_file

import kathikon

app = kathikon.Kathikon(os.environ["KATHIKON_MP_STORE"], queues={"default": 2}, poll_interval=30)


@app.worker(name="batch.member")
def member(job: kathikon.Job) -> int:
    return os.getpid()


@app.worker(name="batch.done")
def done(job: kathikon.Job) -> None:
    callback = kathikon.BatchCallback.of(job)
    assert callback is not None
    side_file.append(
        os.environ["KATHIKON_MP_SIDE"], f"{callback.batch_id} {callback.event} {os.getpid()}"
    )


def as_client() -> None:
    assert app.role == "client", app.role
    batch = app.insert_batch([member.new() for _ in range(5)], on_finished=done)
    print(json.dumps({"batch": batch.id, "ids": [j.id for j in batch.jobs]}), flush=True)


def with_processes() -> None:
    batch = app.insert_batch([member.new() for _ in range(40)], on_finished=done)
    app.start(processes=2)
    deadline = time.monotonic() + 60
    while not app.batch(batch.id).finished and time.monotonic() < deadline:
        time.sleep(0.05)
    callback = app.batch(batch.id).callbacks["finished"]
    assert callback is not None
    app.result(callback, timeout=60)
    pids = sorted({app.get(j.id).result for j in batch.jobs})
    status = app.batch(batch.id)
    app.stop(timeout=10)
    app.close()
    report = {"batch": batch.id, "counts": status.counts, "pids": pids, "me": os.getpid()}
    print(json.dumps(report))


if __name__ == "__main__":
    as_client() if sys.argv[1] == "client" else with_processes()
