"""oban (the Python port of Oban, on PostgreSQL) adapter for the Kathikon peer benchmarks.

oban needs Python >= 3.12, so it lives in its own virtualenv (``benches/.venv-peers-oban``,
made by setup.sh). Started with another interpreter, this script re-executes itself with that
virtualenv's Python, or reports every workload as skipped when there is none.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import peerlib

OBAN_VENV = Path(__file__).resolve().parent.parent / ".venv-peers-oban"
MIN_PYTHON = (3, 12)


class ObanPeer(peerlib.Peer):
    system = "oban"
    package = "oban"
    backend = "postgres"

    @classmethod
    def unavailable(cls) -> str | None:
        if sys.version_info < MIN_PYTHON:
            return (
                "oban requires Python >= 3.12 and benches/.venv-peers-oban does not exist "
                "(setup.sh found no Python >= 3.12)"
            )
        return None

    def open(self) -> None:
        import asyncio

        import oban_pg_jobs
        import uvloop
        from oban import Oban
        from oban.schema import install
        from psycopg_pool import AsyncConnectionPool

        self.jobs: Any = oban_pg_jobs
        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.pool = AsyncConnectionPool(os.environ["PEER_PG_DSN"], min_size=1, open=False)
        self.loop.run_until_complete(self.pool.open(wait=True))
        self.loop.run_until_complete(install(self.pool))
        self.oban = Oban(pool=self.pool)  # client mode: no queues, only inserts

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.close())
        self.loop.close()

    def durability(self) -> str:
        return str(self.ctx.postgres.durability)

    def insert(self, seq: int, t_ref: float) -> None:
        job = self.jobs.Noop.new({"seq": seq, "t_ref": t_ref})
        self.loop.run_until_complete(self.oban.enqueue(job))

    def insert_many(self, items: Sequence[tuple[int, float]]) -> None:
        jobs = [self.jobs.Noop.new({"seq": seq, "t_ref": t}) for seq, t in items]
        self.loop.run_until_complete(self.oban.enqueue_many(jobs))

    def schedule(self, seq: int, due: float) -> None:
        when = dt.datetime.fromtimestamp(due, tz=dt.timezone.utc)
        job = self.jobs.Noop.new({"seq": seq, "t_ref": due}, scheduled_at=when)
        self.loop.run_until_complete(self.oban.enqueue(job))

    def worker_argv(self) -> list[str]:
        c = self.ctx.opts.concurrency
        return [str(self.ctx.bin / "oban"), "start", "--dsn", os.environ["PEER_PG_DSN"],
                "--queues", f"default:{c}", "--log-level", "WARNING"]  # fmt: skip

    def worker_notes(self) -> str:
        return (
            f"oban start: 1 asyncio (uvloop) process, queue limit {self.ctx.opts.concurrency}, "
            "async no-op worker; inserts NOTIFY the producers, the stager moves scheduled "
            "jobs every 1 s (default)"
        )


def _reexec_with_oban_venv() -> None:
    python = OBAN_VENV / "bin" / "python"
    if sys.version_info < MIN_PYTHON and python.exists():
        os.execv(python, [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


if __name__ == "__main__":
    _reexec_with_oban_venv()
    sys.exit(peerlib.main(ObanPeer))
