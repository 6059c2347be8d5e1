"""Job results: what a worker returned, kept as JSON in the job (``job.result``), and waiting
for a job to finish to read it (``app.result`` / ``app.aresult``).

A value is kept when it encodes as JSON (``json.dumps``, as ``args`` are) within the app's
``max_result_bytes``; otherwise the job still completes, without a result, and an entry
starting ``result not stored:`` in its ``errors`` says why. ``None`` keeps nothing, and so does
a worker registered with ``store_result=False``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from .errors import ConfigurationError, JobCancelledError, JobFailedError, ResultTimeoutError
from .job import Job, JobState

if TYPE_CHECKING:
    from ._native import Engine

#: ``max_result_bytes``'s default: 1 MiB of encoded JSON.
DEFAULT_MAX_RESULT_BYTES = 1 << 20

#: How long one native wait lasts on the main thread (and in ``aresult``'s worker thread), so
#: a KeyboardInterrupt (or a cancelled task) is seen within it. Each wait is woken at once when
#: the job finishes; this only bounds how long a wait for nothing lasts before it is renewed.
WAIT_SLICE = 1.0

#: What a result that was not kept is recorded as, in the job's errors.
NOT_STORED = "result not stored"


def check_max_result_bytes(value: Any) -> int:
    """``max_result_bytes`` checked: an int of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"max_result_bytes={value!r} must be an int of at least 1 (bytes of encoded JSON "
            f"a job's result may take; the default is {DEFAULT_MAX_RESULT_BYTES})"
        )
    return value


def kept(value: Any, limit: Optional[int]) -> tuple[Optional[str], Optional[str]]:
    """What a completing job's ack carries for the value its worker returned: ``(why, json)``
    — the value as JSON text to keep, or why it was not kept (``limit`` None: the worker keeps
    nothing)."""
    if value is None or limit is None:
        return None, None
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        return (
            f"{NOT_STORED}: the value returned ({type(value).__name__}) is not JSON ({exc}); "
            "return JSON values (dict, list, str, int, float, bool, None), or convert it "
            "first",
            None,
        )
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        return (
            f"{NOT_STORED}: the value returned is {size} bytes of JSON, more than "
            f"max_result_bytes={limit}; store large data elsewhere and return its key, or "
            "raise max_result_bytes",
            None,
        )
    return None, text


def wait(engine: Engine, job_id: int, timeout: Optional[float], sliced: bool) -> Job:
    """Wait for job ``job_id`` to finish and return it finished; raise
    :class:`ResultTimeoutError` when ``timeout`` seconds pass first. ``sliced``: wait in
    slices of :data:`WAIT_SLICE` (always on the main thread, where signals must be seen)."""
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
    ):
        raise ConfigurationError(f"timeout={timeout!r} must be None (no end) or seconds >= 0")
    sliced = sliced or threading.current_thread() is threading.main_thread()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if sliced:
            step: Optional[float] = WAIT_SLICE if left is None else min(WAIT_SLICE, left)
        else:
            step = left
        job = engine.wait_finished(job_id, step)
        if job.state in _FINISHED or (deadline is not None and time.monotonic() >= deadline):
            return job


_FINISHED = frozenset({JobState.COMPLETED, JobState.CANCELLED, JobState.DISCARDED})


def result_of(job: Job, timeout: Optional[float]) -> Any:
    """The result of ``job`` as :func:`wait` returned it, or the error its state calls for."""
    if job.state is JobState.COMPLETED:
        return job.result
    if job.state is JobState.DISCARDED:
        why = job.errors[-1]["error"].splitlines()[-1] if job.errors else "no reason recorded"
        raise JobFailedError(
            f"job {job.id} ({job.worker}) was discarded after {job.attempt} attempt(s): {why}",
            job,
        )
    if job.state is JobState.CANCELLED:
        raise JobCancelledError(f"job {job.id} ({job.worker}) was cancelled", job)
    raise ResultTimeoutError(
        f"job {job.id} ({job.worker}) is still {job.state.value} after {timeout:g} s; "
        "wait longer (timeout=None waits until it finishes)",
        job,
    )
