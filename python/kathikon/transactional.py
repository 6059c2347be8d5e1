"""Inserting through the caller's own PostgreSQL connection (``insert(..., conn=...)``), so the
jobs commit or roll back with the caller's data: a job is stored exactly when the transaction
that asked for it commits, and never for one that rolled back.

The statement is the one the store itself runs (from the core: the jobs' columns as arrays,
one row per job, a notification per queue delivered at commit, so idle workers on every node
wake once the caller commits). It is run with the connection's ``execute`` and psycopg's
named ``%(pN)s`` parameters, which psycopg 3 (connection or cursor), psycopg2 cursors and
Django's ``connection.cursor()`` all accept."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._native import JobSpec
from .errors import ConfigurationError
from .job import Job
from .options import shown

if TYPE_CHECKING:
    from .app import Kathikon


def insert(app: Kathikon, specs: list[JobSpec], *, conn: Any) -> list[Job]:
    """Insert ``specs`` through ``conn`` in its current transaction; the jobs as they will be
    once it commits."""
    execute = getattr(conn, "execute", None)
    if not callable(execute):
        raise ConfigurationError(
            f"conn={shown(conn)} has no execute(); pass a psycopg 3 connection or cursor, a "
            "psycopg2 cursor, or Django's connection.cursor(), on the app's database"
        )
    sql, params, jobs = app._engine.host_insert(specs)
    cursor = execute(sql, params)
    # psycopg 3 returns the cursor; psycopg2's execute returns None and conn is the cursor.
    rows = (cursor if cursor is not None else conn).fetchall()
    return app._engine.numbered(jobs, sorted(int(row[0]) for row in rows))
