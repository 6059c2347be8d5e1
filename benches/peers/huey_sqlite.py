"""Huey (SqliteHuey, embedded) adapter for the Kathikon peer benchmarks."""

from __future__ import annotations

import sys
import time
from typing import Any

import peerlib


class HueyPeer(peerlib.Peer):
    system = "huey"
    package = "huey"
    backend = "sqlite"
    bulk_skip = (
        "no bulk enqueue API: Task.map() enqueues one task at a time, each its own SQLite "
        "transaction"
    )

    def open(self) -> None:
        import huey_sqlite_jobs

        self.jobs: Any = huey_sqlite_jobs

    def durability(self) -> str:
        return "sqlite WAL, synchronous=FULL (SqliteHuey fsync=True): fsync per commit"

    def insert(self, seq: int, t_ref: float) -> None:
        self.jobs.noop(seq, t_ref)

    def schedule(self, seq: int, due: float) -> None:
        self.jobs.noop.schedule(args=(seq, due), delay=due - time.time())

    def worker_argv(self) -> list[str]:
        c = self.ctx.opts.concurrency
        return [str(self.ctx.bin / "huey_consumer"), "huey_sqlite_jobs.huey",
                "-w", str(c), "-k", "thread"]  # fmt: skip

    def worker_notes(self) -> str:
        return (
            f"huey_consumer: 1 process, {self.ctx.opts.concurrency} worker threads (-k thread); "
            "idle workers poll every 0.1 s backing off to 10 s; scheduler ticks every 1 s"
        )


if __name__ == "__main__":
    sys.exit(peerlib.main(HueyPeer))
