"""Dramatiq's broker and actor for the peer benchmarks (imported by the adapter and workers)."""

import os

import dramatiq
import peermark
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["PEER_REDIS_URL"])  # default middleware
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop")
def noop(seq: int, t_ref: float) -> None:
    peermark.record(seq, t_ref)
