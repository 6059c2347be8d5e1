"""The processes working on a store (``app.processes()``), as its owner sees them: the owner
itself and every client connected to its socket (the worker processes of
``kathikon worker --processes N``, a dashboard, another app on the same file)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Optional, cast

from ._native import Engine
from .job import from_micros

Role = Literal["owner", "client", "node"]


@dataclass(frozen=True)
class ProcessInfo:
    """One process working on the store.

    ``role`` is ``"owner"`` (it opened the file and serves it; listed first) or ``"client"``,
    or on a PostgreSQL database, where every process is a peer with a lease, ``"node"``.
    ``connected_at`` is when it opened the store or connected to the owner, ``last_seen`` when
    the owner last heard from it (now, for the owner), ``lease_expires`` when its running jobs
    are rescued if the owner hears nothing more (``None`` for the owner); all aware UTC
    datetimes on the store's clock. ``jobs`` are the ids of the jobs it is running and
    ``queues`` the queues it claims from."""

    pid: int
    role: Role
    hostname: str
    connected_at: datetime
    last_seen: datetime
    lease_expires: Optional[datetime]
    jobs: tuple[int, ...]
    queues: tuple[str, ...]


def read(engine: Engine) -> list[ProcessInfo]:
    """Every process working on the store, the owner first, then clients by pid (on
    PostgreSQL, every node: the others by id, this process's last)."""
    return [
        ProcessInfo(
            pid=pid,
            role=cast(Role, role),
            hostname=hostname,
            connected_at=from_micros(connected),
            last_seen=from_micros(seen),
            lease_expires=None if expires is None else from_micros(expires),
            jobs=tuple(jobs),
            queues=tuple(queues),
        )
        for pid, role, hostname, connected, seen, expires, jobs, queues in engine.processes()
    ]
