"""Shared harness for the peer adapters: workloads, timing, worker processes, JSON output.

An adapter (``<system>_<backend>.py``) subclasses :class:`Peer` and calls :func:`main`. Its jobs
live in a separate ``*_jobs.py`` module that both the adapter (after the servers are up and the
``PEER_*`` environment variables are set) and the system's own worker command import; every job
calls ``peermark.record`` first thing, which appends one fixed-size line to a shared file, so
the harness can count completions and measure start times across threads and processes alike.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from peermark import REC_LEN

HERE = Path(__file__).resolve().parent
WORKLOADS = ("insert", "insert_bulk", "drain", "latency", "scheduled")
BATCH = 1000
DEFAULT_TIMEOUT_S = 105.0  # soft: waits give up and report; the watchdog fires 10 s later
HARD_MARGIN_S = 10.0
DEFAULT_LATENCY_RATE = 1000.0
DEFAULT_SCHEDULED_RATE = 100.0
SCHEDULE_AHEAD_S = 1.0
WORKER_BOOT_TIMEOUT_S = 60.0

# ---------------------------------------------------------------------------------------------
# the records the jobs write (see peermark.py)


def read_records(path: Path) -> list[tuple[int, float, float]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for line in data.splitlines():
        seq, t_ref, t_start = line.split()
        out.append((int(seq), float(t_ref), float(t_start)))
    return out


def count_records(path: Path) -> int:
    try:
        return path.stat().st_size // REC_LEN
    except FileNotFoundError:
        return 0


# ---------------------------------------------------------------------------------------------
# the adapter side


@dataclasses.dataclass
class Options:
    workload: str
    jobs: int
    concurrency: int
    rate: float | None
    timeout: float
    redis_appendfsync: str


@dataclasses.dataclass
class Context:
    opts: Options
    tmp: Path
    mark_file: Path
    redis: Any = None  # servers.RedisInfo
    postgres: Any = None  # servers.PostgresInfo

    @property
    def bin(self) -> Path:
        """The virtualenv's bin directory (where the systems' worker commands are)."""
        return Path(sys.executable).parent


class Skip(Exception):
    """The system cannot run this workload; the message says why."""


class Peer:
    """One system under test. Subclasses fill in the class attributes and the methods."""

    system = ""  # short name used in the JSON ("huey")
    package = ""  # distribution whose version is reported
    backend = ""  # "sqlite", "redis" or "postgres": which server to start
    bulk_skip: str | None = None  # why insert_bulk is skipped, if it is
    scheduled_skip: str | None = None

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this system cannot run here at all (then every workload is skipped), or None."""
        return None

    # called once the servers are up and PEER_* variables are set
    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def durability(self) -> str:
        raise NotImplementedError

    def insert(self, seq: int, t_ref: float) -> None:
        raise NotImplementedError

    def insert_many(self, items: Sequence[tuple[int, float]]) -> None:
        raise Skip(self.bulk_skip or "no bulk insert API")

    def schedule(self, seq: int, due: float) -> None:
        """Insert job ``seq`` to start at wall-clock time ``due``."""
        raise Skip(self.scheduled_skip or "no scheduling API")

    def worker_argv(self) -> list[str]:
        """The system's own worker command, run with cwd=tmp and PYTHONPATH=benches/peers."""
        raise NotImplementedError

    def worker_notes(self) -> str:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# worker processes: own session, so the whole group (prefork children, forked horses) can be
# signalled by its id; SIGTERM, then SIGKILL after a grace period.

_WORKERS: list[subprocess.Popen[bytes]] = []


def start_worker(ctx: Context, argv: list[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    log = open(ctx.tmp / "worker.log", "ab")  # the child keeps its own copy of the fd
    proc = subprocess.Popen(
        argv,
        cwd=ctx.tmp,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    _WORKERS.append(proc)
    return proc


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop_workers(grace: float = 8.0) -> None:
    for proc in list(_WORKERS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in list(_WORKERS):
        while time.monotonic() < deadline and _group_alive(proc.pid):
            if proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.05)
            else:
                time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        _WORKERS.remove(proc)


def kill_workers() -> None:
    for proc in list(_WORKERS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def worker_log_tail(ctx: Context, chars: int = 1500) -> str:
    try:
        return (ctx.tmp / "worker.log").read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _session_cpu_s(sid: int) -> float:
    """CPU seconds used so far by the live processes of session ``sid``."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid:  # field 6, session id
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / os.sysconf("SC_CLK_TCK")


def wait_idle(proc: subprocess.Popen[bytes], deadline: float, window: float = 0.5) -> None:
    """Wait until the worker processes use < 10% of a core (all of them have booted)."""
    last = _session_cpu_s(proc.pid)
    quiet = 0
    while time.monotonic() < deadline and quiet < 2:
        time.sleep(window)
        now = _session_cpu_s(proc.pid)
        quiet = quiet + 1 if now - last < 0.1 * window else 0
        last = now


class Timeout(Exception):
    pass


def wait_records(ctx: Context, expected: int, deadline: float, poll: float = 0.005) -> float:
    """Wait until ``expected`` records exist; return the monotonic time they were seen."""
    while True:
        if count_records(ctx.mark_file) >= expected:
            return time.monotonic()
        for proc in _WORKERS:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"worker exited with code {proc.returncode}:\n{worker_log_tail(ctx)}"
                )
        if time.monotonic() > deadline:
            raise Timeout(
                f"timeout: {count_records(ctx.mark_file)} of {expected} jobs started "
                "before the deadline"
            )
        time.sleep(poll)


# ---------------------------------------------------------------------------------------------
# statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def latency_fields(delays_s: Sequence[float]) -> dict[str, float]:
    ms = sorted(d * 1000.0 for d in delays_s)
    return {
        "p50_ms": round(percentile(ms, 0.50), 3),
        "p95_ms": round(percentile(ms, 0.95), 3),
        "p99_ms": round(percentile(ms, 0.99), 3),
        "max_ms": round(ms[-1], 3),
        "min_ms": round(ms[0], 3),
    }


# ---------------------------------------------------------------------------------------------
# workloads; each returns the workload-specific part of the result


def _paced(n: int, rate: float) -> Iterator[int]:
    """Yield 0..n-1 at a steady ``rate`` per second (open loop: late items go at once)."""
    start = time.perf_counter()
    for i in range(n):
        wait = start + i / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        yield i


def _store(peer: Peer, n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        for lo in range(0, n, BATCH):
            peer.insert_many([(i, 0.0) for i in range(lo, min(n, lo + BATCH))])
        how = "bulk"
    except Skip:
        for i in range(n):
            peer.insert(i, 0.0)
        how = "one by one"
    return {"store_s": round(time.perf_counter() - t0, 3), "stored": how}


def run_insert(peer: Peer, ctx: Context) -> dict[str, Any]:
    n = ctx.opts.jobs
    t0 = time.perf_counter()
    for i in range(n):
        peer.insert(i, 0.0)
    elapsed = time.perf_counter() - t0
    return {"jobs_per_s": round(n / elapsed, 1), "seconds": round(elapsed, 4)}


def run_insert_bulk(peer: Peer, ctx: Context) -> dict[str, Any]:
    n = ctx.opts.jobs
    if peer.bulk_skip:
        raise Skip(peer.bulk_skip)
    t0 = time.perf_counter()
    for lo in range(0, n, BATCH):
        peer.insert_many([(i, 0.0) for i in range(lo, min(n, lo + BATCH))])
    elapsed = time.perf_counter() - t0
    return {
        "jobs_per_s": round(n / elapsed, 1),
        "seconds": round(elapsed, 4),
        "batch": BATCH,
    }


def run_drain(peer: Peer, ctx: Context, deadline: float) -> dict[str, Any]:
    n = ctx.opts.jobs
    stored = _store(peer, n)
    t_launch_wall = time.time()
    t_launch = time.monotonic()
    start_worker(ctx, peer.worker_argv())
    error = None
    try:
        t_seen = wait_records(ctx, n, deadline)
    except Timeout as exc:  # report the rate over what did run
        error = str(exc)
        t_seen = time.monotonic()
    recs = read_records(ctx.mark_file)
    if not recs:
        raise Timeout(error or "no job ran")
    done = len({r[0] for r in recs})
    first_start = min(r[2] for r in recs)
    # first job start (wall clock, from the records) -> all n started (monotonic, polled)
    elapsed = (t_seen - t_launch) - (first_start - t_launch_wall)
    out: dict[str, Any] = {
        "jobs_per_s": round(done / elapsed, 1),
        "seconds": round(elapsed, 4),
        "startup_s": round(first_start - t_launch_wall, 3),
        "jobs_per_s_incl_startup": round(done / (t_seen - t_launch), 1),
        "completed": done,
        "duplicates": len(recs) - done,
        **stored,
    }
    if error:
        out["error"] = f"{error}; jobs_per_s is over the {done} that ran"
    return out


def _start_and_warm(peer: Peer, ctx: Context, deadline: float) -> None:
    proc = start_worker(ctx, peer.worker_argv())
    warm = max(1, min(ctx.opts.concurrency, 10))
    for i in range(warm):
        peer.insert(-1 - i, 0.0)
    wait_records(ctx, warm, min(deadline, time.monotonic() + WORKER_BOOT_TIMEOUT_S))
    wait_idle(proc, min(deadline, time.monotonic() + 30.0))


def _measured(ctx: Context, expected_total: int) -> list[tuple[int, float, float]]:
    return [r for r in read_records(ctx.mark_file) if r[0] >= 0][:expected_total]


def run_latency(peer: Peer, ctx: Context, deadline: float) -> dict[str, Any]:
    n = ctx.opts.jobs
    rate = ctx.opts.rate or DEFAULT_LATENCY_RATE
    _start_and_warm(peer, ctx, deadline)
    base = count_records(ctx.mark_file)
    t0 = time.perf_counter()
    for i in _paced(n, rate):
        peer.insert(i, time.time())
    insert_s = time.perf_counter() - t0
    error = None
    try:
        wait_records(ctx, base + n, deadline)
    except Timeout as exc:
        error = str(exc)
    recs = _measured(ctx, n)
    out: dict[str, Any] = {
        "rate": rate,
        "achieved_rate": round(n / insert_s, 1),
        "seconds": round(insert_s, 3),
        "metric": "insert -> job start",
        "completed": len({r[0] for r in recs}),
    }
    if recs:
        out.update(latency_fields([t_start - t_enq for _, t_enq, t_start in recs]))
    if error:
        out["error"] = error
    return out


def run_scheduled(peer: Peer, ctx: Context, deadline: float) -> dict[str, Any]:
    n = ctx.opts.jobs
    rate = ctx.opts.rate or DEFAULT_SCHEDULED_RATE
    if peer.scheduled_skip:
        raise Skip(peer.scheduled_skip)
    _start_and_warm(peer, ctx, deadline)
    base = count_records(ctx.mark_file)
    t0 = time.perf_counter()
    for i in _paced(n, rate):
        peer.schedule(i, time.time() + SCHEDULE_AHEAD_S)
    insert_s = time.perf_counter() - t0
    error = None
    try:
        wait_records(ctx, base + n, deadline)
    except Timeout as exc:
        error = str(exc)
    recs = _measured(ctx, n)
    out: dict[str, Any] = {
        "rate": rate,
        "ahead_s": SCHEDULE_AHEAD_S,
        "seconds": round(insert_s, 3),
        "metric": "job start - due time (negative = early)",
        "completed": len({r[0] for r in recs}),
    }
    if recs:
        out.update(latency_fields([t_start - due for _, due, t_start in recs]))
    if error:
        out["error"] = error
    return out


# ---------------------------------------------------------------------------------------------
# entry point


class _Output:
    """Exactly one JSON line on the real stdout, whoever (main or watchdog) gets there first."""

    def __init__(self) -> None:
        self.fd = os.dup(1)
        os.dup2(2, 1)  # anything the libraries or children print goes to stderr
        sys.stdout = sys.stderr
        self.lock = threading.Lock()
        self.done = False

    def emit(self, result: dict[str, Any]) -> None:
        with self.lock:
            if self.done:
                return
            self.done = True
            os.write(self.fd, (json.dumps(result, default=str) + "\n").encode())


def parse_args(argv: Sequence[str] | None, system: str) -> Options:
    p = argparse.ArgumentParser(description=f"Kathikon peer benchmark adapter: {system}")
    p.add_argument("--workload", required=True, choices=WORKLOADS)
    p.add_argument("--jobs", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help=f"jobs/s inserted for latency (default {DEFAULT_LATENCY_RATE:g}) and "
        f"scheduled (default {DEFAULT_SCHEDULED_RATE:g})",
    )
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    p.add_argument(
        "--redis-appendfsync",
        choices=("everysec", "always"),
        default=os.environ.get("PEER_REDIS_APPENDFSYNC", "everysec"),
    )
    a = p.parse_args(argv)
    if a.jobs < 1 or a.concurrency < 1:
        p.error("--jobs and --concurrency must be >= 1")
    return Options(
        workload=a.workload,
        jobs=a.jobs,
        concurrency=a.concurrency,
        rate=a.rate,
        timeout=a.timeout,
        redis_appendfsync=a.redis_appendfsync,
    )


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


RUNNERS: dict[str, Callable[[Peer, Context, float], dict[str, Any]]] = {
    "insert": lambda peer, ctx, deadline: run_insert(peer, ctx),
    "insert_bulk": lambda peer, ctx, deadline: run_insert_bulk(peer, ctx),
    "drain": run_drain,
    "latency": run_latency,
    "scheduled": run_scheduled,
}


def _start_servers(stack: contextlib.ExitStack, ctx: Context, backend: str) -> None:
    """Start the server the backend needs (stopped when ``stack`` closes); set PEER_* vars."""
    import servers  # only the adapter process needs it, not the workers

    os.environ["PEER_MARK_FILE"] = str(ctx.mark_file)
    os.environ["PEER_CONCURRENCY"] = str(ctx.opts.concurrency)
    os.environ["PEER_TMP"] = str(ctx.tmp)
    if backend == "redis":
        ctx.redis = stack.enter_context(servers.redis_server(ctx.opts.redis_appendfsync))
        os.environ["PEER_REDIS_URL"] = ctx.redis.url
    elif backend == "postgres":
        ctx.postgres = stack.enter_context(servers.postgres_server())
        os.environ["PEER_PG_DSN"] = ctx.postgres.dsn
    else:
        os.environ["PEER_DB_PATH"] = str(ctx.tmp / "queue.db")


def main(peer_cls: Callable[[Context], Peer], argv: Sequence[str] | None = None) -> int:
    cls: Any = peer_cls
    opts = parse_args(argv, cls.system)
    out = _Output()
    started = time.monotonic()
    deadline = started + opts.timeout
    result: dict[str, Any] = {
        "system": cls.system,
        "version": _version(cls.package),
        "backend": cls.backend,
        "workload": opts.workload,
        "jobs": opts.jobs,
        "concurrency": opts.concurrency,
        "rate": None,
        "durability": None,
        "notes": None,
        "jobs_per_s": None,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "max_ms": None,
        "seconds": None,
        "python": ".".join(map(str, sys.version_info[:3])),
    }

    reason = cls.unavailable()
    if reason:
        result["skipped"] = reason
        out.emit(result)
        return 0

    import servers  # only the adapter process needs it, not the workers

    run_dirs: list[Path] = []

    def abort() -> None:
        result["error"] = f"hard timeout after {opts.timeout + HARD_MARGIN_S:.0f} s: killed"
        kill_workers()
        servers.kill_all()
        for tmp in run_dirs:
            shutil.rmtree(tmp, ignore_errors=True)
        out.emit(result)
        os._exit(3)

    watchdog = threading.Timer(opts.timeout + HARD_MARGIN_S, abort)
    watchdog.daemon = True
    watchdog.start()

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    code = 0
    try:
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peer-run-")))
            run_dirs.append(tmp)
            ctx = Context(opts=opts, tmp=tmp, mark_file=tmp / "marks.txt")
            _start_servers(stack, ctx, cls.backend)
            if os.environ.get("PEER_SHOW_WORKER_LOG"):  # debugging: worker log to stderr
                stack.callback(lambda: sys.stderr.write(worker_log_tail(ctx, 20000)))
            stack.callback(stop_workers)  # runs before the servers stop
            peer = peer_cls(ctx)
            peer.open()
            stack.callback(peer.close)
            result["durability"] = peer.durability()
            result["notes"] = peer.worker_notes()
            try:
                result.update(RUNNERS[opts.workload](peer, ctx, deadline))
            except Skip as exc:
                result["skipped"] = str(exc)
            if opts.workload in ("insert", "insert_bulk"):
                result["notes"] = None  # no workers run for the insert workloads
    except (Exception, KeyboardInterrupt, SystemExit) as exc:
        code = 1
        msg = str(exc) if isinstance(exc, (Timeout, RuntimeError)) else repr(exc)
        result["error"] = msg
        traceback.print_exc(file=sys.stderr)
    finally:
        watchdog.cancel()
    result["total_s"] = round(time.monotonic() - started, 2)
    out.emit(result)
    return code
