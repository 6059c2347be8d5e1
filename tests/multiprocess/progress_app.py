"""The app the progress and processes tests run in worker processes (module level, as worker
processes import it). Its store and side file come from the environment the test sets."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import kathikon

STORE = os.environ["KATHIKON_MP_STORE"]
SIDE = Path(os.environ["KATHIKON_MP_SIDE"])

app = kathikon.Kathikon(STORE, queues={"default": 2}, poll_interval=0.2, lease=30)


def _note(job: kathikon.Job) -> None:
    with SIDE.open("a") as f:
        f.write(f"{os.getpid()} {job.id}\n")


def _gate(job: kathikon.Job) -> None:
    """Wait until the test creates the file the job's ``gate`` arg names."""
    gate = Path(job.args["gate"])
    while not gate.exists():
        time.sleep(0.01)


@app.worker
def report(job: kathikon.Job) -> None:
    """Report ``n`` values in a tight loop, then ``half`` and wait at the gate, then
    ``(1.0, "done")`` and return at once."""
    n = int(job.args["n"])
    for i in range(n):
        job.progress(i / n, f"step {i}")
    job.progress(0.5, "half")
    _note(job)
    _gate(job)
    job.progress(1.0, "done")


@app.worker
async def areport(job: kathikon.Job) -> None:
    """:func:`report` as an async job."""
    n = int(job.args["n"])
    for i in range(n):
        job.progress(i / n, f"step {i}")
    job.progress(0.5, "half")
    _note(job)
    gate = Path(job.args["gate"])
    while not gate.exists():
        await asyncio.sleep(0.01)
    job.progress(1.0, "done")
