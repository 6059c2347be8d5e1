"""A throwaway PostgreSQL server for the tests of ``Kathikon(url=...)``: Debian's server
binaries (``make postgres`` installs them), ``initdb`` into a temporary directory (as the
``postgres`` user when running as root, since initdb refuses root), listening on 127.0.0.1 on a
free port, stopped by PID at the end of the session. Each test gets a fresh database.

Without the binaries the tests that need them skip, naming what is missing; under CI (``CI``
set) they fail instead, as CI installs them."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from itertools import count
from typing import Optional

import pytest


def _bin_dir() -> Optional[str]:
    found = sorted(
        (int(os.path.basename(os.path.dirname(b))), b)
        for b in glob.glob("/usr/lib/postgresql/*/bin")
        if os.path.isfile(os.path.join(b, "postgres"))
        and os.path.isfile(os.path.join(b, "initdb"))
        and os.path.basename(os.path.dirname(b)).isdigit()
    )
    return found[-1][1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One running server; :meth:`database` makes a fresh database and returns its url.

    ``files`` are written into the data directory (owned by the server's user, mode 0600, as
    PostgreSQL wants of a key), ``settings`` appended to ``postgresql.conf`` and ``hba``, when
    given, replaces ``pg_hba.conf`` (it must let ``postgres`` connect over TCP in plain text,
    as :meth:`database` does)."""

    def __init__(
        self,
        files: Optional[dict[str, bytes]] = None,
        settings: Sequence[str] = (),
        hba: Optional[str] = None,
    ) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            raise RuntimeError(
                "PostgreSQL's server binaries are missing (no /usr/lib/postgresql/*/bin/postgres"
                " and initdb); install Debian's postgresql package: make postgres"
            )
        self._bin = bin_dir
        self._user: Optional[pwd.struct_passwd] = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, and there is no `postgres` user to run PostgreSQL as "
                    "(initdb refuses root); install Debian's postgresql package: make postgres"
                ) from None
        self.dir = tempfile.mkdtemp(prefix="kathikon-pg-")
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        data = os.path.join(self.dir, "data")
        self._run(
            "initdb",
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--no-sync",
            "-D",
            data,
        )
        self._configure(data, files or {}, settings, hba)
        self.port = _free_port()
        log = open(os.path.join(self.dir, "server.log"), "wb")
        self._server = subprocess.Popen(
            [
                os.path.join(self._bin, "postgres"),
                "-D",
                data,
                "-k",
                self.dir,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=self._env(),
            **self._as_user(),
        )
        log.close()
        self._names = count(1)
        deadline = time.monotonic() + 60
        while (
            subprocess.run(
                [os.path.join(self._bin, "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            ).returncode
            != 0
        ):
            if time.monotonic() > deadline or self._server.poll() is not None:
                with open(os.path.join(self.dir, "server.log")) as f:
                    raise RuntimeError(f"PostgreSQL did not start: {f.read()}")
            time.sleep(0.05)

    def _configure(
        self, data: str, files: dict[str, bytes], settings: Sequence[str], hba: Optional[str]
    ) -> None:
        for name, content in files.items():
            path = os.path.join(data, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            if self._user is not None:
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        if settings:
            with open(os.path.join(data, "postgresql.conf"), "a") as f:
                f.write("\n" + "\n".join(settings) + "\n")
        if hba is not None:
            with open(os.path.join(data, "pg_hba.conf"), "w") as f:
                f.write(hba)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}

    def _as_user(self) -> dict[str, int]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid}

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [os.path.join(self._bin, program), *args],
            capture_output=True,
            text=True,
            env=self._env(),
            check=False,
            **self._as_user(),
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A fresh, empty database; its url."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def stop(self) -> None:
        """Stop the server by its PID (a fast shutdown), then remove its directory."""
        if self._server.poll() is None:
            self._server.send_signal(signal.SIGINT)
            try:
                self._server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


_server: Optional[Server] = None
_failure: Optional[str] = None


def server() -> Server:
    """The session's server, started on first use; skips (fails under CI) without one."""
    global _server, _failure
    if _server is None and _failure is None:
        try:
            _server = Server()
        except RuntimeError as e:
            _failure = str(e)
    if _server is None:
        assert _failure is not None
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI: {_failure}")
        pytest.skip(_failure)
    return _server


def stop() -> None:
    """Stop the session's server, if one was started."""
    if _server is not None:
        _server.stop()
