"""FlexiQ's queue and task for the peer benchmarks (imported by the adapter and the worker)."""

import os

import peermark
from flexiq import Queue

# FlexiQ's own embedded default: SQLite, WAL, synchronous=NORMAL (set by its Rust core; the
# Python API has no setting for it). Worker threads = the benchmark's concurrency.
queue = Queue(
    db_path=os.environ["PEER_DB_PATH"],
    workers=int(os.environ.get("PEER_CONCURRENCY", "10")),
)


@queue.task(name="noop")
def noop(seq: int, t_ref: float) -> None:
    peermark.record(seq, t_ref)
