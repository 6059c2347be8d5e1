"""``insert(..., conn=...)`` on a PostgreSQL store: the job is inserted in the caller's own
transaction, so it exists exactly when that commits — with psycopg 3 (connection and cursor),
SQLAlchemy's session and Django's ``transaction.atomic`` — and a committed job runs. A rolled
back transaction leaves no job, and wakes no worker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

import kathikon
from kathikon import JobState

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is a test dependency (make test-env)")


@pytest.fixture
def db(pg_db: str) -> str:
    """A fresh database with Kathikon's schema and an ``orders`` table of the app's own."""
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL)")
    return pg_db


@pytest.fixture
def app(db: str) -> Iterator[kathikon.Kathikon]:
    a = kathikon.Kathikon(url=db, poll_interval=0.2)
    a.worker(name="ship")(lambda job: None)
    try:
        yield a
    finally:
        a.close(timeout=5)


def jobs(app: kathikon.Kathikon) -> list[kathikon.Job]:
    return list(app.jobs())


def test_a_job_exists_exactly_when_the_callers_transaction_commits(
    app: kathikon.Kathikon, db: str
) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("INSERT INTO orders (item) VALUES ('book')")
        job = app.insert("ship", {"order": 1}, conn=conn)
        assert job.id > 0 and job.state == JobState.AVAILABLE
        assert jobs(app) == [], "not visible to anyone before the commit"
        conn.commit()
    assert [j.id for j in jobs(app)] == [job.id]
    assert app.get(job.id).args == {"order": 1}

    with psycopg.connect(db) as conn:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO orders (item) VALUES ('pen')")
            app.insert_all([app.new("ship", {"order": n}) for n in (2, 3)], conn=cur)
        conn.rollback()
    assert [j.id for j in jobs(app)] == [job.id], "a rolled-back transaction leaves no job"
    with psycopg.connect(db) as conn:
        (orders,) = conn.execute("SELECT count(*) FROM orders").fetchone() or (0,)
    assert orders == 1


def test_a_committed_job_runs_and_wakes_an_idle_worker(app: kathikon.Kathikon, db: str) -> None:
    ran = threading.Event()
    worker = app.worker(name="notify")(lambda job: ran.set())
    app.start()
    with psycopg.connect(db) as conn:
        worker.insert({}, conn=conn)
        assert not ran.wait(0.5), "a job ran before its transaction committed"
        conn.commit()
    assert ran.wait(30), "the committed job never ran"


def test_sqlalchemy_session(app: kathikon.Kathikon, db: str) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy", reason="SQLAlchemy is a test dependency")
    from sqlalchemy.orm import Session

    engine = sqlalchemy.create_engine(db.replace("postgresql://", "postgresql+psycopg://"))
    with Session(engine) as session, session.begin():
        session.execute(sqlalchemy.text("INSERT INTO orders (item) VALUES ('lamp')"))
        # The session's own psycopg connection, in the session's transaction.
        raw: Any = session.connection().connection.driver_connection
        job = app.insert("ship", {"order": "lamp"}, conn=raw)
    assert app.get(job.id).args == {"order": "lamp"}
    try:
        with Session(engine) as session, session.begin():
            raw = session.connection().connection.driver_connection
            app.insert("ship", {"order": "none"}, conn=raw)
            raise RuntimeError("the order failed")
    except RuntimeError:
        pass
    assert [j.args["order"] for j in jobs(app)] == ["lamp"]
    engine.dispose()


def test_django_atomic(app: kathikon.Kathikon, db: str) -> None:
    pytest.importorskip("django", reason="Django is a test dependency")
    import django
    from django.conf import settings

    parts = urlsplit(db)
    if not settings.configured:
        settings.configure(
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": parts.path.lstrip("/"),
                    "USER": parts.username,
                    "HOST": parts.hostname,
                    "PORT": parts.port,
                }
            }
        )
        django.setup()
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("INSERT INTO orders (item) VALUES ('desk')")
        job = app.insert("ship", {"order": "desk"}, conn=cursor)
    assert app.get(job.id).args == {"order": "desk"}
    with pytest.raises(RuntimeError), transaction.atomic(), connection.cursor() as cursor:
        app.insert("ship", {"order": "none"}, conn=cursor)
        raise RuntimeError("the order failed")
    assert [j.args["order"] for j in jobs(app)] == ["desk"]
    connection.close()


def test_bad_uses_are_refused_and_insert_nothing(app: kathikon.Kathikon, db: str) -> None:
    with pytest.raises(kathikon.ConfigurationError, match="no execute"):
        app.insert("ship", {}, conn=object())
    with psycopg.connect(db) as conn:
        with pytest.raises(kathikon.InvalidJobError, match="unique"):
            app.insert("ship", {}, conn=conn, unique=kathikon.Unique())
        conn.commit()
    file_app = kathikon.Kathikon(None)
    file_app.worker(name="ship")(lambda job: None)
    try:
        with psycopg.connect(db) as conn, pytest.raises(kathikon.ConfigurationError, match="url="):
            file_app.insert("ship", {}, conn=conn)
    finally:
        file_app.close()
    assert jobs(app) == []
