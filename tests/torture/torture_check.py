"""The torture's checker: reads every child's event log and every snapshot of the store the
driver took after a kill, and checks the whole history against Kathikon's promises.

Invariants (each violation is a line in :attr:`History.violations`; a lost job also counts in
:attr:`History.lost`):

* every acknowledged insert exists at every later look — or was pruned, which needs proof it
  had finished: it was seen finished, a committed terminal outcome was logged, its last run
  finished it, or it was cancelled; and a child that prunes ran since it was last seen — and
  it reaches a terminal state by the end;
* jobs that were never acknowledged exist only for the one insert each child had in flight;
* no completed job runs again: after a run that finished its job (completed, cancelled,
  discarded) the job runs again only if that attempt was rescued (``orphaned:``);
* every run is a new attempt: attempts strictly increase, run by run, across processes; and
  a job runs at most ``max_attempts`` times (attempts are counted when claimed, so a run cut
  short by a kill uses one up: this is stronger than "max_attempts + runs cut short");
* attempts and max_attempts never decrease, error histories only grow, and a finished job
  never changes again (the torture never calls ``retry``);
* every discarded, cancelled or rescued job carries its reason, for the right attempt;
* nothing is executing after a reopen, and what the reopen rescued is exactly what gained an
  ``orphaned:`` entry;
* outcomes logged as committed (``stored``) and cancels that returned are what the store says.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from torture_child import CANCEL_REASON, DISCARD_REASON, FAILURE_TEXT, is_terminal

import kathikon

ORPHAN = "orphaned:"
UNFINISHED = frozenset({"scheduled", "available", "executing", "retryable"})


def read_log(path: Path) -> list[list[str]]:
    """Complete lines of an event log, split into fields. A line the kill cut short has no
    newline; the child never went past it, so it is dropped."""
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().split("\n")[:-1]]


@dataclass(frozen=True)
class View:
    """One job as a snapshot found it."""

    id: int
    state: str
    attempt: int
    max_attempts: int
    errors: tuple[tuple[int, str], ...]
    key: tuple[int, int, int]  # (child, batch, seq) from its args
    kind: str
    completed: bool

    @classmethod
    def of(cls, job: kathikon.Job) -> View:
        args = job.args
        return cls(
            id=job.id,
            state=job.state.value,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            errors=tuple((e["attempt"], e["error"]) for e in job.errors),
            key=(args["c"], args["b"], args["s"]),
            kind=args["kind"],
            completed=job.completed_at is not None,
        )

    def orphans(self) -> list[int]:
        return [a for a, text in self.errors if text.startswith(ORPHAN)]


def snapshot(app: kathikon.Kathikon) -> dict[int, View]:
    out: dict[int, View] = {}
    after: Optional[int] = None
    while True:
        page = app.jobs(limit=1000, after=after)
        if not page:
            return out
        for job in page:
            out[job.id] = View.of(job)
        after = page[-1].id


@dataclass
class Insert:
    child: int
    batch: int
    seq: int
    kind: str
    queue: str
    max_attempts: int
    scheduled: bool


@dataclass
class Run:
    attempt: int
    max_attempts: int
    intent: str
    child: int  # the process that ran it
    key: tuple[int, int, int]

    @property
    def finishes(self) -> bool:
        return is_terminal(self.intent, self.attempt, self.max_attempts)


@dataclass
class Child:
    """One child process as its log tells it."""

    no: int
    pruning: bool
    after_unchecked: bool  # its open had to rescue what the previous child left executing
    trigger: str = ""
    opened: Optional[tuple[int, int]] = None
    ready: bool = False
    done: bool = False
    insert_in_flight: Optional[int] = None  # batch whose insert was running at the kill
    cancel_in_flight: Optional[int] = None
    inserts: int = 0
    runs: int = 0


@dataclass
class History:
    acked: dict[int, Insert] = field(default_factory=dict)
    runs: defaultdict[int, list[Run]] = field(default_factory=lambda: defaultdict(list))
    run_keys: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    cancel_intents: dict[int, int] = field(default_factory=dict)  # id → child that cancelled
    cancelled: dict[int, tuple[str, int]] = field(default_factory=dict)  # id → state, attempt
    stored: defaultdict[int, list[tuple[int, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    children: list[Child] = field(default_factory=list)
    acked_batches: defaultdict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    # what the snapshots taught
    last_view: dict[int, View] = field(default_factory=dict)
    last_seen_child: dict[int, int] = field(default_factory=dict)
    completed_at_attempt: dict[int, int] = field(default_factory=dict)
    gone: dict[int, str] = field(default_factory=dict)  # pruned id → the proof it had finished
    unacked_seen: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    snapshots: int = 0
    rescued: int = 0  # rescues done by reopens (parent's and children's)
    pruned_logged: int = 0
    violations: list[str] = field(default_factory=list)
    lost: set[int] = field(default_factory=set)
    _child_recovery_uncertain: bool = False
    _children_since_check: list[int] = field(default_factory=list)

    def fail(self, message: str) -> None:
        if message not in self.violations:
            self.violations.append(message)

    # -- reading logs ----------------------------------------------------------------------

    def ingest(self, child: Child, lines: list[list[str]]) -> None:
        """Take in one child's whole log (after it was killed or finished)."""
        self.children.append(child)
        self._children_since_check.append(child.no)
        for fields in lines:
            getattr(self, "_on_" + fields[0].replace("?", "_intent"))(child, fields)
        if child.after_unchecked and child.opened is None:
            # Killed before logging its open: whether its recovery committed is unknown.
            self._child_recovery_uncertain = True
        if not child.after_unchecked and child.opened not in (None, (0, 0)):
            self.fail(
                f"child {child.no} rescued {child.opened} at open although the store had been "
                "reopened (and rescued) since the last kill"
            )

    def _on_open(self, child: Child, f: list[str]) -> None:
        child.opened = (int(f[1]), int(f[2]))

    def _on_ready(self, child: Child, f: list[str]) -> None:
        child.ready = True

    def _on_done(self, child: Child, f: list[str]) -> None:
        child.done = True

    def _on_error(self, child: Child, f: list[str]) -> None:
        self.fail(f"child {child.no}: {' '.join(f[1:])}")

    def _on_prune(self, child: Child, f: list[str]) -> None:
        self.pruned_logged += int(f[1])

    def _on_ins_intent(self, child: Child, f: list[str]) -> None:
        child.insert_in_flight = int(f[1])

    def _on_ins(self, child: Child, f: list[str]) -> None:
        job_id = int(f[1])
        ins = Insert(
            child=int(f[2]),
            batch=int(f[3]),
            seq=int(f[4]),
            kind=f[5],
            queue=f[6],
            max_attempts=int(f[7]),
            scheduled=f[8] == "1",
        )
        if job_id in self.acked:
            self.fail(f"job id {job_id} was returned by two inserts")
        if ins.child != child.no:
            self.fail(f"child {child.no} logged an insert of child {ins.child}")
        self.acked[job_id] = ins
        self.acked_batches[ins.child].add(ins.batch)
        child.insert_in_flight = None
        child.inserts += 1

    def _on_run(self, child: Child, f: list[str]) -> None:
        job_id = int(f[1])
        c, b, s = (int(x) for x in f[6].split(":"))
        run = Run(int(f[2]), int(f[3]), f[4], child.no, (c, b, s))
        self.runs[job_id].append(run)
        if self.run_keys.setdefault(job_id, run.key) != run.key:
            self.fail(f"job {job_id} ran with the args of two different jobs")
        child.runs += 1

    def _on_cxl_intent(self, child: Child, f: list[str]) -> None:
        child.cancel_in_flight = int(f[1])
        self.cancel_intents[int(f[1])] = child.no

    def _on_cxl(self, child: Child, f: list[str]) -> None:
        child.cancel_in_flight = None
        if f[2] == "gone":
            return
        self.cancelled[int(f[1])] = (f[2], int(f[3]))
        if f[2] in UNFINISHED:
            self.fail(f"cancel({f[1]}) returned it {f[2]}")

    def _on_stored(self, child: Child, f: list[str]) -> None:
        self.stored[int(f[1])].append((int(f[2]), f[3]))

    # -- snapshots -------------------------------------------------------------------------

    def _finished_proof(self, job_id: int) -> Optional[str]:
        """Why a job that is gone may have been pruned (it had finished), or None. Only what
        happened after the job was last seen unfinished counts: a run that attempt or an
        earlier one made was already reflected in what was seen."""
        last = self.last_view.get(job_id)
        if last is not None and last.state not in UNFINISHED:
            return f"seen {last.state}"
        seen_attempt = last.attempt if last is not None else 0
        runs = self.runs.get(job_id, [])
        for attempt, outcome in self.stored.get(job_id, []):
            claimed = [r.max_attempts for r in runs if r.attempt == attempt]
            finished = is_terminal(outcome, attempt, claimed[0] if claimed else attempt)
            if finished and attempt > seen_attempt:
                return f"outcome {outcome} committed"
        if runs and runs[-1].finishes and runs[-1].attempt > seen_attempt:
            return f"last run {runs[-1].intent}"
        cancelled_by = self.cancel_intents.get(job_id)
        if cancelled_by is not None and cancelled_by > self.last_seen_child.get(job_id, -1):
            return "cancelled"
        return None

    def _pruning_since(self, job_id: int, first_child: int, upto: int) -> bool:
        """Whether a child that prunes ran after ``job_id`` was last seen (or inserted)."""
        seen = self.last_seen_child.get(job_id)
        lo = first_child if seen is None else seen + 1
        return any(c.pruning for c in self.children if lo <= c.no <= upto)

    def check_snapshot(self, views: dict[int, View], recovery: tuple[int, int]) -> None:
        """Check what a reopen found after the last child in :attr:`children` died."""
        upto = self.children[-1].no
        self.snapshots += 1
        where = f"after child {upto}"
        new_orphans = 0
        for view in views.values():
            before = self.last_view.get(view.id)
            new_orphans += len(view.orphans()) - (len(before.orphans()) if before else 0)
            self._check_view(view, before, where)
        self._check_missing(views, upto, where)
        self._check_recovery(new_orphans, recovery, where)
        for job_id, view in views.items():
            self.last_view[job_id] = view
            self.last_seen_child[job_id] = upto
            if view.state == "completed":
                self.completed_at_attempt[job_id] = view.attempt

    def _check_missing(self, views: dict[int, View], upto: int, where: str) -> None:
        """Acknowledged inserts are there, or were pruned after they finished."""
        for job_id, ins in self.acked.items():
            if job_id in views or job_id in self.gone or job_id in self.lost:
                continue
            proof = self._finished_proof(job_id)
            pruning = self._pruning_since(job_id, ins.child, upto)
            if proof is None or not pruning:
                self.lost.add(job_id)
                self.fail(
                    f"{where}: acknowledged job {job_id} ({ins}) is missing "
                    f"(proof it finished: {proof}; a pruning child ran since: {pruning})"
                )
            else:
                self.gone[job_id] = proof
        for job_id in self.last_view:
            if job_id not in views and job_id not in self.acked and job_id not in self.gone:
                proof = self._finished_proof(job_id)
                if proof is None:
                    self.fail(f"{where}: unacknowledged job {job_id} vanished unfinished")
                self.gone[job_id] = proof or "?"

    def _check_recovery(self, new_orphans: int, recovery: tuple[int, int], where: str) -> None:
        """What the reopens rescued is exactly what gained an ``orphaned:`` entry."""
        expected = sum(recovery)
        for no in self._children_since_check:
            opened = self.children[no].opened
            expected += sum(opened) if opened else 0
        uncertain = self._child_recovery_uncertain and new_orphans > expected
        if new_orphans != expected and not uncertain:
            self.fail(
                f"{where}: {new_orphans} jobs gained an orphaned: entry but the reopens "
                f"reported {expected} rescued"
            )
        self.rescued += new_orphans
        self._child_recovery_uncertain = False
        self._children_since_check = []

    def _check_view(self, v: View, before: Optional[View], where: str) -> None:
        if v.state == "executing":
            self.fail(f"{where}: job {v.id} is still executing after the reopen")
        if v.id in self.gone:
            self.fail(f"{where}: job {v.id} came back after it was gone")
        ins = self.acked.get(v.id)
        if ins is None:
            self.unacked_seen[v.id] = v.key
        elif (ins.child, ins.batch, ins.seq, ins.kind) != (*v.key, v.kind):
            self.fail(f"{where}: job {v.id} has args {v.key} {v.kind}, inserted as {ins}")
        if v.attempt > v.max_attempts:
            self.fail(f"{where}: job {v.id} is at attempt {v.attempt} of {v.max_attempts}")
        self._check_errors(v, where)
        self._check_reason(v, where)
        self._check_what_was_returned(v, where)
        if before is not None:
            self._check_progress(before, v, where)

    def _check_errors(self, v: View, where: str) -> None:
        orphans = v.orphans()
        if len(orphans) != len(set(orphans)):
            self.fail(f"{where}: job {v.id} was rescued twice in one attempt: {v.errors}")
        for attempt, text in v.errors:
            if attempt > v.attempt:
                self.fail(f"{where}: job {v.id} has an error for attempt {attempt} > {v.attempt}")
            if text.startswith(ORPHAN) and f"attempt {attempt} died" not in text:
                self.fail(f"{where}: job {v.id}'s rescue names the wrong attempt: {text!r}")

    def _check_reason(self, v: View, where: str) -> None:
        """A finished (or rescued) job says why, for the attempt that ended it."""
        attempt, text = v.errors[-1] if v.errors else (-1, "")
        exhausted = v.attempt == v.max_attempts
        if v.state == "completed":
            ran = any(
                r.attempt == v.attempt and r.intent == "complete" for r in self.runs.get(v.id, [])
            )
            if not (v.completed and ran):
                self.fail(f"{where}: job {v.id} completed attempt {v.attempt}, which never ran")
        elif v.state == "cancelled":
            by_user = text == "cancelled by user"
            if not (by_user or (text == CANCEL_REASON and attempt == v.attempt)):
                self.fail(f"{where}: cancelled job {v.id} lacks its reason: {v.errors}")
            if by_user and v.id not in self.cancel_intents:
                self.fail(f"{where}: job {v.id} was cancelled by a user nobody was")
        elif v.state == "discarded":
            rescued = text.startswith(ORPHAN) and "no attempts left" in text and exhausted
            failed = FAILURE_TEXT in text and exhausted
            if attempt != v.attempt or not (rescued or failed or text == DISCARD_REASON):
                self.fail(f"{where}: discarded job {v.id} lacks its reason: {v.errors}")
        elif v.state == "available" and text.startswith(ORPHAN):
            if "made available again" not in text:
                self.fail(f"{where}: rescued job {v.id} has the wrong reason: {text!r}")

    def _check_what_was_returned(self, v: View, where: str) -> None:
        """What its process logged as committed, or cancel() returned, is what is stored."""
        for attempt, outcome in self.stored.get(v.id, []):
            if outcome == "complete" and (v.state, v.attempt) != ("completed", attempt):
                self.fail(f"{where}: job {v.id} completed attempt {attempt} but is {v}")
            if v.attempt < attempt:
                self.fail(f"{where}: job {v.id} is back before committed attempt {attempt}")
        cancelled = self.cancelled.get(v.id)
        if cancelled is not None and cancelled[0] != v.state:
            self.fail(f"{where}: cancel({v.id}) returned it {cancelled[0]}, now {v.state}")

    def _check_progress(self, before: View, now: View, where: str) -> None:
        if now.attempt < before.attempt or now.max_attempts < before.max_attempts:
            self.fail(f"{where}: job {now.id} went back from {before} to {now}")
        if now.errors[: len(before.errors)] != before.errors:
            self.fail(f"{where}: job {now.id}'s error history was rewritten")
        if before.state not in UNFINISHED and before != now:
            self.fail(f"{where}: finished job {now.id} changed from {before} to {now}")

    # -- the end ---------------------------------------------------------------------------

    def check_final(self, views: dict[int, View], recovery: tuple[int, int]) -> None:
        """Check the store after the last child finished every job and closed."""
        if not self.children[-1].done:
            self.fail("the final child did not finish")
        self.check_snapshot(views, recovery)
        for job_id, view in views.items():
            if view.state in UNFINISHED:
                self.fail(f"at the end: job {job_id} is {view.state}")
                if job_id in self.acked:
                    self.lost.add(job_id)
        # Unacknowledged jobs: only the insert each child had in flight when it died.
        in_flight = {c.no: c.insert_in_flight for c in self.children}
        for job_id, (c, b, _s) in self.unacked_seen.items():
            if in_flight.get(c) != b or b in self.acked_batches[c]:
                self.fail(
                    f"job {job_id} of child {c} batch {b} exists but was never acknowledged "
                    f"and was not the insert in flight ({in_flight.get(c)})"
                )
        for job_id, runs in self.runs.items():
            self._check_runs(job_id, runs)

    def _check_runs(self, job_id: int, runs: list[Run]) -> None:
        view = self.last_view.get(job_id)
        if view is None and job_id not in self.acked:
            c, b, _s = runs[0].key
            if self.children[c].insert_in_flight != b:
                self.fail(f"job {job_id} ran but was never inserted: {runs}")
            return
        attempts = [r.attempt for r in runs]
        if any(b <= a for a, b in zip(attempts, attempts[1:])):
            self.fail(f"job {job_id}'s runs did not each start a new attempt: {attempts}")
        self._check_reruns(job_id, runs, view)
        limit = max(
            [view.max_attempts if view else 0]
            + [r.max_attempts + (r.intent == "snooze") for r in runs]
        )
        if len(runs) > limit:
            self.fail(f"job {job_id} ran {len(runs)} times, max_attempts {limit}")
        if view is not None and job_id not in self.gone:
            last = runs[-1]
            if last.attempt > view.attempt:
                self.fail(f"job {job_id} ran attempt {last.attempt} but is at {view.attempt}")
            if view.state == "completed" and (last.attempt, last.intent) != (
                view.attempt,
                "complete",
            ):
                self.fail(f"job {job_id} is completed but its last run was {last}")

    def _check_reruns(self, job_id: int, runs: list[Run], view: Optional[View]) -> None:
        """After a run that finished its job, the job runs again only if that attempt was
        rescued (its outcome never committed); after it was seen completed, never."""
        orphaned = set(view.orphans()) if view else set()
        for r, after in zip(runs, runs[1:]):
            if r.finishes and r.attempt not in orphaned:
                what = "completed job" if r.intent == "complete" else f"{r.intent} job"
                self.fail(
                    f"{what} {job_id} ran again (attempt {r.attempt} finished it, attempt "
                    f"{after.attempt} ran; no rescue recorded)"
                )
        done = self.completed_at_attempt.get(job_id)
        if done is not None and runs[-1].attempt > done:
            self.fail(f"job {job_id} completed at attempt {done} and then ran {runs[-1].attempt}")

    # -- numbers ---------------------------------------------------------------------------

    def summary(self) -> dict[str, int]:
        executions = sum(len(r) for r in self.runs.values())
        orphaned_runs = 0
        duplicates = 0
        for job_id, runs in self.runs.items():
            view = self.last_view.get(job_id)
            orphans = set(view.orphans()) if view else set()
            for i, r in enumerate(runs):
                if r.attempt in orphans:
                    orphaned_runs += 1
                    if i + 1 < len(runs):
                        duplicates += 1
        killed = [c for c in self.children if not c.done]
        in_flight = [c for c in killed if c.insert_in_flight is not None]
        landed = {(c, b) for c, b, _s in self.unacked_seen.values()} | {
            r[0].key[:2] for j, r in self.runs.items() if j not in self.acked
        }
        states = Counter(v.state for v in self.last_view.values())
        return {
            "kills": len(killed),
            "jobs": len(self.acked) + len(self.unacked_seen),
            "executions": executions,
            "duplicates-by-crash": duplicates,
            "lost": len(self.lost),
            "runs-cut-short": orphaned_runs,
            "rescued": self.rescued,
            "pruned": len(self.gone),
            "inserts-in-flight": len(in_flight),
            "in-flight-committed": sum(
                1 for c in in_flight if (c.no, c.insert_in_flight) in landed
            ),
            "cancels-in-flight": sum(1 for c in killed if c.cancel_in_flight is not None),
            "snapshots": self.snapshots,
            "completed": states["completed"],
            "discarded": states["discarded"],
            "cancelled": states["cancelled"],
        }
