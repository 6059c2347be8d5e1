"""Throw-away Redis and PostgreSQL servers for the peer benchmarks.

Both come from Debian's packages (``redis-server``; ``postgresql`` puts its binaries under
``/usr/lib/postgresql/<major>/bin``). Each context manager starts one server on 127.0.0.1 on a
free, non-default port with its data under a fresh temporary directory, waits until it answers,
yields its connection details, and stops it by PID on the way out (also on errors), then
deletes the directory.

Every started server is also listed in ``ACTIVE`` (for a watchdog that must kill it without
unwinding) and, when ``PEER_PID_DIR`` is set, in a small file there, so that ``run_peers.py``
can stop by PID a server left behind by an adapter that was itself killed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
REDIS_BIN = "/usr/bin/redis-server"
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PG_USER_CANDIDATES = ("postgres", "kathikon-bench")
READY_TIMEOUT_S = 30.0

# pid -> (process, signal for a quick stop, temp dir), for servers started here, not stopped.
ACTIVE: dict[int, tuple[subprocess.Popen[bytes], int, Path]] = {}
QUICK_STOP = {"redis": signal.SIGTERM, "postgres": signal.SIGQUIT}  # SIGQUIT: immediate


@dataclass(frozen=True)
class RedisInfo:
    host: str
    port: int
    url: str
    pid: int
    version: str
    appendfsync: str

    @property
    def durability(self) -> str:
        return f"redis {self.version} appendonly yes, appendfsync {self.appendfsync}"


@dataclass(frozen=True)
class PostgresInfo:
    host: str
    port: int
    user: str
    dbname: str
    dsn: str
    pid: int
    version: str

    @property
    def durability(self) -> str:
        return (
            f"postgresql {self.version} fsync=on, synchronous_commit=on, "
            "full_page_writes=on (the defaults)"
        )


def free_port() -> int:
    """A free TCP port on 127.0.0.1 chosen by the kernel (never 6379 or 5432 in practice)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in (6379, 5432):
            return port


def _register(proc: subprocess.Popen[bytes], kind: str, tmp: Path) -> None:
    ACTIVE[proc.pid] = (proc, QUICK_STOP[kind], tmp)
    pid_dir = os.environ.get("PEER_PID_DIR")
    if pid_dir:  # "<pid>\n<temp dir>\n", read by run_peers.reap_leftover_servers
        Path(pid_dir, f"{kind}-{proc.pid}.pid").write_text(f"{proc.pid}\n{tmp}\n")


def _unregister(proc: subprocess.Popen[bytes]) -> None:
    ACTIVE.pop(proc.pid, None)
    pid_dir = os.environ.get("PEER_PID_DIR")
    if pid_dir:
        for path in Path(pid_dir).glob(f"*-{proc.pid}.pid"):
            path.unlink(missing_ok=True)


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float = 10.0) -> None:
    """Send ``sig`` to the server's PID, wait, and SIGKILL it if it is still there."""
    try:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    finally:
        _unregister(proc)


def kill_all() -> None:
    """Stop every server this process started, fast (for a watchdog): the quick-stop signal
    (PostgreSQL's immediate shutdown still takes its backends down with it), then SIGKILL."""
    for proc, sig, tmp in list(ACTIVE.values()):
        with contextlib.suppress(Exception):
            _stop(proc, sig, timeout=3.0)
        shutil.rmtree(tmp, ignore_errors=True)


def _log_tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_version() -> str:
    out = subprocess.run([REDIS_BIN, "--version"], capture_output=True, text=True, check=True)
    for word in out.stdout.split():
        if word.startswith("v="):
            return word[2:]
    return out.stdout.strip()


@contextlib.contextmanager
def redis_server(appendfsync: str = "everysec") -> Iterator[RedisInfo]:
    """Run ``redis-server`` with an append-only file (``appendfsync`` everysec or always)."""
    if appendfsync not in ("everysec", "always"):
        raise ValueError(f"appendfsync must be everysec or always, not {appendfsync!r}")
    if not os.path.exists(REDIS_BIN):
        raise RuntimeError(f"{REDIS_BIN} not found: run benches/peers/setup.sh")
    tmp = Path(tempfile.mkdtemp(prefix="peer-redis-"))
    port = free_port()
    log = tmp / "redis.log"
    argv = [
        REDIS_BIN,
        "--bind", HOST,
        "--port", str(port),
        "--protected-mode", "yes",
        "--dir", str(tmp),
        "--appendonly", "yes",
        "--appendfsync", appendfsync,
        "--save", "",
        "--daemonize", "no",
        "--logfile", str(log),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _register(proc, "redis", tmp)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _redis_ping(port):
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited early:\n{_log_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not ready in {READY_TIMEOUT_S} s")
            time.sleep(0.02)
        yield RedisInfo(
            host=HOST,
            port=port,
            url=f"redis://{HOST}:{port}/0",
            pid=proc.pid,
            version=redis_version(),
            appendfsync=appendfsync,
        )
    finally:
        _stop(proc, signal.SIGTERM)  # SIGTERM: redis flushes the AOF and exits
        shutil.rmtree(tmp, ignore_errors=True)


def pg_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<major>/bin`` that has a ``postgres`` binary."""
    dirs = [Path(d) for d in glob.glob(PG_BIN_GLOB) if Path(d, "postgres").exists()]
    if not dirs:
        raise RuntimeError("no /usr/lib/postgresql/*/bin/postgres: run benches/peers/setup.sh")
    return max(dirs, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)


def _pg_user() -> pwd.struct_passwd | None:
    """The account that runs PostgreSQL when we are root (it refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in PG_USER_CANDIDATES:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
         "kathikon-bench"],
        check=True,
    )  # fmt: skip
    return pwd.getpwnam("kathikon-bench")


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresInfo]:
    """initdb a fresh cluster in a temp dir and run ``postgres`` on it (defaults: fsync on)."""
    bindir = pg_bindir()
    account = _pg_user()
    tmp = Path(tempfile.mkdtemp(prefix="peer-pg-"))
    data = tmp / "data"
    log = tmp / "postgres.log"
    if account is not None:
        os.chown(tmp, account.pw_uid, account.pw_gid)
    run_as: dict[str, int] = {}
    if account is not None:
        run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    port = free_port()
    user = "bench"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(log, "ab") as logf:
            # --no-sync only skips flushing initdb's own files; the server runs with fsync=on.
            subprocess.run(
                [str(bindir / "initdb"), "-D", str(data), "-U", user, "-A", "trust",
                 "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd=tmp, check=True,
                **run_as,  # type: ignore[arg-type]
            )  # fmt: skip
            proc = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data),
                 "-c", f"listen_addresses={HOST}", "-p", str(port),
                 "-c", f"unix_socket_directories={tmp}",
                 "-c", "max_connections=300",
                 "-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "full_page_writes=on"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd=tmp,
                start_new_session=True,
                **run_as,  # type: ignore[arg-type]
            )  # fmt: skip
        _register(proc, "postgres", tmp)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-q", "-h", HOST, "-p", str(port), "-U", user],
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if ready.returncode == 0:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"postgres exited early:\n{_log_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres not ready in {READY_TIMEOUT_S} s")
            time.sleep(0.05)
        banner = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout  # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        found = re.search(r"\(PostgreSQL\) (\S+)", banner)
        version = found.group(1) if found else banner.strip()
        yield PostgresInfo(
            host=HOST,
            port=port,
            user=user,
            dbname="postgres",
            dsn=f"postgresql://{user}@{HOST}:{port}/postgres",
            pid=proc.pid,
            version=version,
        )
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"initdb failed:\n{_log_tail(log)}") from exc
    finally:
        if proc is not None:
            _stop(proc, signal.SIGINT)  # SIGINT: PostgreSQL's "fast" shutdown
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # smoke test: start both, print where, stop both
    with redis_server() as r, postgres_server() as p:
        print(r, r.durability)
        print(p, p.durability)
