"""Kathikon's benchmark workloads, each measured in-process on a fresh store.

Every workload returns a :class:`Result`. All run at the app's default durability (an fsync
per commit) unless told otherwise; the durability is part of every result.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import kathikon


@dataclass
class Result:
    """One measurement."""

    workload: str
    jobs: int
    durability: str = "fsync"
    jobs_per_s: Optional[float] = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


#: The PostgreSQL database the drain, latency and limits workloads run on (``kathikon bench
#: --url``), or ``None``: a fresh store file each time. Set with :func:`on_database`.
_URL: Optional[str] = None

#: The queue the database workloads use: one of their own, emptied before and after each
#: run, so that no other jobs there are touched or counted.
DATABASE_QUEUE = "kathikon-bench"


@contextmanager
def on_database(url: Optional[str]) -> Iterator[None]:
    """Run the database workloads on the PostgreSQL database at ``url`` meanwhile
    (``None``: on store files, as by default)."""
    global _URL
    before, _URL = _URL, url
    try:
        yield
    finally:
        _URL = before


def bench_queue() -> str:
    """The queue the drain and latency workloads insert into and drain."""
    return "default" if _URL is None else DATABASE_QUEUE


@contextmanager
def fresh_app(**options: Any) -> Iterator[kathikon.Kathikon]:
    """An app on a new store file in a temporary directory, closed and deleted after; on a
    database (:func:`on_database`), an app on it with the bench's queue emptied before and
    after."""
    if _URL is not None:
        app = kathikon.Kathikon(url=_URL, migrate=True, **options)
        try:
            app.delete_jobs(queue=DATABASE_QUEUE, force=True)
            yield app
        finally:
            try:
                app.stop(timeout=5)
                app.delete_jobs(queue=DATABASE_QUEUE, force=True)
            finally:
                app.close(timeout=5)
        return
    with tempfile.TemporaryDirectory(prefix="kathikon-bench-") as tmp:
        app = kathikon.Kathikon(Path(tmp) / "bench.redb", **options)
        try:
            yield app
        finally:
            app.close(timeout=5)


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    if not samples_ms:
        return {}
    ordered = sorted(samples_ms)
    if len(ordered) == 1:
        return dict.fromkeys(("p50", "p95", "p99", "max"), ordered[0])
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "max": ordered[-1]}


def raw_fsync_rate(seconds: float = 1.0, direct: bool = False) -> Optional[float]:
    """4 KiB pwrite + fdatasync per iteration on this disk: the ceiling for one-by-one inserts.

    With ``direct`` the file is opened with ``O_DIRECT``, as Kathikon's write-ahead log is: the
    write goes straight to the device and the sync only flushes the device's cache. ``None``
    where the OS or the file system refuses ``O_DIRECT`` (the log then goes through the page
    cache too).
    """
    flags = os.O_RDWR | os.O_CREAT
    if direct:
        if not hasattr(os, "O_DIRECT"):
            return None
        flags |= os.O_DIRECT
    with tempfile.TemporaryDirectory(prefix="kathikon-bench-") as tmp:
        try:
            fd = os.open(Path(tmp) / "fsync.bin", flags, 0o600)
        except OSError as e:
            if direct and e.errno == errno.EINVAL:
                return None
            raise
        try:
            # An anonymous mapping is page-aligned, as a direct write's buffer must be.
            with mmap.mmap(-1, 4096) as page:
                page.write(b"k" * 4096)
                n = 0
                start = time.perf_counter()
                while time.perf_counter() - start < seconds:
                    os.pwrite(fd, page, (n % 64) * 4096)
                    os.fdatasync(fd)
                    n += 1
                return n / (time.perf_counter() - start)
        finally:
            os.close(fd)


def raw_fsync() -> list[Result]:
    """The raw rates, through the page cache and (where the file system takes it) direct."""
    out = [Result("raw fsync (4 KiB)", 0, jobs_per_s=raw_fsync_rate())]
    direct = raw_fsync_rate(direct=True)
    if direct is not None:
        out.append(Result("raw fsync (4 KiB, O_DIRECT)", 0, jobs_per_s=direct))
    return out


def insert_single(n: int, threads: int = 1) -> Result:
    """``n`` single ``insert`` calls spread over ``threads`` threads; each waits for its fsync."""
    with fresh_app(queues={"default": 10}) as app:

        @app.worker
        def noop(job: kathikon.Job) -> None:
            pass

        per_thread = n // threads

        def work() -> None:
            for _ in range(per_thread):
                noop.insert()

        workers = [threading.Thread(target=work) for _ in range(threads)]
        start = time.perf_counter()
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        elapsed = time.perf_counter() - start
        total = per_thread * threads
    name = "insert" if threads == 1 else f"insert x{threads} threads"
    return Result(name, total, jobs_per_s=total / elapsed)


def insert_batches(n: int, batch: int = 1000) -> Result:
    """``insert_all`` in batches of ``batch``; building the batch (``new``) is included."""
    with fresh_app(queues={"default": 10}) as app:

        @app.worker
        def noop(job: kathikon.Job) -> None:
            pass

        start = time.perf_counter()
        for offset in range(0, n, batch):
            app.insert_all([noop.new() for _ in range(min(batch, n - offset))])
        elapsed = time.perf_counter() - start
    return Result(f"insert_all /{batch}", n, jobs_per_s=n / elapsed)


#: How often a drain looks at the stats, in seconds: as often as the peers' adapters look for
#: their jobs' marks (``benches/peers/peerlib.py``). Looking costs little: the stats are read
#: without making the writer commit what it keeps back.
POLL = 0.005


def wait_completed(app: kathikon.Kathikon, queue: str, n: int, timeout: float) -> None:
    """Wait until ``n`` jobs of ``queue`` are completed; ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while app.stats()[queue]["completed"] < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {app.stats()[queue]} after {timeout} s")
        time.sleep(POLL)


def drain(n: int, concurrency: int, use_async: bool = False, timeout: float = 120.0) -> Result:
    """``n`` no-op jobs stored first; then workers start; time until all are completed."""
    queue = bench_queue()
    with fresh_app(queues={queue: concurrency}) as app:
        if use_async:

            @app.worker(queue=queue)
            async def anoop(job: kathikon.Job) -> None:
                pass

            worker: Any = anoop
        else:

            @app.worker(queue=queue)
            def noop(job: kathikon.Job) -> None:
                pass

            worker = noop
        for offset in range(0, n, 10_000):
            app.insert_all([worker.new() for _ in range(min(10_000, n - offset))])
        start = time.perf_counter()
        app.start()
        wait_completed(app, queue, n, timeout)
        elapsed = time.perf_counter() - start
        app.stop(timeout=5)
    kind = "async" if use_async else "sync"
    return Result(f"drain {kind} c={concurrency}", n, durability(), jobs_per_s=n / elapsed)


def durability() -> str:
    """The system the database-capable workloads ran on, as the table labels it."""
    return "fsync" if _URL is None else "postgresql"


#: Single inserts one thread paces comfortably while workers run in the same process; the
#: latency workload adds inserting threads above this, so the asked rate is reached.
RATE_PER_THREAD = 4_000


def latency(rate: float, n: int, concurrency: int = 10) -> Result:
    """Insert at a steady ``rate`` while workers run; insert→start latency percentiles.

    Job ``i`` is due to be inserted at ``i / rate`` s; above ``RATE_PER_THREAD`` the jobs are
    dealt round-robin to several inserting threads, each pacing its own share."""
    started: dict[int, int] = {}
    queue = bench_queue()
    with fresh_app(queues={queue: concurrency}, poll_interval=1.0) as app:

        @app.worker(queue=queue)
        def probe(job: kathikon.Job) -> None:
            started[job.args["i"]] = time.perf_counter_ns()

        app.start()
        sent = [0] * n
        interval = 1.0 / rate
        threads = max(1, -(-int(rate) // RATE_PER_THREAD))
        begin = time.perf_counter()

        def produce(first: int) -> None:
            for i in range(first, n, threads):
                target = begin + i * interval
                while (now := time.perf_counter()) < target:
                    if target - now > 0.0005:
                        time.sleep(target - now - 0.0003)
                sent[i] = time.perf_counter_ns()
                probe.insert({"i": i})

        producers = [threading.Thread(target=produce, args=(k,)) for k in range(threads)]
        for t in producers:
            t.start()
        for t in producers:
            t.join()
        achieved = n / (time.perf_counter() - begin)
        deadline = time.monotonic() + 30
        while len(started) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        app.stop(timeout=5)
    samples = [(started[i] - sent[i]) / 1e6 for i in range(n) if i in started]
    return Result(
        f"latency @{rate:g}/s",
        n,
        durability(),
        latency_ms=percentiles(samples),
        extra={
            "achieved_rate": achieved,
            "inserting_threads": threads,
            "missing": n - len(samples),
        },
    )


def scheduled(n: int, ahead: float = 1.0) -> Result:
    """Jobs scheduled ``ahead`` seconds out; lateness of their start."""
    late: dict[int, float] = {}
    with fresh_app(queues={"default": 10}) as app:
        due: dict[int, datetime] = {}

        @app.worker
        def probe(job: kathikon.Job) -> None:
            late[job.args["i"]] = (datetime.now(timezone.utc) - due[job.args["i"]]).total_seconds()

        app.start()
        spread = 0.5  # spread due times over half a second so they do not all tie
        base = datetime.now(timezone.utc) + timedelta(seconds=ahead)
        specs = []
        for i in range(n):
            due[i] = base + timedelta(seconds=spread * i / n)
            specs.append(probe.new({"i": i}, schedule_at=due[i]))
        app.insert_all(specs)
        deadline = time.monotonic() + ahead + 30
        while len(late) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        app.stop(timeout=5)
    samples = [v * 1000 for v in late.values()]
    result = percentiles(samples)
    return Result(
        f"scheduled +{ahead:g}s",
        n,
        latency_ms=result,
        extra={"early": sum(1 for s in samples if s < 0), "missing": n - len(samples)},
    )


#: Run in a fresh interpreter: open the store at argv[1] and report what it cost. A process
#: that just wrote the store has its allocator's freed memory still resident, which the open
#: then reuses: measured in that process, the growth per queued job came out at 1-6 bytes,
#: far below what the claim queues hold.
_OPEN_PROBE = """
import json, resource, sys, time
import kathikon

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

before = rss()
start = time.perf_counter()
app = kathikon.Kathikon(sys.argv[1], queues={"default": 10})
opened = time.perf_counter() - start
after = rss()
depth = app.queue_depths()["default"]
app.close()
print(json.dumps({"open_seconds": opened, "rss_growth": after - before, "depth": depth}))
"""


def open_recovery(n: int) -> Result:
    """Open a store holding ``n`` jobs of mixed states and be ready to dispatch (in a fresh
    process); file size per job; resident memory per queued job."""
    with tempfile.TemporaryDirectory(prefix="kathikon-bench-") as tmp:
        path = Path(tmp) / "big.redb"
        app = kathikon.Kathikon(path, queues={"default": 10})

        @app.worker
        def noop(job: kathikon.Job) -> None:
            pass

        for offset in range(0, n, 10_000):
            specs = []
            for i in range(offset, min(n, offset + 10_000)):
                # a mix: most available, some scheduled, some to be completed
                specs.append(noop.new(schedule_in=3600 if i % 10 == 0 else None))
            app.insert_all(specs)
        app.close()
        size = path.stat().st_size
        probe = subprocess.run(
            [sys.executable, "-c", _OPEN_PROBE, str(path)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if probe.returncode != 0:
            raise RuntimeError(f"the open probe failed: {probe.stderr.strip()}")
        measured = json.loads(probe.stdout)
    return Result(
        "open",
        n,
        extra={
            "open_seconds": measured["open_seconds"],
            "file_bytes_per_job": size / n,
            "rss_bytes_per_queued_job": measured["rss_growth"] / max(1, measured["depth"]),
        },
    )
