"""Huey's jobs for the peer benchmarks (imported by the adapter and by ``huey_consumer``)."""

import os

import peermark
from huey import SqliteHuey

# Huey's durable embedded setup: SQLite in WAL mode (its default) with synchronous=FULL, so
# every enqueue and every dequeue commit is fsync'd. Everything else is Huey's default.
huey = SqliteHuey(name="peers", filename=os.environ["PEER_DB_PATH"], fsync=True)


@huey.task()
def noop(seq: int, t_ref: float) -> None:
    peermark.record(seq, t_ref)
