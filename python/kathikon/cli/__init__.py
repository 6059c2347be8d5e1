"""The ``kathikon`` command line: run an app's workers, and inspect and manage its jobs.

::

    kathikon worker myapp.jobs:app [--queues emails,default] [--concurrency N] [--grace S]
    kathikon jobs   (--app myapp.jobs:app | --path jobs.redb | --url URL) [--state S] [--json]
    kathikon job ID ...    kathikon retry ID... ...    kathikon cancel ID... ...
    kathikon stats ... [--watch [SECONDS]]     kathikon prune ... [--older-than 7d]
    kathikon insert myapp.jobs:app WORKER [--args JSON] [--queue Q] [--schedule-in 1h] ...
    kathikon queues ...    kathikon pause|resume|stop Q ...    kathikon scale|start Q [N] ...
    kathikon cron --app myapp.jobs:app [--json]
    kathikon processes (--app myapp.jobs:app | --path jobs.redb) [--json]
    kathikon migrate --url postgresql://app@db.internal/app
    kathikon dashboard (myapp.jobs:app | --path jobs.redb) [--host H] [--port P] [--allow-actions]

Exit status: 0 on success, 1 on an error (one line on stderr, never a traceback), 2 on a
usage error, 130 when interrupted. ``--json`` prints machine-readable output on stdout.

The commands are a :mod:`click` group, :data:`cli`; add one with ``@cli.command()``, or in a
module of this package imported below (as :mod:`kathikon.cli.insert` is).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn, Optional

import click

from ..errors import KathikonError
from .base import CliError, cli, describe, error_line

# -- entry point ----------------------------------------------------------------------------


def run(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status.
    Every error becomes one line on stderr."""
    try:
        result = cli.main(args=argv, prog_name="kathikon", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.UsageError as e:
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        error_line(e.format_message() + hint)
        return e.exit_code
    except click.ClickException as e:
        error_line(e.format_message())
        return e.exit_code
    except click.Abort:
        error_line("interrupted")
        return 130
    except CliError as e:
        if e.cause is not None and os.environ.get("KATHIKON_DEBUG"):
            traceback.print_exception(type(e.cause), e.cause, e.cause.__traceback__)
        error_line(str(e))
        return e.code
    except KathikonError as e:
        error_line(str(e))
        return 1
    except Exception as e:
        if os.environ.get("KATHIKON_DEBUG"):
            raise
        error_line(
            f"unexpected {describe(e)} (a bug in kathikon; set KATHIKON_DEBUG=1 to see "
            "the traceback)"
        )
        return 1


def main() -> NoReturn:
    """The ``kathikon`` console script."""
    sys.exit(run())


# Each command module adds its commands to the group when imported.
from ..bench.command import bench_command  # noqa: E402
from . import (  # noqa: E402, F401
    bulk,
    cron,
    dashboard,
    insert,
    manage,
    migrate,
    process_list,
    queues,
    stats,
    worker,
)

cli.add_command(insert.insert_command)
cli.add_command(bench_command)

__all__ = ["CliError", "cli", "main", "run"]
