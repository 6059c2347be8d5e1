"""RQ (on Redis) adapter for the Kathikon peer benchmarks."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Sequence
from typing import Any

import peerlib


class RqPeer(peerlib.Peer):
    system = "rq"
    package = "rq"
    backend = "redis"

    def open(self) -> None:
        import rq_redis_jobs
        from redis import Redis
        from rq import Queue

        self.jobs: Any = rq_redis_jobs
        self.queue_cls: Any = Queue
        self.conn = Redis.from_url(os.environ["PEER_REDIS_URL"])
        self.queue = Queue("default", connection=self.conn)

    def close(self) -> None:
        self.conn.close()

    def durability(self) -> str:
        return str(self.ctx.redis.durability)

    def insert(self, seq: int, t_ref: float) -> None:
        self.queue.enqueue(self.jobs.noop, seq, t_ref)

    def insert_many(self, items: Sequence[tuple[int, float]]) -> None:
        prepare = self.queue_cls.prepare_data
        self.queue.enqueue_many([prepare(self.jobs.noop, args=item) for item in items])

    def schedule(self, seq: int, due: float) -> None:
        when = dt.datetime.fromtimestamp(due, tz=dt.timezone.utc)
        self.queue.enqueue_at(when, self.jobs.noop, seq, due)

    def worker_argv(self) -> list[str]:
        c = self.ctx.opts.concurrency
        return [str(self.ctx.bin / "rq"), "worker-pool", "-n", str(c),
                "--url", os.environ["PEER_REDIS_URL"], "default"]  # fmt: skip

    def worker_notes(self) -> str:
        return (
            f"rq worker-pool: {self.ctx.opts.concurrency} worker processes (default Worker "
            "class: forks a work horse per job; each runs the scheduler, checked every 1 s)"
        )


if __name__ == "__main__":
    sys.exit(peerlib.main(RqPeer))
