"""Random sequences of calls on the public API, checked against a reference model of the job
state machine (hypothesis.stateful).

The machine inserts jobs (one at a time, several at once, some scheduled, some unique: a key
of three, a period or none, two sets of states, replacing args or not), cancels, retries,
drains (everything or one queue), advances the manual clock, prunes, pauses and resumes
queues (a paused queue's jobs wait through drains, and stay paused across a reopen), inserts
batches with callbacks and adds jobs to them, and closes and reopens the store file. Each job
carries a *script*: what its runs do, one entry per attempt (complete, fail, snooze, cancel,
discard; complete once the script is used up), with its backoff and snooze lengths, so the
model can predict every run. After every step
each job's state, attempt, max_attempts, error count and due time, the store's counts, and
what ``drain`` returned must be exactly what the model says, and so must each batch's counts,
whether it finished, and which callbacks it inserted (the model inserts them when the last
member finishes, as the store does in that change's transaction, and the drain runs them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

import kathikon

# The "slow" profile (500 examples) takes minutes, past pytest's default timeout.
pytestmark = pytest.mark.timeout(3600 if os.environ.get("KATHIKON_HYPOTHESIS") == "slow" else 120)

QUEUES = ("default", "other")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SECOND = 1_000_000
WAITING = ("scheduled", "retryable")
FINISHED = ("completed", "cancelled", "discarded")
STEPS = ["complete", "fail", "snooze", "cancel", "discard"]


def micros(when: datetime) -> int:
    return (when - EPOCH) // timedelta(microseconds=1)


@dataclass
class ModelJob:
    """What the reference model knows of one job."""

    queue: str
    script: list[str]
    backoff: int  # seconds
    snooze: int  # seconds
    state: str
    max_attempts: int
    due: int  # µs: when a scheduled/retryable job becomes available
    inserted_at: int = 0
    attempt: int = 0
    errors: int = 0
    finished_at: Optional[int] = None

    def step(self) -> str:
        """What the next run does (the run of attempt ``attempt + 1``)."""
        index = self.attempt  # attempt n runs script[n - 1]
        return self.script[index] if index < len(self.script) else "complete"

    def run(self, now: int) -> str:
        """One run; returns the state the attempt ended in, as ``drain`` counts it."""
        assert self.state == "available"
        what = self.step()
        self.attempt += 1
        if what == "complete":
            self.finish("completed", now)
        elif what == "fail":
            self.errors += 1
            if self.attempt >= self.max_attempts:
                self.finish("discarded", now)
            else:
                self.state, self.due = "retryable", now + self.backoff * SECOND
        elif what == "snooze":
            self.max_attempts += 1
            self.state, self.due = "scheduled", now + self.snooze * SECOND
        else:
            self.errors += 1
            self.finish("cancelled" if what == "cancel" else "discarded", now)
        return self.state

    def finish(self, state: str, now: int) -> None:
        self.state, self.finished_at = state, now


@dataclass
class ModelBatch:
    """What the reference model knows of one batch."""

    events: frozenset[str]
    members: list[int]
    #: Final states of members pruned since: they stay counted.
    pruned: dict[str, int]
    finished: bool = False
    #: Event → the callback job's key in the model (a placeholder until the store's id is
    #: read back after the call that fired it).
    fired: Optional[dict[str, int]] = None


EVENTS = ("completed", "discarded", "cancelled", "finished")

script_steps = st.lists(st.sampled_from(STEPS), max_size=4)
job_specs = st.fixed_dictionaries(
    {
        "queue": st.sampled_from(QUEUES),
        "script": script_steps,
        "backoff": st.sampled_from([0, 0, 5, 60]),
        "snooze": st.sampled_from([0, 10, 90]),
        "max_attempts": st.integers(min_value=1, max_value=4),
        "schedule_in": st.sampled_from([None, None, 0, 30, 120]),
        "priority": st.integers(min_value=0, max_value=9),
    }
)


class JobQueueMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="kathikon-stateful-"))
        self.path = self.dir / "jobs.redb"
        self.model: dict[int, ModelJob] = {}
        self.paused: set[str] = set()
        # A unique key → the job it names and when it expires (by the inserting period).
        self.unique_keys: dict[int, tuple[int, Optional[int]]] = {}
        self.batches: dict[str, ModelBatch] = {}
        self.placeholders = 0
        self.app = self.open()
        self.now = micros(self.app.now())
        # The latest the clock has been: a reopen restarts it at the wall clock, earlier.
        self.high_water = self.now

    def open(self) -> kathikon.Kathikon:
        app = kathikon.Kathikon(
            self.path, queues={"default": 2, "other": 1}, clock="manual", max_attempts=3
        )

        def backoff(job: kathikon.Job) -> float:
            return float(job.args["backoff"])

        @app.worker(name="stateful.scripted", backoff=backoff)
        def scripted(job: kathikon.Job) -> Any:
            script = job.args["script"]
            what = script[job.attempt - 1] if job.attempt <= len(script) else "complete"
            if what == "fail":
                raise RuntimeError(f"scripted failure of attempt {job.attempt}")
            if what == "snooze":
                return kathikon.Snooze(job.args["snooze"])
            if what == "cancel":
                raise kathikon.Cancel("scripted cancel")
            if what == "discard":
                return kathikon.Discard("scripted discard")
            return None

        app.worker(name="stateful.callback")(lambda job: None)
        return app

    def teardown(self) -> None:
        try:
            self.app.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- the model's clock ---------------------------------------------------------------

    def promote(self) -> None:
        """Due jobs become available: every commit promotes, and the steps that move time
        (advance_clock, reopen) wait for a commit."""
        for job in self.model.values():
            if job.state in WAITING and job.due <= self.now:
                job.state = "available"

    def spec(self, params: dict[str, Any]) -> kathikon.JobSpec:
        args = {k: params[k] for k in ("script", "backoff", "snooze")}
        return self.app.new(
            "stateful.scripted",
            args,
            queue=params["queue"],
            max_attempts=params["max_attempts"],
            schedule_in=params["schedule_in"],
            priority=params["priority"],
        )

    def add(self, job: kathikon.Job, params: dict[str, Any]) -> int:
        delay = params["schedule_in"] or 0
        due = self.now + delay * SECOND
        self.model[job.id] = ModelJob(
            queue=params["queue"],
            script=list(params["script"]),
            backoff=params["backoff"],
            snooze=params["snooze"],
            state="scheduled" if due > self.now else "available",
            max_attempts=params["max_attempts"],
            due=due,
            inserted_at=self.now,
        )
        return job.id

    # -- batches ---------------------------------------------------------------------------

    def batch_counts(self, batch: ModelBatch) -> dict[str, int]:
        counts = dict(batch.pruned)
        for job_id in batch.members:
            if job_id in self.model:
                state = self.model[job_id].state
                counts[state] = counts.get(state, 0) + 1
        return counts

    def settle(self) -> None:
        """Finish each batch whose last member finished: its callbacks whose conditions hold
        become jobs, keyed by placeholders until :meth:`resolve` reads their ids back."""
        for batch in self.batches.values():
            counts = self.batch_counts(batch)
            if batch.finished or any(counts.get(s, 0) for s in counts if s not in FINISHED):
                continue
            batch.finished, batch.fired = True, {}
            holds = {
                "completed": counts.get("completed", 0) == sum(counts.values()),
                "discarded": counts.get("discarded", 0) > 0,
                "cancelled": counts.get("cancelled", 0) > 0,
                "finished": True,
            }
            for event in EVENTS:
                if event in batch.events and holds[event]:
                    self.placeholders -= 1
                    batch.fired[event] = self.placeholders
                    self.model[self.placeholders] = ModelJob(
                        queue="default",
                        script=[],
                        backoff=0,
                        snooze=0,
                        state="available",
                        max_attempts=3,
                        due=self.now,
                        inserted_at=self.now,
                    )

    def resolve(self) -> None:
        """Re-key the callbacks the model fired by the ids the store gave them."""
        for batch_id, batch in self.batches.items():
            if not batch.fired or all(key > 0 for key in batch.fired.values()):
                continue
            stored = self.app.batch(batch_id).callbacks
            for event, key in list(batch.fired.items()):
                if key < 0:
                    real = stored[event]
                    assert real is not None, f"batch {batch_id}: on_{event} was not inserted"
                    self.model[real] = self.model.pop(key)
                    batch.fired[event] = real

    # -- rules -----------------------------------------------------------------------------

    @initialize(target=jobs, params=job_specs)
    def first_job(self, params: dict[str, Any]) -> int:
        return self.insert(params)

    @rule(target=jobs, params=job_specs)
    def insert(self, params: dict[str, Any]) -> int:
        args = {k: params[k] for k in ("script", "backoff", "snooze")}
        job = self.app.insert(
            "stateful.scripted",
            args,
            queue=params["queue"],
            max_attempts=params["max_attempts"],
            schedule_in=params["schedule_in"],
            priority=params["priority"],
        )
        assert job.args == args
        return self.add(job, params)

    def holds(self, key: int, period: Optional[int], states: frozenset[str]) -> Optional[bool]:
        """Whether a unique insert of ``key`` finds a job holding it; ``None`` when either
        answer is right: the key expired at a time the clock has since gone back from (a
        reopen), so whether the expiry plugin deleted it yet decides."""
        if key not in self.unique_keys:
            return False
        job_id, expires = self.unique_keys[key]
        m = self.model.get(job_id)
        if m is None or m.state not in states:
            return False
        if period is not None and self.now >= m.inserted_at + period * SECOND:
            return False
        if expires is not None and expires <= self.now:
            return False
        if expires is not None and expires <= self.high_water:
            return None
        return True

    @rule(
        target=jobs,
        params=job_specs,
        key=st.integers(min_value=0, max_value=2),
        period=st.sampled_from([None, 30]),
        incomplete=st.booleans(),
        replace=st.booleans(),
    )
    def insert_unique(
        self,
        params: dict[str, Any],
        key: int,
        period: Optional[int],
        incomplete: bool,
        replace: bool,
    ) -> int:
        states = kathikon.Unique.INCOMPLETE
        if not incomplete:
            states = states | {"completed"}
        unique = kathikon.Unique(
            period=period, fields=("worker", "args"), keys=("key",), states=states
        )
        args = {k: params[k] for k in ("script", "backoff", "snooze")}
        job = self.app.insert(
            "stateful.scripted",
            {**args, "key": key},
            queue=params["queue"],
            max_attempts=params["max_attempts"],
            schedule_in=params["schedule_in"],
            priority=params["priority"],
            unique=unique,
            replace=("args",) if replace else None,
        )
        held = self.holds(key, period, states)
        if held is not None:
            assert job.conflict == held, f"key {key}: conflict {job.conflict}, model {held}"
        if not job.conflict:
            job_id = self.add(job, params)
            expires = None if period is None else self.now + period * SECOND
            self.unique_keys[key] = (job_id, expires)
            return job_id
        job_id = self.unique_keys[key][0]
        assert job.id == job_id
        m = self.model[job_id]
        if replace and m.state in ("scheduled", "available", "retryable"):
            m.script, m.backoff, m.snooze = list(args["script"]), args["backoff"], args["snooze"]
            assert job.args == {**args, "key": key}
        return job_id

    @rule(target=jobs, batch=st.lists(job_specs, min_size=1, max_size=4))
    def insert_all(self, batch: list[dict[str, Any]]) -> Any:
        stored = self.app.insert_all([self.spec(p) for p in batch])
        assert len(stored) == len(batch)
        ids = [self.add(job, p) for job, p in zip(stored, batch)]
        assert ids == sorted(ids), "ids ascend in insert order"
        return multiple(*ids)

    @rule(
        target=jobs,
        members=st.lists(job_specs, min_size=1, max_size=3),
        events=st.frozensets(st.sampled_from(EVENTS)),
    )
    def insert_batch(self, members: list[dict[str, Any]], events: frozenset[str]) -> Any:
        given = {f"on_{event}": "stateful.callback" for event in events}
        batch_id = f"batch-{len(self.batches)}"
        stored = self.app.insert_batch([self.spec(p) for p in members], batch_id=batch_id, **given)
        assert stored.id == batch_id
        ids = [self.add(job, p) for job, p in zip(stored.jobs, members)]
        self.batches[batch_id] = ModelBatch(events=events, members=ids, pruned={})
        return multiple(*ids)

    @rule(target=jobs, params=job_specs, pick=st.integers(min_value=0))
    def join_batch(self, params: dict[str, Any], pick: int) -> Any:
        if not self.batches:
            return multiple()
        batch_id = sorted(self.batches)[pick % len(self.batches)]
        batch = self.batches[batch_id]
        if batch.finished:
            with pytest.raises(kathikon.InvalidJobError, match="takes no more jobs"):
                self.app.insert_batch([self.spec(params)], batch_id=batch_id)
            return multiple()
        (job,) = self.app.insert_batch([self.spec(params)], batch_id=batch_id).jobs
        batch.members.append(self.add(job, params))
        return multiple(job.id)

    def pruned(self, job_id: int) -> bool:
        """Whether the job was pruned; then every call naming it raises JobNotFoundError."""
        if job_id in self.model:
            return False
        for call in (self.app.get, self.app.cancel, self.app.retry):
            try:
                call(job_id)
            except kathikon.JobNotFoundError:
                continue
            raise AssertionError(f"job {job_id} was pruned, yet {call.__name__} found it")
        return True

    @rule(job_id=jobs)
    def cancel(self, job_id: int) -> None:
        if self.pruned(job_id):
            return
        m = self.model[job_id]
        if m.state not in FINISHED:
            m.errors += 1
            m.finish("cancelled", self.now)
        self.settle()
        got = self.app.cancel(job_id)
        assert got.state.value == m.state
        self.resolve()

    @rule(job_id=jobs)
    def retry(self, job_id: int) -> None:
        if self.pruned(job_id):
            return
        m = self.model[job_id]
        if m.state != "available":
            m.state, m.due, m.finished_at = "available", self.now, None
            m.max_attempts = max(m.max_attempts, m.attempt + 1)
        got = self.app.retry(job_id)
        assert got.state.value == "available"

    def run_drain(self, queue: Optional[str], with_scheduled: bool) -> None:
        """Run the model's drain, then the app's, and compare what each attempt ended in."""
        expected: dict[str, int] = {}
        for _round in range(1000):
            if with_scheduled:
                for m in self.model.values():
                    if m.state in WAITING:
                        m.state = "available"  # store-wide, as if their time had come
            self.promote()
            ready = [
                m
                for m in self.model.values()
                if m.state == "available"
                and (queue is None or m.queue == queue)
                and m.queue not in self.paused
            ]
            if not ready:
                break
            for m in ready:
                ended = m.run(self.now)
                expected[ended] = expected.get(ended, 0) + 1
                self.settle()
        else:
            raise AssertionError("the model's drain never ends")
        assert self.app.drain(queue, with_scheduled=with_scheduled) == expected
        self.resolve()

    # Draining runs the jobs, so it gets three rules to be picked more often.
    @rule()
    def drain(self) -> None:
        self.run_drain(None, with_scheduled=False)

    @rule(queue=st.sampled_from(QUEUES))
    def drain_one_queue(self, queue: str) -> None:
        self.run_drain(queue, with_scheduled=False)

    @rule(queue=st.sampled_from([None, *QUEUES]))
    def drain_with_scheduled(self, queue: Optional[str]) -> None:
        self.run_drain(queue, with_scheduled=True)

    @rule(seconds=st.sampled_from([1, 5, 30, 61, 200]))
    def advance_clock(self, seconds: int) -> None:
        self.app.advance_clock(seconds)
        self.now += seconds * SECOND
        self.high_water = max(self.high_water, self.now)
        assert micros(self.app.now()) == self.now
        self.promote()

    @rule(older_than=st.sampled_from([0, 30]))
    def prune(self, older_than: int) -> None:
        cutoff = self.now - older_than * SECOND
        gone = [
            job_id
            for job_id, m in self.model.items()
            if m.finished_at is not None and m.finished_at <= cutoff
        ]
        assert self.app.prune(older_than) == len(gone)
        for job_id in gone:
            state = self.model.pop(job_id).state
            for batch in self.batches.values():
                if job_id in batch.members:
                    batch.pruned[state] = batch.pruned.get(state, 0) + 1

    @rule(queue=st.sampled_from(QUEUES))
    def pause_queue(self, queue: str) -> None:
        assert self.app.pause_queue(queue).paused
        self.paused.add(queue)

    @rule(queue=st.sampled_from(QUEUES))
    def resume_queue(self, queue: str) -> None:
        assert not self.app.resume_queue(queue).paused
        self.paused.discard(queue)

    @rule()
    def reopen(self) -> None:
        """Close and open the same file. The manual clock restarts at the wall clock."""
        self.app.close()
        self.app = self.open()
        self.app.advance_clock(0)  # wait for the first commit, which promotes what is due
        self.now = micros(self.app.now())
        self.high_water = max(self.high_water, self.now)
        self.promote()

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        stored = {j.id: j for j in self.app.jobs(limit=10_000)}
        assert set(stored) == set(self.model), "the store holds exactly the model's jobs"
        for job_id, m in self.model.items():
            job = stored[job_id]
            got = (job.state.value, job.attempt, job.max_attempts, len(job.errors))
            want = (m.state, m.attempt, m.max_attempts, m.errors)
            assert got == want, f"job {job_id}: stored {got}, model {want} ({m})"
            if m.state in WAITING:
                assert micros(job.scheduled_at) == m.due, f"job {job_id}'s due time"
            assert job.queue == m.queue
            assert (job.completed_at is not None) == (m.state == "completed")
            assert (job.cancelled_at is not None) == (m.state == "cancelled")
            assert (job.discarded_at is not None) == (m.state == "discarded")
        counts: dict[str, dict[str, int]] = {q: {} for q in QUEUES}
        for m in self.model.values():
            counts[m.queue][m.state] = counts[m.queue].get(m.state, 0) + 1
        stats = self.app.stats()
        for q in QUEUES:
            assert {s: n for s, n in stats[q].items() if n} == counts[q], f"stats of {q}"

    @invariant()
    def batches_match_the_model(self) -> None:
        for batch_id, batch in self.batches.items():
            status = self.app.batch(batch_id)
            counts = {state: n for state, n in status.counts.items() if n}
            assert counts == self.batch_counts(batch), f"{batch_id}: {status} vs {batch}"
            assert status.finished == batch.finished, f"{batch_id}: {status} vs {batch}"
            fired = {event: i for event, i in status.callbacks.items() if i is not None}
            assert fired == (batch.fired or {}), f"{batch_id}'s callbacks: {status} vs {batch}"

    @invariant()
    def paused_queues_match_the_model(self) -> None:
        assert {q for q in QUEUES if self.app.check_queue(q).paused} == self.paused

    @invariant()
    def nothing_is_executing_between_steps(self) -> None:
        assert self.app.stats()["default"]["executing"] == 0
        assert self.app.stats()["other"]["executing"] == 0


# max_examples and deadline come from the profile conftest.py loads ("fast" by default,
# KATHIKON_HYPOTHESIS=slow for the long run).
JobQueueMachine.TestCase.settings = settings(stateful_step_count=40)
TestJobQueue = JobQueueMachine.TestCase
