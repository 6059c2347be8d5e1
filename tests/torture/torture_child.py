"""One process of the crash torture: open the store, run workers, insert and cancel jobs from
another thread, and write everything that happened to an append-only, fsync'd event log —
until the driver SIGKILLs it (or, with ``"final": true``, until every job is finished).

Run as ``python torture_child.py '<json config>'`` by ``torture_driver.py``. Event lines
(fields separated by spaces; the checker in ``torture_check.py`` reads them back):

    open <rescued> <discarded>          the store opened; what its recovery found executing
    ready                               workers and the inserter are running
    ins? <batch>                        about to insert batch <batch> (one or more jobs)
    ins <id> <child> <batch> <seq> <kind> <queue> <max_attempts> <scheduled 0|1>
                                        an insert returned (one line per job of the batch,
                                        written and fsync'd together after the call returned)
    run <id> <attempt> <max_attempts> <intent> <child> <c>:<b>:<s>
                                        (<c>:<b>:<s> from the job's args: inserting child,
                                        batch, sequence number)
                                        a callback started (written before it does anything)
    cxl? <id>                           about to call app.cancel(id)
    cxl <id> <state after> <attempt>
                                        app.cancel returned
    stored <id> <attempt> <outcome>     an outcome was committed (telemetry of waited acks)
    prune <count>                       a pruner tick deleted <count> finished jobs
    done                                (final mode) every job finished, the app closed

A line is written with one ``os.write`` and fsync'd before the code goes on, so a line in the
log means the thing happened; a kill can only cut the last line short, and the checker drops
a line without its newline.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import threading
import time
from typing import Any, Optional

import kathikon
from kathikon import telemetry

TERMINAL_OUTCOMES = ("complete", "cancel", "discard")
FAILURE_TEXT = "TortureFailure"
CANCEL_REASON = "torture: the job cancelled itself"
DISCARD_REASON = "torture: the job discarded itself"


class TortureFailure(Exception):
    """What a failing torture job raises (its name is looked for in stored tracebacks)."""


def intent(args: dict[str, Any], attempt: int, max_attempts: int) -> str:
    """What a run of a job with ``args`` does at ``attempt`` (``max_attempts`` as claimed).

    Deterministic, so the checker knows what each recorded run tried to make of its job.
    One of complete, fail, snooze, cancel, discard."""
    kind = args["kind"]
    if kind in ("ok", "slow", "async"):
        return "complete"
    if kind == "flaky":
        return "fail" if attempt <= args["fails"] else "complete"
    if kind == "doomed":
        return "fail"
    if kind == "snooze":
        # Each snooze raises max_attempts by one: how far above the inserted value it is
        # counts the snoozes so far (rescues and failures leave it alone).
        return "snooze" if max_attempts - args["max"] < args["snoozes"] else "complete"
    if kind == "cancel":
        return "cancel"
    if kind == "discard":
        return "discard"
    raise AssertionError(f"unknown kind {kind!r}")


def is_terminal(outcome: str, attempt: int, max_attempts: int) -> bool:
    """Whether an outcome, once stored, leaves the job finished."""
    return outcome in TERMINAL_OUTCOMES or (outcome == "fail" and attempt >= max_attempts)


class Log:
    """The append-only event log; every line is fsync'd before ``write`` returns."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.lock = threading.Lock()

    def write(self, *lines: str) -> None:
        data = "".join(line + "\n" for line in lines).encode()
        with self.lock:
            os.write(self.fd, data)
            os.fsync(self.fd)


def perform(log: Log, child: int, job: kathikon.Job) -> Optional[kathikon.JobOutcome]:
    """The common body of both workers, up to the sleep. Returns the outcome to deliver."""
    args = job.args
    what = intent(args, job.attempt, job.max_attempts)
    log.write(
        f"run {job.id} {job.attempt} {job.max_attempts} {what} {child} "
        f"{args['c']}:{args['b']}:{args['s']}"
    )
    if what == "fail":
        raise TortureFailure(f"job {job.id} fails attempt {job.attempt} on purpose")
    if what == "snooze":
        return kathikon.Snooze(args["snooze_for"])
    if what == "cancel":
        raise kathikon.Cancel(CANCEL_REASON)
    if what == "discard":
        return kathikon.Discard(DISCARD_REASON)
    return None


def make_app(cfg: dict[str, Any], log: Log) -> kathikon.Kathikon:
    app = kathikon.Kathikon(
        cfg["store"],
        queues={"default": cfg["concurrency"], "other": cfg["other_concurrency"]},
        poll_interval=0.05,
        scheduler_interval=0.05,
        prune_interval=cfg["prune_interval"],
        retention_period=cfg["retention"],
        durability=cfg.get("durability", "fsync"),
    )
    rescued, discarded = app._engine.recovery
    log.write(f"open {rescued} {discarded}")
    child = cfg["child"]

    def backoff(job: kathikon.Job) -> float:
        return float(job.args["backoff"])

    @app.worker(name="torture.sync", max_attempts=5, backoff=backoff)
    def sync_work(job: kathikon.Job) -> Optional[kathikon.JobOutcome]:
        outcome = perform(log, child, job)
        if job.args["sleep"]:
            time.sleep(job.args["sleep"])
        return outcome

    @app.worker(name="torture.async", queue="other", backoff=backoff, timeout=10)
    async def async_work(job: kathikon.Job) -> Optional[kathikon.JobOutcome]:
        outcome = perform(log, child, job)
        await asyncio.sleep(job.args["sleep"])
        return outcome

    return app


def watch_outcomes(log: Log) -> None:
    """Log every committed outcome. Listening to an outcome event makes the runner wait for
    its acks' commit (the other children send acks without waiting), so both paths run."""

    def on_stop(event: Any, measurements: Any, metadata: Any) -> None:
        outcome = metadata["outcome"]
        if outcome != "ignored":
            job = metadata["job"]
            log.write(f"stored {job.id} {job.attempt} {outcome}")

    def nothing(event: Any, measurements: Any, metadata: Any) -> None:
        pass

    telemetry.attach("torture-stop", [("kathikon", "job", "stop")], on_stop)
    telemetry.attach("torture-retry", [("kathikon", "job", "retry")], nothing)


def watch_pruner(log: Log) -> None:
    def on_tick(event: Any, measurements: Any, metadata: Any) -> None:
        if measurements["pruned"]:
            log.write(f"prune {measurements['pruned']}")

    telemetry.attach("torture-prune", [("kathikon", "pruner", "tick")], on_tick)


KINDS = ["ok", "ok", "slow", "async", "flaky", "doomed", "snooze", "cancel", "discard"]


def new_job(
    rng: random.Random, child: int, batch: int, seq: int
) -> tuple[str, dict[str, Any], dict[str, Any], str]:
    """A random job: (worker name, args, insert options, the ``ins`` line's fields)."""
    kind = rng.choice(KINDS)
    max_attempts = rng.choice([1, 2, 3, 3, 5, 20])
    args: dict[str, Any] = {
        "kind": kind,
        "c": child,
        "b": batch,
        "s": seq,
        "max": max_attempts,
        "sleep": 0.0,
        "backoff": rng.choice([0.0, 0.005, 0.02, 0.05]),
        "fails": rng.randint(1, 3),
        "snoozes": rng.randint(1, 2),
        "snooze_for": rng.choice([0.0, 0.01, 0.05]),
    }
    if kind == "slow":
        args["sleep"] = rng.uniform(0.01, 0.06)
    elif kind != "async":
        args["sleep"] = rng.choice([0.0, 0.0, 0.001, 0.004])
    else:
        args["sleep"] = rng.uniform(0.0, 0.03)
    worker = "torture.async" if kind == "async" else "torture.sync"
    queue = "other" if kind == "async" or rng.random() < 0.2 else "default"
    schedule_in = rng.uniform(0.01, 0.4) if rng.random() < 0.25 else None
    options = {
        "queue": queue,
        "max_attempts": max_attempts,
        "schedule_in": schedule_in,
        "priority": rng.randint(0, 3),
    }
    line = f"{child} {batch} {seq} {kind} {queue} {max_attempts} {int(schedule_in is not None)}"
    return worker, args, options, line


def inserter(app: kathikon.Kathikon, log: Log, cfg: dict[str, Any]) -> None:
    rng = random.Random(cfg["seed"])
    child = cfg["child"]
    seq = 0
    batch = 0
    mine: list[int] = []
    try:
        while True:
            roll = rng.random()
            if roll < 0.07 and mine:
                job_id = rng.choice(mine[-50:])
                log.write(f"cxl? {job_id}")
                try:
                    after = app.cancel(job_id)
                except kathikon.JobNotFoundError:
                    log.write(f"cxl {job_id} gone 0")
                    continue
                log.write(f"cxl {job_id} {after.state.value} {after.attempt}")
                continue
            size = 1 if roll < 0.75 else rng.randint(2, 12)
            batch += 1
            log.write(f"ins? {batch}")
            made = [new_job(rng, child, batch, seq + i) for i in range(size)]
            seq += size
            lines = [line for *_, line in made]
            if size == 1 and rng.random() < 0.7:
                worker, args, options, _ = made[0]
                jobs = [app.insert(worker, args, **options)]
            else:
                jobs = app.insert_all([app.new(w, a, **o) for w, a, o, _ in made])
            log.write(*(f"ins {job.id} {line}" for job, line in zip(jobs, lines)))
            mine.extend(job.id for job in jobs)
            pause = rng.choice([0.0, 0.0, 0.001, 0.003, 0.01])
            if pause:
                time.sleep(pause)
    except BaseException as exc:  # any failure here is a finding: make the driver see it
        log.write(f"error inserter {type(exc).__name__}: {exc!s:.200}".replace("\n", " "))
        sys.stderr.write(f"inserter failed: {exc!r}\n")
        sys.stderr.flush()
        os._exit(3)


def unfinished(app: kathikon.Kathikon) -> int:
    return sum(
        n
        for states in app.stats().values()
        for state, n in states.items()
        if state in ("scheduled", "available", "executing", "retryable")
    )


def main() -> None:
    cfg = json.loads(sys.argv[1])
    log = Log(cfg["log"])
    if cfg["watch_outcomes"]:
        watch_outcomes(log)
    if cfg["watch_pruner"]:
        watch_pruner(log)
    app = make_app(cfg, log)
    app.start()
    if cfg["final"]:
        log.write("ready")
        deadline = time.monotonic() + cfg["final_timeout"]
        while unfinished(app):
            if time.monotonic() > deadline:
                sys.stderr.write(f"jobs still unfinished: {app.stats()}\n")
                os._exit(4)
            time.sleep(0.02)
        app.close()
        log.write("done")
        return
    threading.Thread(target=inserter, args=(app, log, cfg), daemon=True).start()
    log.write("ready")
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
