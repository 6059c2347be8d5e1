"""Explicit outcomes a job may return or raise instead of completing.

They are exceptions so they can be raised from deep inside a job, and plain values so they
can be returned. They are control flow, not failures: they are never logged as errors.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Union


class JobOutcome(Exception):
    """Base class of :class:`Cancel`, :class:`Snooze` and :class:`Discard`."""


class Cancel(JobOutcome):
    """Stop the job for good; it ends ``cancelled`` with ``reason`` in its errors."""

    def __init__(self, reason: str = "cancelled by the job") -> None:
        super().__init__(reason)
        self.reason = str(reason)


class Discard(JobOutcome):
    """Give up on the job; it ends ``discarded`` with ``reason`` in its errors."""

    def __init__(self, reason: str = "discarded by the job") -> None:
        super().__init__(reason)
        self.reason = str(reason)


#: The longest snooze, in seconds (100 years): every time the job can be given must stay
#: within what Python's ``datetime`` can read back.
MAX_SNOOZE_SECONDS = 100 * 366 * 86_400


class Snooze(JobOutcome):
    """Run the job again after ``seconds`` (at most :data:`MAX_SNOOZE_SECONDS`) without using
    up an attempt."""

    def __init__(self, seconds: Union[float, timedelta]) -> None:
        value = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 <= value <= MAX_SNOOZE_SECONDS
        ):
            raise ValueError(
                f"Snooze({seconds!r}): pass a number of seconds from 0 to "
                f"{MAX_SNOOZE_SECONDS:,} (100 years) or a timedelta"
            )
        super().__init__(value)
        self.seconds = float(value)
