"""Showing a report again every few seconds until Ctrl-C: ``kathikon stats --watch``.

On a terminal each report replaces the last (cursor home, clear the screen), under a line with
the time, as ``watch(1)`` does. Anywhere else (a pipe, a file, a log collector) the reports
follow one another, each after a line with its time, so that the output reads as a log; JSON
reports are one object per line, without time lines (each carries its own time).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone
from typing import Callable

import click

#: Cursor to the top-left corner, then clear the screen.
HOME_AND_CLEAR = "\x1b[H\x1b[2J"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def watch(show: Callable[[], None], interval: float, *, time_lines: bool = True) -> None:
    """Call ``show()`` every ``interval`` seconds until Ctrl-C (or the reader of a pipe goes
    away), then return normally: stopping is how a watch ends, not an error."""
    terminal = sys.stdout.isatty()
    due = time.monotonic()
    try:
        while True:
            if terminal:
                click.echo(HOME_AND_CLEAR, nl=False)
                click.echo(f"{_now()}, every {interval:g} s (Ctrl-C to stop)\n")
            elif time_lines:
                click.echo(f"-- {_now()}")
            show()
            sys.stdout.flush()
            # A fixed cadence: a slow report does not push every later one back.
            due = max(due + interval, time.monotonic())
            time.sleep(max(0.0, due - time.monotonic()))
    except KeyboardInterrupt:
        if terminal:
            click.echo()  # past the "^C" the terminal echoed
    except BrokenPipeError:
        # e.g. `| head`: nothing more to write, and nothing to flush at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
