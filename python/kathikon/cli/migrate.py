"""``kathikon migrate --url URL``: create or upgrade Kathikon's schema in a PostgreSQL database,
before the apps that use it start (they refuse a database whose schema is missing or older,
unless opened with ``migrate=True``)."""

from __future__ import annotations

import click

from .._native import Engine
from .base import cli


@cli.command("migrate")
@click.option(
    "--url",
    required=True,
    metavar="URL",
    help="The PostgreSQL database, e.g. postgresql://app@db.internal/app.",
)
def migrate_command(url: str) -> None:
    """Create or upgrade the ``kathikon`` schema of the PostgreSQL database at URL.

    Idempotent, and safe while other machines run or migrate: migrations take a lock and each
    runs once. The app's own tables are never touched.
    """
    before = Engine.migrate(url)
    now = Engine.schema_version()
    if before == now:
        click.echo(f"the database is at Kathikon schema version {now} already; nothing to do")
    elif before == 0:
        click.echo(f"created Kathikon's schema (version {now})")
    else:
        click.echo(f"upgraded Kathikon's schema from version {before} to {now}")
