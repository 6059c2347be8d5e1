"""Where the import of a user's app module failed: the file and line to report, and the
error line that says so.

A traceback of a failed import starts in the command line and the import machinery, then runs
through the user's code, and may end inside the standard library or a dependency (a
``json.loads`` of a bad setting, a missing environment variable read through ``os``). The
line worth showing is the last one in the user's own code: the module named on the command
line, or any module of its top-level package. A :class:`SyntaxError` has no frame of that code
at all; its ``filename`` and ``lineno`` say where it is.
"""

from __future__ import annotations

import importlib
import os
import traceback
from pathlib import Path
from typing import Optional

#: Where the import system and this package live: their frames are never the user's code.
_MACHINERY = (Path(importlib.__file__).resolve().parent, Path(__file__).resolve().parents[1])


def _is_machinery(filename: str) -> bool:
    if filename.startswith("<frozen importlib"):
        return True
    path = Path(filename).resolve()
    return any(root in path.parents for root in _MACHINERY)


def _user_root(first_file: str, module_name: str) -> Path:
    """The file or directory holding the user's code: the top-level package of
    ``module_name`` when ``first_file`` (the first module the import ran) lies in it, else
    that file alone."""
    top = module_name.split(".")[0]
    path = Path(first_file).resolve()
    for parent in path.parents:
        if parent.name == top and (parent / "__init__.py").exists():
            return parent
    return path


def failure_location(error: BaseException, module_name: str) -> Optional[str]:
    """``FILE, line N`` (and ``in FUNCTION`` for a frame) of the user's code where importing
    ``module_name`` raised ``error``; ``None`` when no such place is known."""
    if (
        isinstance(error, SyntaxError)
        and error.filename
        and error.lineno
        and os.path.isfile(error.filename)
    ):
        return f"{os.path.abspath(error.filename)}, line {error.lineno}"
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not _is_machinery(frame.filename)
    ]
    if not frames:
        return None
    root = _user_root(frames[0].filename, module_name)
    inside = [
        f
        for f in frames
        if Path(f.filename).resolve() == root or root in Path(f.filename).resolve().parents
    ]
    frame = (inside or frames)[-1]
    where = f"{frame.filename}, line {frame.lineno}"
    return where if frame.name == "<module>" else f"{where}, in {frame.name}"


def import_failed(module_name: str, error: BaseException) -> str:
    """The error line for a module whose own code raised ``error`` while it was imported:
    what, and where in the user's code (the traceback itself with ``KATHIKON_DEBUG=1``)."""
    if isinstance(error, SyntaxError):
        what = f"{type(error).__name__}: {error.msg}"
    else:
        what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    where = failure_location(error, module_name)
    at = f" at {where}" if where is not None else ""
    hint = "" if os.environ.get("KATHIKON_DEBUG") else " (KATHIKON_DEBUG=1 shows the traceback)"
    return f"importing {module_name!r} failed{at}: {what}{hint}"
