"""``kathikon worker``: run an app's workers until SIGINT or SIGTERM, then stop gracefully."""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType
from typing import NoReturn, Optional, Union

import click

from .. import __version__
from ..app import OPEN_LOGGER, Kathikon
from ..errors import StorageLockedError
from ..processes import resolve
from ..stop_signal import StopRequest
from ..testing_mode import refuse_run
from .base import HELD_WHILE_WORKING, CliError, cli
from .load import load_app

log = logging.getLogger("kathikon.worker")


def _processes(
    ctx: click.Context, param: click.Parameter, value: Optional[str]
) -> Union[int, str, None]:
    """``--processes``: an int of at least 1, or ``auto`` (one per core)."""
    if value is None or value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise click.BadParameter(f"{value!r} is not an int of at least 1, nor 'auto'")
    return number


def _parse_queues(
    text: Optional[str], concurrency: Optional[int], configured: dict[str, int]
) -> dict[str, int]:
    """``--queues a,b:5`` and ``--concurrency N`` → queue → concurrency."""
    if text is None:
        names: dict[str, Optional[int]] = dict.fromkeys(configured)
    else:
        names = {}
        for item in text.split(","):
            name, colon, number = item.strip().partition(":")
            if not name:
                raise click.BadParameter(
                    f"{text!r}: name the queues, e.g. emails,default or emails:5,default",
                    param_hint="--queues",
                )
            if colon and not (number.isdigit() and int(number) >= 1):
                raise click.BadParameter(
                    f"{item.strip()!r}: the concurrency after ':' must be an int of at least 1",
                    param_hint="--queues",
                )
            names[name] = int(number) if colon else None
    return {
        name: (
            given
            if given is not None
            else (concurrency if concurrency is not None else configured.get(name, 1))
        )
        for name, given in names.items()
    }


@cli.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option(
    "--queues",
    "-q",
    metavar="NAMES",
    help="Run only these queues, comma-separated; NAME:N also sets a queue's concurrency. "
    "Default: every queue of the app.",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    help="Jobs run at once per queue (default: each queue's configured concurrency).",
)
@click.option(
    "--processes",
    "-p",
    metavar="N|auto",
    callback=_processes,
    help="Run the jobs in N worker processes (past the GIL, for CPU-bound jobs; auto: one per "
    "CPU core); this process keeps the store. Each queue's concurrency is split between them. "
    "Default: run the jobs in this process.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for running jobs at shutdown; jobs still running then are handed "
    "back as interrupted (due again at once, the attempt not counted).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Least level of the `kathikon` loggers that is logged (job lines: INFO completed, "
    "WARNING retried or interrupted, ERROR discarded).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"], case_sensitive=False),
    default="text",
    show_default=True,
    help="text: one human-readable line per event; json: one JSON object per line. "
    "Applies when the app does not configure logging itself.",
)
def worker(
    app_spec: str,
    queues: Optional[str],
    concurrency: Optional[int],
    processes: Union[int, str, None],
    grace: float,
    log_level: str,
    log_format: str,
) -> None:
    """Run the workers of the app MODULE:APP (e.g. myapp.jobs:app) until SIGINT or SIGTERM.

    Logs one line per job outcome on the `kathikon` logger. On the first signal it stops
    claiming jobs and waits up to --grace seconds for the running ones, then hands back those
    still running (due again, the attempt not counted) and exits 0. A second signal exits at
    once (status 1); jobs that were running stay executing in the store and are rescued, that
    attempt counted, when it is next opened. If the store this process owns stops writing
    (a commit failed: a full disk, say), it logs an ERROR naming the store and the cause and
    exits with status 75, for a supervisor to restart it.
    """
    from .. import joblog

    # Before the app is imported, so that what it logs at import is formatted alike.
    joblog.configure(log_level, log_format)
    # The start line names the store's absolute path and this process's role, and a refusal
    # stays one line: the app's own line about opening the store would only repeat them.
    open_logger = logging.getLogger(OPEN_LOGGER)
    open_level = open_logger.level
    open_logger.setLevel(logging.WARNING)
    try:
        app = load_app(app_spec, fires_cron=True)
    except StorageLockedError as e:
        raise CliError(f"{e} ({HELD_WHILE_WORKING})") from None
    try:
        if app.testing is not None:  # it would run no job and wait forever
            raise CliError(str(refuse_run(app, "kathikon worker")))
        selected = _parse_queues(queues, concurrency, app.config.queues)
        _run_worker(app, selected, grace, processes)
    finally:
        joblog.unconfigure()
        open_logger.setLevel(open_level)
        if not app.closed:
            app.close(timeout=0)


def _run_worker(
    app: Kathikon, selected: dict[str, int], grace: float, processes: Union[int, str, None]
) -> None:
    stop = StopRequest()
    signals: list[int] = []

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        signals.append(signum)
        name = signal.Signals(signum).name
        if len(signals) == 1:
            log.info(
                "%s received: no new jobs are claimed; waiting up to %s s for running jobs "
                "(send it again to exit at once)",
                name,
                f"{grace:g}",
            )
            stop.set()
        else:
            log.warning(
                "%s received again: exiting now; running jobs stay executing and are "
                "rescued when the store is next opened",
                name,
            )
            _hard_exit(1)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    count = None if processes is None else resolve(processes)
    try:
        app.start(selected, processes=count, grace=grace)
        store = "memory" if app.path is None else os.path.abspath(app.path)
        log.info(
            "kathikon %s worker started: pid=%d store=%s role=%s queues=%s concurrency=%d "
            "processes=%s grace=%ss",
            __version__,
            os.getpid(),
            store,
            app.role if app.role == "owner" else f"client of pid {app.owner_pid}",
            ",".join(f"{q}:{n}" for q, n in selected.items()),
            sum(selected.values()),
            count or 1,
            f"{grace:g}",
        )
        while not stop.wait(0.5):
            failure = app.store_failure
            if failure is not None:
                _exit_for_restart(app, failure)
        finished = app.stop(timeout=grace)
        app.close(timeout=0)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stop.close()
    if finished:
        log.info("stopped: every running job finished")
        return
    # The runner logged the jobs it handed back (ids and workers) just before.
    log.warning(
        "stopped after the %s s grace period: the jobs still running were handed back as "
        "interrupted by shutdown, due again with their attempt not counted",
        f"{grace:g}",
    )
    # Threads of jobs that outlived the grace period would keep the interpreter alive.
    _hard_exit(0)


#: The exit status after the store stopped writing: EX_TEMPFAIL, "try again later", so that a
#: supervisor restarting on failure (systemd ``Restart=on-failure``, Kubernetes, supervisord
#: with ``autorestart=unexpected``) starts the worker again.
EXIT_STORE_FAILED = 75


def _exit_for_restart(app: Kathikon, failure: str) -> NoReturn:
    """The store this process owns stopped writing (a commit failed: a full disk, say), and
    only reopening it lets anyone write again, which this process cannot do while its app
    holds the store. Exit, so that the store is released: a supervisor restarts the worker,
    whose open replays the store's log (nothing acknowledged is lost); meanwhile other
    processes' next calls reconnect or take the store over."""
    store = "memory" if app.path is None else os.path.abspath(app.path)
    log.error(
        "the store %s stopped writing: %s. Exiting with status %d for a supervisor to "
        "restart this worker (its open replays the store's log; fix the cause first, e.g. "
        "free disk space); jobs running now stay executing and are rescued, the attempt "
        "counted, when the store is next opened",
        store,
        failure,
        EXIT_STORE_FAILED,
    )
    _hard_exit(EXIT_STORE_FAILED)


def _hard_exit(code: int) -> NoReturn:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
