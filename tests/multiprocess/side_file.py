"""The side file the multi-process test apps write: one line per event, appended and fsync'd
before the job goes on, so a test that SIGKILLs a process still reads every line written."""

from __future__ import annotations

import os


def append(path: str, line: str) -> None:
    """Append ``line`` (and a newline) to the file at ``path``, fsync'd."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
