"""Kathikon on PostgreSQL (``Kathikon(url=...)``) adapter for the Kathikon peer benchmarks,
run against the same throw-away server as procrastinate and oban.

Kathikon is installed into ``benches/.venv-peers`` by setup.sh (from ``$PEERS_KATHIKON_WHEEL``
or the source checkout).
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Sequence
from typing import Any

import peerlib


class KathikonPgPeer(peerlib.Peer):
    system = "kathikon-pg"
    package = "kathikon"
    backend = "postgres"

    @classmethod
    def unavailable(cls) -> str | None:
        try:
            import kathikon  # noqa: F401
        except ImportError:
            return "kathikon is not installed in this virtualenv (run benches/peers/setup.sh)"
        return None

    def open(self) -> None:
        import kathikon_pg_jobs  # migrates the schema at open (migrate=True)

        self.jobs: Any = kathikon_pg_jobs
        self.app = self.jobs.app
        self.noop = self.jobs.noop

    def close(self) -> None:
        self.app.close(timeout=5)

    def durability(self) -> str:
        return f"{self.ctx.postgres.durability}; Kathikon commits every insert and ack"

    def insert(self, seq: int, t_ref: float) -> None:
        self.app.insert(self.noop, {"seq": seq, "t_ref": t_ref})

    def insert_many(self, items: Sequence[tuple[int, float]]) -> None:
        self.app.insert_all([self.noop.new({"seq": seq, "t_ref": t}) for seq, t in items])

    def schedule(self, seq: int, due: float) -> None:
        when = dt.datetime.fromtimestamp(due, tz=dt.timezone.utc)
        self.app.insert(self.noop, {"seq": seq, "t_ref": due}, schedule_at=when)

    def worker_argv(self) -> list[str]:
        c = self.ctx.opts.concurrency
        return [str(self.ctx.bin / "kathikon"), "worker", "kathikon_pg_jobs:app",
                "--concurrency", str(c), "--log-level", "warning"]  # fmt: skip

    def worker_notes(self) -> str:
        return (
            f"kathikon worker: 1 process, queue concurrency {self.ctx.opts.concurrency} "
            "(threads), sync no-op worker; LISTEN/NOTIFY wakes idle workers, the leader "
            "promotes scheduled jobs every 1 s (scheduler_interval); --log-level warning "
            "(INFO would log a line per job)"
        )


if __name__ == "__main__":
    sys.exit(peerlib.main(KathikonPgPeer))
