"""Kathikon's app and no-op worker on PostgreSQL for the peer benchmarks (imported by the
adapter and by ``kathikon worker kathikon_pg_jobs:app``)."""

import os

import peermark

import kathikon

app = kathikon.Kathikon(
    url=os.environ["PEER_PG_DSN"],
    migrate=True,
    queues={"default": int(os.environ.get("PEER_CONCURRENCY", "10"))},
)


@app.worker(name="noop")
def noop(job: kathikon.Job) -> None:
    peermark.record(job.args["seq"], job.args["t_ref"])
