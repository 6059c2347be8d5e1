"""Benchmarks across processes: client processes inserting through the owner's socket, and
worker processes draining jobs or running CPU-bound ones.

Worker processes find their app by importing :mod:`kathikon.bench._procs_app`, which creates
a client app on the store named by ``KATHIKON_BENCH_STORE``; :func:`insert_main` is one
inserting client.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kathikon

from .workloads import Result, wait_completed

STORE_ENV = "KATHIKON_BENCH_STORE"
INSERT_CLIENT = (
    "import sys; from kathikon.bench.procs import insert_main; insert_main(int(sys.argv[1]))"
)


#: What a short job writes: one 46-byte record, as a job doing a little I/O does.
RECORD = b"0123456789abcdef0123456789abcdef0123456789ab\n\n"

_SINK: list[int] = []


def _sink() -> int:
    """This process's file descriptor on the null device, opened at its first short job."""
    if not _SINK:
        _SINK.append(os.open(os.devnull, os.O_WRONLY))
    return _SINK[0]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far, from ``/proc/PID/stat``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_app(path: str, concurrency: int = 10) -> kathikon.Kathikon:
    """The bench app on ``path``, with a no-op worker and a ~1 ms pure-Python one."""
    app = kathikon.Kathikon(path, queues={"default": concurrency}, poll_interval=0.2)

    @app.worker(name="bench.noop")
    def noop(job: kathikon.Job) -> None:
        pass

    @app.worker(name="bench.write")
    def write(job: kathikon.Job) -> None:
        os.write(_sink(), RECORD)

    @app.worker(name="bench.spin")
    def spin(job: kathikon.Job) -> None:
        deadline = time.perf_counter() + 0.001
        n = 0
        while time.perf_counter() < deadline:
            n += 1

    return app


def _owner_app(path: str, concurrency: int) -> kathikon.Kathikon:
    """The bench process's app on ``path``; its worker processes find theirs in _procs_app."""
    os.environ[STORE_ENV] = path
    app = make_app(path, concurrency)
    app._origin = "kathikon.bench._procs_app"
    return app


#: Longest a processes workload waits for its jobs to complete, in seconds.
TIMEOUT = 300.0


def insert_clients(n: int, clients: int = 4) -> Result:
    """``clients`` processes each making ``n // clients`` single inserts through the owner."""
    with tempfile.TemporaryDirectory(prefix="kathikon-bench-") as tmp:
        path = str(Path(tmp) / "bench.redb")
        owner = make_app(path)
        try:
            per = n // clients
            env = dict(os.environ, **{STORE_ENV: path})
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", INSERT_CLIENT, str(per)],
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for _ in range(clients)
            ]
            # Each client reports its own insert time, measured after it connected.
            rates = []
            for p in procs:
                out, _ = p.communicate(timeout=600)
                if p.returncode != 0:
                    raise RuntimeError(f"an inserting client failed (status {p.returncode})")
                rates.append(float(out.split()[-1]))
        finally:
            owner.close(timeout=5)
    return Result(f"insert x{clients} client processes", per * clients, jobs_per_s=sum(rates))


def drain_processes(n: int, processes: int = 2, concurrency: int = 10) -> Result:
    """``n`` no-op jobs stored; then ``processes`` worker processes drain them through the
    owner's socket (their start-up time excluded: the clock starts at the first claim)."""
    with tempfile.TemporaryDirectory(prefix="kathikon-bench-") as tmp:
        path = str(Path(tmp) / "bench.redb")
        app = _owner_app(path, concurrency)
        try:
            for offset in range(0, n, 10_000):
                app.insert_all([app.new("bench.noop") for _ in range(min(10_000, n - offset))])
            app.start(processes=processes)
            while app.stats()["default"].get("executing", 0) == 0 and (
                app.stats()["default"].get("completed", 0) == 0
            ):
                time.sleep(0.001)
            start = time.perf_counter()
            wait_completed(app, "default", n, TIMEOUT)
            elapsed = time.perf_counter() - start
            app.stop(timeout=10)
        finally:
            app.close(timeout=5)
            os.environ.pop(STORE_ENV, None)
    return Result(f"drain sync via {processes} worker processes", n, jobs_per_s=n / elapsed)


def short_jobs(n: int, processes: int, concurrency: int = 4) -> Result:
    """``n`` short jobs (each writes a 46-byte record with ``os.write``) stored, then run in
    this process (``processes=0``) or in worker processes. The rate and each process's CPU
    time per job are read between 10 % and 90 % of the jobs completed, so start-up and the
    tail do not count: ``owner_cpu_us`` is this process's (the store's owner: with worker
    processes it serves their claims and acks), ``workers_cpu_us`` the worker processes'
    together, both per job completed in that span."""
    with tempfile.TemporaryDirectory(prefix="kathikon-bench-") as tmp:
        path = str(Path(tmp) / "bench.redb")
        app = _owner_app(path, concurrency)
        try:
            for offset in range(0, n, 10_000):
                app.insert_all([app.new("bench.write") for _ in range(min(10_000, n - offset))])
            app.start(processes=processes or None)
            marks = []
            for fraction in (0.1, 0.9):
                wait_completed(app, "default", int(n * fraction), TIMEOUT)
                done = app.stats()["default"].get("completed", 0)
                pids = app.worker_pids
                cpu = [cpu_seconds(os.getpid()), sum(cpu_seconds(p) for p in pids)]
                marks.append((time.perf_counter(), done, cpu))
            wait_completed(app, "default", n, TIMEOUT)
            app.stop(timeout=10)
        finally:
            app.close(timeout=5)
            os.environ.pop(STORE_ENV, None)
    (t0, done0, cpu0), (t1, done1, cpu1) = marks
    jobs = max(done1 - done0, 1)
    extra = {"owner_cpu_us": (cpu1[0] - cpu0[0]) * 1e6 / jobs}
    if processes:
        extra["workers_cpu_us"] = (cpu1[1] - cpu0[1]) * 1e6 / jobs
    where = "in-process" if not processes else f"{processes} worker processes"
    return Result(f"short jobs, {where}", n, jobs_per_s=jobs / (t1 - t0), extra=extra)


def cpu_bound(n: int, processes: int) -> Result:
    """``n`` jobs of ~1 ms pure Python each: in this process (``processes=0``) or in worker
    processes, with concurrency 2 either way. The workers are started and warmed up first (a
    few jobs each), as a long-running worker is; then the clock runs from the insert of the
    ``n`` jobs to the completion of the last."""
    with tempfile.TemporaryDirectory(prefix="kathikon-bench-") as tmp:
        path = str(Path(tmp) / "bench.redb")
        app = _owner_app(path, concurrency=2)
        try:
            app.start(processes=processes or None)
            warm = 10 * max(processes, 1)
            app.insert_all([app.new("bench.spin") for _ in range(warm)])
            wait_completed(app, "default", warm, TIMEOUT)
            start = time.perf_counter()
            app.insert_all([app.new("bench.spin") for _ in range(n)])
            wait_completed(app, "default", warm + n, TIMEOUT)
            elapsed = time.perf_counter() - start
            app.stop(timeout=10)
        finally:
            app.close(timeout=5)
            os.environ.pop(STORE_ENV, None)
    where = "in-process" if not processes else f"{processes} worker processes"
    return Result(f"cpu 1 ms jobs, {where}", n, jobs_per_s=n / elapsed)


def insert_main(count: int) -> None:
    """An inserting client process: ``count`` single inserts; prints its jobs/s."""
    app = make_app(os.environ[STORE_ENV])
    assert app.role == "client", app.role
    start = time.perf_counter()
    for _ in range(count):
        app.insert("bench.noop")
    elapsed = time.perf_counter() - start
    app.close()
    print(count / elapsed)
