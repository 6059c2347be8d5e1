"""``Kathikon(url=...)`` over TLS, with the url an app gives psycopg: libpq's ``sslmode`` and
``sslrootcert`` in it. A throwaway PostgreSQL (tests/pg_server.py) runs with ``ssl = on`` and a
certificate for ``localhost`` signed by an authority made at test time (the ``openssl``
command); it admits the role ``app`` over TLS only. Which connections are encrypted is read
from ``pg_stat_ssl``. (The Rust tests, rust/kathikon-core/tests/pg_tls.rs, cover every mode.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pg_server
import pytest

import kathikon
from kathikon import JobState
from kathikon._native import Engine

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is a test dependency (make test-env)")


@dataclass
class TlsServer:
    server: pg_server.Server
    ca: Path
    other_ca: Path

    def database(self) -> str:
        """A fresh database's name."""
        return self.server.database().rsplit("/", 1)[1]

    def url(self, db: str, query: str, host: str = "localhost") -> str:
        """The url of ``db`` for ``app`` at ``host`` (connecting to 127.0.0.1), with ``query``."""
        return f"postgresql://app@{host}:{self.server.port}/{db}?hostaddr=127.0.0.1&{query}"


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def _authority(name: str, cwd: Path) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign",
        cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    if shutil.which("openssl") is None:
        why = "the openssl command is missing (Debian's openssl package)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    pki = tmp_path_factory.mktemp("pki")
    _authority("ca", pki)
    _authority("other-ca", pki)
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
        cwd=pki,
    )  # fmt: skip
    (pki / "server.ext").write_text(
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.crt",
        cwd=pki,
    )  # fmt: skip
    try:
        server = pg_server.Server(
            files={n: (pki / n).read_bytes() for n in ("server.crt", "server.key")},
            settings=["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'"],
            hba="local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "hostssl all all 127.0.0.1/32 trust\n",
        )
    except RuntimeError as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI: {e}")
        pytest.skip(str(e))
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE ROLE app LOGIN SUPERUSER")
        yield TlsServer(server, pki / "ca.pem", pki / "other-ca.pem")
    finally:
        server.stop()


def _encrypted(tls: TlsServer, db: str) -> list[bool]:
    with psycopg.connect(tls.server.url(db), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
            " WHERE a.datname = %s AND a.usename = 'app'",
            [db],
        ).fetchall()
    return [bool(r[0]) for r in rows]


def test_verify_full_runs_jobs_over_tls_with_the_url_psycopg_takes(tls: TlsServer) -> None:
    db = tls.database()
    url = tls.url(db, f"sslmode=verify-full&sslrootcert={tls.ca}")
    # libpq (psycopg's) takes this url as it is, and is encrypted too.
    with psycopg.connect(url) as conn:
        assert conn.execute(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone() == (True,)
    cli = [sys.executable, "-m", "kathikon.cli", "migrate", "--url", url]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    app = kathikon.Kathikon(url=url, queues={"default": 2}, poll_interval=0.2)
    try:
        ran: list[int] = []

        @app.worker
        def double(job: kathikon.Job) -> None:
            ran.append(job.args["n"] * 2)

        job = double.insert({"n": 21})
        app.drain()
        assert app.get(job.id).state == JobState.COMPLETED and ran == [42]
        encrypted = _encrypted(tls, db)
        assert encrypted and all(encrypted), encrypted
    finally:
        app.close(timeout=5)


def test_a_certificate_that_does_not_pass_is_a_storage_error_saying_why(tls: TlsServer) -> None:
    db = tls.database()
    # The certificate names localhost, not 127.0.0.1.
    wrong_host = tls.url(db, f"sslmode=verify-full&sslrootcert={tls.ca}", host="127.0.0.1")
    with pytest.raises(kathikon.StorageError, match="not valid for name.*sslmode=verify-ca"):
        kathikon.Kathikon(url=wrong_host, migrate=True)
    wrong_ca = tls.url(db, f"sslmode=verify-full&sslrootcert={tls.other_ca}")
    with pytest.raises(kathikon.StorageError, match="no authority in sslrootcert="):
        kathikon.Kathikon(url=wrong_ca, migrate=True)


def test_bad_tls_settings_are_configuration_errors(tls: TlsServer) -> None:
    db = tls.database()
    with pytest.raises(kathikon.ConfigurationError, match="sslmode=verify-everything"):
        kathikon.Kathikon(url=tls.url(db, "sslmode=verify-everything"))
    with pytest.raises(kathikon.ConfigurationError, match="sslrootcert=system"):
        kathikon.Kathikon(url=tls.url(db, "sslmode=verify-full"))
    missing = tls.url(db, "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
    with pytest.raises(kathikon.ConfigurationError, match="/nonexistent/ca.pem.*cannot be read"):
        kathikon.Kathikon(url=missing)
    # kathikon migrate refuses them the same way.
    with pytest.raises(kathikon.ConfigurationError, match="sslmode=verify-everything"):
        Engine.migrate(tls.url(db, "sslmode=verify-everything"))
