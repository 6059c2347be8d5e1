"""FlexiQ (formerly taskito; Rust core, SQLite, embedded) adapter for the peer benchmarks."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import peerlib


class FlexiqPeer(peerlib.Peer):
    system = "flexiq"
    package = "flexiq"
    backend = "sqlite"

    def open(self) -> None:
        import flexiq_sqlite_jobs

        self.jobs: Any = flexiq_sqlite_jobs

    def close(self) -> None:
        self.jobs.queue.close()

    def durability(self) -> str:
        return (
            "sqlite WAL, synchronous=NORMAL (FlexiQ's built-in default, not configurable from "
            "Python): commits are not fsync'd one by one, only at WAL checkpoints"
        )

    def insert(self, seq: int, t_ref: float) -> None:
        self.jobs.noop.delay(seq, t_ref)

    def insert_many(self, items: Sequence[tuple[int, float]]) -> None:
        self.jobs.queue.enqueue_many("noop", list(items))

    def schedule(self, seq: int, due: float) -> None:
        self.jobs.queue.enqueue("noop", args=(seq, due), delay=due - time.time())

    def worker_argv(self) -> list[str]:
        return [str(self.ctx.bin / "flexiq"), "worker", "--app", "flexiq_sqlite_jobs:queue"]

    def worker_notes(self) -> str:
        return (
            f"flexiq worker: 1 process, {self.ctx.opts.concurrency} worker threads (thread "
            "pool, default); its Rust scheduler polls SQLite every 50 ms (default)"
        )


if __name__ == "__main__":
    sys.exit(peerlib.main(FlexiqPeer))
