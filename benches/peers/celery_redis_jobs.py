"""Celery's app and task for the peer benchmarks (imported by the adapter and the worker)."""

import os

import peermark
from celery import Celery

app = Celery("peers", broker=os.environ["PEER_REDIS_URL"])
app.conf.update(
    # the durable setup: acknowledge after the task ran, and give the message back to the
    # broker if the worker process running it dies
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_ignore_result=True,  # no result backend configured, as for the other systems
    broker_connection_retry_on_startup=True,
)


@app.task(name="noop")
def noop(seq: int, t_ref: float) -> None:
    peermark.record(seq, t_ref)
