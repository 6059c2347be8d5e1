"""RQ's job function for the peer benchmarks (imported by the adapter and by the RQ workers)."""

import peermark


def noop(seq: int, t_ref: float) -> None:
    peermark.record(seq, t_ref)
