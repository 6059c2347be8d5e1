"""Celery (on Redis, acks_late) adapter for the Kathikon peer benchmarks."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import peerlib


class CeleryPeer(peerlib.Peer):
    system = "celery"
    package = "celery"
    backend = "redis"
    bulk_skip = "no bulk enqueue API: group() and chunks() publish one message per task"

    def open(self) -> None:
        import celery_redis_jobs

        self.jobs: Any = celery_redis_jobs

    def close(self) -> None:
        self.jobs.app.close()

    def durability(self) -> str:
        return f"{self.ctx.redis.durability}; task_acks_late=True, task_reject_on_worker_lost=True"

    def insert(self, seq: int, t_ref: float) -> None:
        self.jobs.noop.delay(seq, t_ref)

    def schedule(self, seq: int, due: float) -> None:
        eta = dt.datetime.fromtimestamp(due, tz=dt.timezone.utc)
        self.jobs.noop.apply_async((seq, due), eta=eta)

    def worker_argv(self) -> list[str]:
        c = self.ctx.opts.concurrency
        return [str(self.ctx.bin / "celery"), "-A", "celery_redis_jobs", "worker",
                "-P", "prefork", "-c", str(c), "-l", "WARNING"]  # fmt: skip

    def worker_notes(self) -> str:
        return (
            f"celery worker -P prefork -c {self.ctx.opts.concurrency}: "
            f"{self.ctx.opts.concurrency} child processes, prefetch multiplier 4 (default); "
            "ETA tasks are held by the worker and started by its timer"
        )


if __name__ == "__main__":
    sys.exit(peerlib.main(CeleryPeer))
