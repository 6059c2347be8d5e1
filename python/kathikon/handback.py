"""Handing jobs back at shutdown: what a runner does with the jobs it holds when its grace
period runs out.

A job still running then (or claimed and not started yet) is acked with the ``interrupt``
outcome: the store makes it due again at once, records why in its history and, as with a
snooze, does not count the attempt, so a deploy never uses up (or discards) a job. A job
whose process dies instead is rescued as ``orphaned`` at the next open, and that attempt
counts.

Ownership decides who reports a lane's batch, so that no outcome is sent twice: a lane owns
its :class:`LaneBatch` until the shutdown *takes* it (under the runner's hand-back lock, with
the runner marked abandoned in the same step). From then on the shutdown sends the batch's
finished outcomes and hands back the rest, and the lane, when its job returns, sends nothing
(its late result would only be refused as stale). A lane checks the abandoned mark before
each job, so it never starts a job the shutdown handed back.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from .execute import AckTuple, Attempt
from .job import Job
from .vocabulary import INTERRUPT

if TYPE_CHECKING:
    from .worker import Registration


class LaneBatch:
    """One lane's claimed jobs while it works through them. The lane updates ``started``
    (jobs taken from ``jobs`` so far: run, running, or queued for the loop) and ``handed``
    (jobs before this index that are async are the loop's) and appends to ``acks`` (and,
    when telemetry watches jobs, the matching :class:`Attempt` to ``attempts`` just after);
    ``sent`` counts the outcomes the lane sent early (before a job whose timeout may end the
    process). The shutdown reads them once it has taken the batch."""

    __slots__ = ("acks", "attempts", "handed", "jobs", "sent", "started", "taken")

    def __init__(self, jobs: list[Job], acks: list[AckTuple], attempts: list[Attempt]) -> None:
        self.jobs = jobs
        self.acks = acks
        self.attempts = attempts
        self.started = 0
        self.handed = 0
        self.sent = 0
        self.taken = False

    def unsent(self) -> tuple[list[Attempt], list[AckTuple]]:
        """The outcomes not sent yet, marked sent, with their attempts when all are there."""
        acks = self.acks[self.sent :]
        attempts = self.attempts[self.sent :] if len(self.attempts) == len(self.acks) else []
        self.sent = len(self.acks)
        return attempts, acks

    def settle(
        self, is_async: dict[str, bool], started: int, acked: int, handed: int
    ) -> tuple[list[Attempt], list[AckTuple], list[Job]]:
        """What the shutdown sends for this batch, from its counters as read when it was
        taken: the outcomes of the jobs that finished (with their attempts, to report, when
        all are there), and the jobs to hand back (the sync job that was running, async ones
        not yet given to the loop, and every job not started)."""
        finished = self.acks[self.sent : acked]
        attempts = self.attempts[self.sent : acked] if len(self.attempts) >= acked else []
        back: list[Job] = []
        sync_seen = 0
        for index, job in enumerate(self.jobs[:started]):
            if is_async.get(job.worker, False):
                if index >= handed:
                    back.append(job)
            else:
                sync_seen += 1
                if sync_seen > acked:
                    back.append(job)
        back.extend(self.jobs[started:])
        return attempts, finished, back


def interrupt_reason(grace: float) -> str:
    """The history entry of a job handed back by this process."""
    return (
        f"interrupted by shutdown: worker process {os.getpid()} stopped before the job "
        f"finished (its grace period of {grace:g} s ran out); due again, this attempt not "
        "counted"
    )


def interrupt_acks(jobs: list[Job], reason: str) -> list[AckTuple]:
    return [(job.id, job.attempt, INTERRUPT, reason, None, None) for job in jobs]


def running_for(job: Job) -> float:
    """Seconds since the job's attempt started (0 if unknown)."""
    attempted = job.attempted_at
    return max(0.0, time.time() - attempted.timestamp()) if attempted is not None else 0.0


def describe(jobs: list[Job]) -> str:
    """``7 (myapp.jobs.slow, attempt 1), 9 (…)`` for the stop log line."""
    return ", ".join(f"{job.id} ({job.worker}, attempt {job.attempt})" for job in jobs)


def async_workers(workers: dict[str, Registration]) -> dict[str, bool]:
    return {name: reg.is_async for name, reg in workers.items()}


__all__ = [
    "LaneBatch",
    "async_workers",
    "describe",
    "interrupt_acks",
    "interrupt_reason",
    "running_for",
]
