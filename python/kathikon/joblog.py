"""One log line per job outcome, from the telemetry ``job.stop`` event: what ``kathikon
worker`` logs by default and what an app opts in to with
:func:`kathikon.telemetry.attach_job_logger`.

Levels follow Celery and dramatiq: a job that completed, snoozed or was cancelled by its
worker is INFO; a failure that will be retried, a job handed back at shutdown and a late
result the store refused are WARNING; a job discarded (a failure on its last attempt, or
``Discard``) and a job whose worker this process does not know are ERROR.

A text line is logfmt (``job=12 worker=myapp.jobs.send queue=default attempt=1/3
outcome=complete state=completed duration=0.0021s``, then ``error="…"`` with the first line of
the error when there is one). The same fields ride on the log record as ``record.kathikon``,
which :class:`JsonFormatter` writes out with fixed keys (:data:`JOB_KEYS`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Optional

from .job import Job

if TYPE_CHECKING:
    from .telemetry import Handler

from .vocabulary import CANCEL, COMPLETE, DISCARD, FAIL, IGNORED, INTERRUPT, SNOOZE

#: The keys of a job line's JSON object, in order (``error`` is None unless the job failed,
#: was discarded or cancelled with a reason; ``state`` is None for a refused result).
JOB_KEYS = (
    "id",
    "worker",
    "queue",
    "attempt",
    "max_attempts",
    "outcome",
    "state",
    "duration",
    "error",
)
#: The keys of every JSON line, job or not (``event`` is ``"job"`` on a job line, else None;
#: ``traceback`` is the logged exception's, else None). Job lines add :data:`JOB_KEYS`.
LINE_KEYS = ("time", "level", "logger", "message", "event", "traceback")

#: The level of each outcome's line (a failure on its last attempt is ERROR, see above).
LEVELS = {
    COMPLETE: logging.INFO,
    SNOOZE: logging.INFO,
    CANCEL: logging.INFO,
    FAIL: logging.WARNING,
    INTERRUPT: logging.WARNING,
    IGNORED: logging.WARNING,
    DISCARD: logging.ERROR,
}

#: The job's state once the outcome is stored, as the line reports it.
_STATE_AFTER = {
    COMPLETE: "completed",
    SNOOZE: "scheduled",
    CANCEL: "cancelled",
    DISCARD: "discarded",
    INTERRUPT: "scheduled",
}


def first_line(text: Optional[str]) -> Optional[str]:
    """The line that says what went wrong: for a Python traceback the exception line after
    the indented frames (``ValueError: boom``), for a plain reason its first line."""
    if not text:
        return None
    lines = [line for line in text.splitlines() if line.strip()]
    frames = [i for i, line in enumerate(lines) if line.startswith(" ")]
    if lines and lines[0].startswith("Traceback") and frames and frames[-1] + 1 < len(lines):
        return lines[frames[-1] + 1]
    return lines[0] if lines else None


def level_of(job: Job, outcome: str, registered: bool) -> int:
    if outcome == FAIL and (not registered or job.attempt >= job.max_attempts):
        return logging.ERROR
    return LEVELS.get(outcome, logging.INFO)


def fields(job: Job, outcome: str, duration: float, error: Optional[str]) -> dict[str, Any]:
    """A job line's fields, keyed as :data:`JOB_KEYS`."""
    if outcome == FAIL:
        state: Optional[str] = "discarded" if job.attempt >= job.max_attempts else "retryable"
    else:
        state = _STATE_AFTER.get(outcome)
    return {
        "id": job.id,
        "worker": job.worker,
        "queue": job.queue,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "outcome": outcome,
        "state": state,
        "duration": duration,
        "error": first_line(error),
    }


def text_of(f: Mapping[str, Any]) -> str:
    line = (
        f"job={f['id']} worker={_quoted(f['worker'])} queue={_quoted(f['queue'])} "
        f"attempt={f['attempt']}/{f['max_attempts']} outcome={f['outcome']} "
        f"state={f['state'] or '-'} duration={f['duration']:.4f}s"
    )
    if f["error"] is not None:
        line += f" error={json.dumps(f['error'], ensure_ascii=False)}"
    return line


def _quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ' ="') else value


def handler(logger: logging.Logger) -> Handler:
    """The telemetry handler for ``job.stop``: checks the level before building anything."""

    def log_job(_event: Any, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        job: Job = metadata["job"]
        outcome: str = metadata["outcome"]
        registered = bool(metadata.get("registered", True))
        level = level_of(job, outcome, registered)
        if not logger.isEnabledFor(level):
            return
        f = fields(job, outcome, float(measurements.get("duration", 0.0)), metadata.get("error"))
        logger.log(level, "%s", text_of(f), extra={"kathikon": f})

    return log_job


class JsonFormatter(logging.Formatter):
    """One JSON object per line: :data:`LINE_KEYS`, plus :data:`JOB_KEYS` on job lines."""

    def format(self, record: logging.LogRecord) -> str:
        job = getattr(record, "kathikon", None)
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "event": "job" if job is not None else None,
            "traceback": self.formatException(record.exc_info) if record.exc_info else None,
        }
        if job is not None:
            out.update(job)
        return json.dumps(out, ensure_ascii=False, default=str)


#: How ``kathikon worker`` passes its logging options to its worker processes
#: (``--processes``), which inherit the environment: ``LEVEL,FORMAT``.
ENV = "KATHIKON_WORKER_LOGGING"
#: The id of the job logger ``kathikon worker`` attaches.
WORKER_HANDLER_ID = "kathikon-worker-job-logger"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str, fmt: str) -> None:
    """What ``kathikon worker`` does with ``--log-level`` and ``--log-format``: log to stderr
    at ``level`` in ``fmt`` (``text`` or ``json``) unless logging is configured already (then
    only the ``kathikon`` loggers' level is set), and attach the job logger."""
    from . import telemetry

    numeric = getattr(logging, level.upper())
    root = logging.getLogger()
    if not root.handlers:
        out = logging.StreamHandler(sys.stderr)
        out.setFormatter(
            JsonFormatter() if fmt.lower() == "json" else logging.Formatter(TEXT_FORMAT)
        )
        root.addHandler(out)
        root.setLevel(numeric)
    logging.getLogger("kathikon").setLevel(numeric)
    if WORKER_HANDLER_ID not in telemetry.list_handlers():
        telemetry.attach_job_logger(handler_id=WORKER_HANDLER_ID)
    os.environ[ENV] = f"{level.lower()},{fmt.lower()}"


def unconfigure() -> None:
    from . import telemetry

    telemetry.detach(WORKER_HANDLER_ID)
    os.environ.pop(ENV, None)


def inherit() -> None:
    """In a worker process started by ``kathikon worker --processes``: log as it does."""
    options = os.environ.get(ENV, "")
    level, _, fmt = options.partition(",")
    if level and fmt:
        configure(level, fmt)
