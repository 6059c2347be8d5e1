"""The crash torture's driver: start a child process (``torture_child.py``) on one store file,
SIGKILL it at a random moment, reopen the store here and check it, and repeat; then let a last
child finish every job and check the whole history (``torture_check.py``).

Kill moments are spread over what a child does: while it opens the store (and rescues), right
after a random number of inserts returned or of jobs started, while a cancel is in flight,
after retries and scheduled jobs started running (the scheduler promotes them in the writer's
commits), after the pruner deleted jobs, after outcomes were committed, or at a random time.
Each kill lands a random few milliseconds after its trigger, so it falls inside whatever the
child's threads (inserter, lanes, asyncio loop, engine writer) are doing then.

Usage (the pytest test in ``test_torture.py`` calls :func:`torture`)::

    python tests/torture/torture_driver.py --kills 1000 [--seed N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from torture_check import Child, History, read_log, snapshot

import kathikon

HERE = Path(__file__).resolve().parent
CHILD_SCRIPT = HERE / "torture_child.py"
START_TIMEOUT = 30.0  # for the child to log "ready" (a loaded 2-core machine is slow)
TRIGGER_TIMEOUT = 4.0  # a trigger that has not fired by then: kill anyway ("late")


class Tail:
    """Reads an event log as it grows and counts its complete lines by tag."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""
        self.counts: Counter[str] = Counter()
        self.lines: list[list[str]] = []

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        data = self.rest + data
        *complete, self.rest = data.split(b"\n")
        for raw in complete:
            fields = raw.decode().split()
            self.lines.append(fields)
            self.counts[fields[0]] += 1
            if fields[0] == "run" and int(fields[2]) >= 2:
                self.counts["run-retry"] += 1


@dataclass
class Trigger:
    """When to kill: once ``ready(tail)`` holds (checked every millisecond), plus ``delay``."""

    name: str
    ready: Callable[[Tail], bool]
    delay: float
    before_ready: bool = False  # may fire before the child logged "ready"


def choose_trigger(rng: random.Random, pruning: bool, watching: bool) -> Trigger:
    def count(tag: str, n: int) -> Callable[[Tail], bool]:
        return lambda t: t.counts[tag] >= n

    small = rng.uniform(0, 0.004)
    options: list[tuple[str, Callable[[Tail], bool], float]] = [
        ("inserts", count("ins", rng.randint(1, 120)), small),
        ("runs", count("run", rng.randint(1, 150)), small),
        ("retries", count("run-retry", rng.randint(1, 12)), small),
        ("cancel", count("cxl?", rng.randint(1, 6)), rng.uniform(0, 0.002)),
        ("time", lambda t: True, rng.uniform(0.0, 0.7)),
    ]
    if pruning:
        options.append(("prune", count("prune", rng.randint(1, 4)), rng.uniform(0, 0.05)))
    if watching:
        options.append(("stored", count("stored", rng.randint(1, 100)), small))
    if rng.random() < 0.12:
        # While the child starts: importing, opening the store, rescuing, starting workers.
        return Trigger("open", lambda t: True, rng.uniform(0.05, 0.4), before_ready=True)
    name, ready, delay = rng.choice(options)
    return Trigger(name, ready, delay)


@dataclass
class Torture:
    workdir: Path
    kills: int
    seed: int
    durability: str = "fsync"
    # Delete the store's log after each kill: what a power loss can do to a log that was never
    # synced (durability="none"), which a test cannot cause for real. Only to show that the
    # checker catches real loss.
    lose_unsynced_log: bool = False
    # Called with the reopened store before each check: the tests' way of breaking a
    # promise on purpose, to show the checker notices.
    sabotage: Optional[Callable[[kathikon.Kathikon, History], None]] = None
    history: History = field(default_factory=History)
    triggers: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0

    @property
    def store(self) -> Path:
        return self.workdir / "jobs.redb"

    def why(self) -> str:
        return f"(seed {self.seed}; replay with KATHIKON_TORTURE_SEED={self.seed})"

    def spawn(self, no: int, cfg: dict[str, object]) -> tuple[subprocess.Popen[bytes], Path]:
        err = self.workdir / f"child-{no}.stderr"
        with err.open("wb") as f:
            proc = subprocess.Popen(
                [sys.executable, str(CHILD_SCRIPT), json.dumps(cfg)],
                stdout=subprocess.DEVNULL,
                stderr=f,
                cwd=HERE,
                env={**os.environ, "RUST_BACKTRACE": "1", "PYTHONPATH": str(HERE)},
            )
        return proc, err

    def config(self, no: int, rng: random.Random, child: Child, final: bool) -> dict[str, object]:
        return {
            "store": str(self.store),
            "log": str(self.workdir / f"child-{no}.log"),
            "child": no,
            "seed": rng.getrandbits(32),
            "concurrency": 8 if final else rng.choice([1, 2, 4]),
            "other_concurrency": 4 if final else rng.choice([1, 2]),
            "prune_interval": rng.choice([0.02, 0.05, 0.1]) if child.pruning else 3600.0,
            "retention": rng.choice([0.05, 0.2, 0.5]) if child.pruning else 86_400.0,
            "watch_outcomes": rng.random() < 0.4,
            "watch_pruner": child.pruning,
            "final": final,
            "durability": self.durability,
            "final_timeout": 60.0,
        }

    def reopen_and_check(self, final: bool = False) -> None:
        """Open the store here (this rescues what the dead child left executing), read every
        job, close it, and check the history so far."""
        try:
            app = kathikon.Kathikon(self.store, queues={"default": 1, "other": 1})
        except kathikon.KathikonError as exc:
            raise AssertionError(
                f"the store did not open after a kill {self.why()}: {exc!r}"
            ) from exc
        try:
            recovery = app._engine.recovery
            if self.sabotage is not None and not final:
                self.sabotage(app, self.history)
            views = snapshot(app)
        finally:
            app.close()
        if final:
            self.history.check_final(views, recovery)
        else:
            self.history.check_snapshot(views, recovery)

    def run_child(self, no: int, rng: random.Random, unchecked: bool) -> None:
        """One child, killed by SIGKILL at a moment its trigger picks."""
        pruning = not unchecked and rng.random() < 0.7
        child = Child(no=no, pruning=pruning, after_unchecked=unchecked)
        cfg = self.config(no, rng, child, final=False)
        trigger = choose_trigger(rng, pruning, bool(cfg["watch_outcomes"]))
        tail = Tail(Path(str(cfg["log"])))
        proc, err = self.spawn(no, cfg)
        name = trigger.name
        try:
            started = time.monotonic()
            if not trigger.before_ready:
                while not tail.counts["ready"]:
                    self._alive(proc, err, "logging ready")
                    if time.monotonic() - started > START_TIMEOUT:
                        raise AssertionError(f"child {no} never got ready {self.why()}")
                    time.sleep(0.002)
                    tail.poll()
                fired = time.monotonic()
                while not trigger.ready(tail):
                    self._alive(proc, err, f"its {name} trigger")
                    if time.monotonic() - fired > TRIGGER_TIMEOUT:
                        name += " (late)"
                        break
                    time.sleep(0.001)
                    tail.poll()
            time.sleep(trigger.delay)
            self._alive(proc, err, "the kill")
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL, f"child {no} {self.why()}"
            if self.lose_unsynced_log:
                # What a power loss can leave of a log that was never synced: its name (made
                # durable when it was created) with nothing in it. A missing log would be
                # refused, since the store was not closed cleanly.
                self.store.with_name(self.store.name + "-wal").write_bytes(b"")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self._quiet(no, err)
        child.trigger = name
        self.triggers[name] += 1
        tail.poll()
        self.history.ingest(child, tail.lines)

    def _alive(self, proc: subprocess.Popen[bytes], err: Path, what: str) -> None:
        if proc.poll() is not None:
            raise AssertionError(
                f"a child exited ({proc.returncode}) before {what} {self.why()}:\n{err.read_text()}"
            )

    def _quiet(self, no: int, err: Path) -> None:
        """A child writes nothing to stderr: a logged error (a failed claim or ack, a crashed
        lane, a traceback) is a finding even when no job was lost."""
        text = err.read_text()
        if text.strip():
            self.history.fail(f"child {no} wrote to stderr:\n{text[-2000:]}")

    def final_child(self, no: int, rng: random.Random) -> None:
        child = Child(no=no, pruning=False, after_unchecked=False, trigger="final")
        cfg = self.config(no, rng, child, final=True)
        proc, err = self.spawn(no, cfg)
        try:
            code = proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert code == 0, f"the final child failed ({code}) {self.why()}:\n{err.read_text()}"
        self._quiet(no, err)
        self.history.ingest(child, read_log(Path(str(cfg["log"]))))

    def run(self) -> dict[str, int]:
        started = time.monotonic()
        rng = random.Random(self.seed)
        unchecked = False
        for no in range(self.kills):
            self.run_child(no, rng, unchecked)
            # Usually reopen and check here (this process then does the rescue); sometimes
            # let the next child's own open rescue (that child does not prune, so nothing it
            # rescued can vanish before the check that always follows it).
            if unchecked or no == self.kills - 1 or rng.random() < 0.75:
                self.reopen_and_check()
                unchecked = False
            else:
                unchecked = True
        self.final_child(self.kills, rng)
        self.reopen_and_check(final=True)
        self.elapsed = time.monotonic() - started
        return self.history.summary()

    def summary_line(self, numbers: dict[str, int]) -> str:
        head = ", ".join(
            f"{k} {numbers[k]}"
            for k in ("kills", "jobs", "executions", "duplicates-by-crash", "lost")
        )
        return f"torture: {head}"

    def details(self, numbers: dict[str, int]) -> str:
        rest = ", ".join(f"{k} {v}" for k, v in numbers.items())
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.triggers.items()))
        return f"  seed {self.seed}, {self.elapsed:.0f} s; {rest}\n  kills after: {kinds}"


def torture(
    kills: int,
    seed: Optional[int] = None,
    workdir: Optional[Path] = None,
    **options: Any,
) -> Torture:
    """Run the torture; returns it with its history (``.history.violations`` must be empty)."""
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "big")
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="kathikon-torture-"))
    t = Torture(workdir=workdir, kills=kills, seed=seed, **options)
    t.run()
    return t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (kept)")
    a = parser.parse_args()
    if a.dir is not None:
        a.dir.mkdir(parents=True, exist_ok=True)
    t = torture(a.kills, a.seed, a.dir)
    numbers = t.history.summary()
    print(t.summary_line(numbers))
    print(t.details(numbers))
    for v in t.history.violations[:50]:
        print("VIOLATION:", v)
    print(f"work directory: {t.workdir}")
    return 1 if t.history.violations or numbers["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
