"""Dramatiq (on Redis) adapter for the Kathikon peer benchmarks."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

import peerlib


def _split(concurrency: int) -> tuple[int, int]:
    """Worker processes and threads per process: one process per core, at most."""
    processes = max(1, min(concurrency, os.cpu_count() or 1))
    return processes, math.ceil(concurrency / processes)


class DramatiqPeer(peerlib.Peer):
    system = "dramatiq"
    package = "dramatiq"
    backend = "redis"
    bulk_skip = "no bulk enqueue API: group() and pipeline() enqueue one message at a time"

    def open(self) -> None:
        import dramatiq_redis_jobs

        self.jobs: Any = dramatiq_redis_jobs

    def close(self) -> None:
        self.jobs.broker.close()

    def durability(self) -> str:
        return f"{self.ctx.redis.durability}; messages acked after processing (default)"

    def insert(self, seq: int, t_ref: float) -> None:
        self.jobs.noop.send(seq, t_ref)

    def schedule(self, seq: int, due: float) -> None:
        delay_ms = max(0, round((due - time.time()) * 1000))
        self.jobs.noop.send_with_options(args=(seq, due), delay=delay_ms)

    def worker_argv(self) -> list[str]:
        processes, threads = _split(self.ctx.opts.concurrency)
        return [str(self.ctx.bin / "dramatiq"), "dramatiq_redis_jobs",
                "--processes", str(processes), "--threads", str(threads)]  # fmt: skip

    def worker_notes(self) -> str:
        processes, threads = _split(self.ctx.opts.concurrency)
        return (
            f"dramatiq CLI: {processes} worker process(es) x {threads} threads; delayed "
            "messages wait in the delay queue until the worker moves them"
        )


if __name__ == "__main__":
    sys.exit(peerlib.main(DramatiqPeer))
