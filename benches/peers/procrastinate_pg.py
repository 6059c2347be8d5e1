"""procrastinate (on PostgreSQL) adapter for the Kathikon peer benchmarks."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Sequence
from typing import Any

import peerlib


class ProcrastinatePeer(peerlib.Peer):
    system = "procrastinate"
    package = "procrastinate"
    backend = "postgres"

    def open(self) -> None:
        import procrastinate_pg_jobs

        self.jobs: Any = procrastinate_pg_jobs
        self.jobs.app.open()  # the synchronous connector, used to defer
        self.jobs.app.schema_manager.apply_schema()

    def close(self) -> None:
        self.jobs.app.close()

    def durability(self) -> str:
        return str(self.ctx.postgres.durability)

    def insert(self, seq: int, t_ref: float) -> None:
        self.jobs.noop.defer(seq=seq, t_ref=t_ref)

    def insert_many(self, items: Sequence[tuple[int, float]]) -> None:
        self.jobs.noop.batch_defer(*({"seq": seq, "t_ref": t} for seq, t in items))

    def schedule(self, seq: int, due: float) -> None:
        when = dt.datetime.fromtimestamp(due, tz=dt.timezone.utc)
        self.jobs.noop.configure(schedule_at=when).defer(seq=seq, t_ref=due)

    def worker_argv(self) -> list[str]:
        c = self.ctx.opts.concurrency
        return [str(self.ctx.bin / "procrastinate"), "--app", "procrastinate_pg_jobs.app",
                "worker", "--concurrency", str(c)]  # fmt: skip

    def worker_notes(self) -> str:
        return (
            f"procrastinate worker: 1 asyncio process, concurrency {self.ctx.opts.concurrency}, "
            "async no-op task; LISTEN/NOTIFY for new jobs, polls every 5 s (default) "
            "otherwise, which is what picks up scheduled jobs"
        )


if __name__ == "__main__":
    sys.exit(peerlib.main(ProcrastinatePeer))
