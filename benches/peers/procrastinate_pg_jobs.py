"""procrastinate's app and task for the peer benchmarks (imported by the adapter and worker)."""

import os

import peermark
import procrastinate

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ["PEER_PG_DSN"])
)


@app.task(name="noop")
async def noop(seq: int, t_ref: float) -> None:
    peermark.record(seq, t_ref)
