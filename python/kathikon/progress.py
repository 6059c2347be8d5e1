"""Job progress: the latest ``(fraction, note)`` a running job reported with
:meth:`Job.progress <kathikon.Job.progress>`, as stored.

A report is kept in the reporting process and written at most twice a second per job (the
latest value wins), and the last value still waiting when the attempt ends is written before
its outcome, so the stored progress of a finished job is the last one it reported. The store
keeps it for 24 hours after the last report, and the next attempt's first report replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from ._native import Engine
from .job import from_micros


@dataclass(frozen=True)
class Progress:
    """A job's latest stored progress: ``fraction`` from 0.0 to 1.0, the optional ``note``,
    ``at`` (when it was written, an aware UTC datetime on the store's clock) and the
    ``attempt`` that reported it."""

    fraction: float
    note: Optional[str]
    at: datetime
    attempt: int


def read(engine: Engine, job_id: int) -> Optional[Progress]:
    """Job ``job_id``'s latest stored progress, or ``None`` if it never reported any (or it
    expired)."""
    row = engine.progress(job_id)
    if row is None:
        return None
    attempt, fraction, note, at = row
    return Progress(fraction=fraction, note=note, at=from_micros(at), attempt=attempt)
