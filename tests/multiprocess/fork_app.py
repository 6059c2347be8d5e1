"""The app of the fork tests: a job that forks a child process which uses the app.

Its store path comes from the environment the test sets. Created at module level, as worker
processes need.
"""

from __future__ import annotations

import multiprocessing
import os

import kathikon

app = kathikon.Kathikon(
    os.environ["KATHIKON_MP_STORE"],
    queues={"default": 2},
    poll_interval=0.2,
    scheduler_interval=0.2,
)


@app.worker
def forks(job: kathikon.Job) -> None:
    """Fork a child (``how``: ``os.fork`` or multiprocessing's ``fork`` start method) that
    inserts a ``child`` job through the app it inherited and reads it back; fail unless the
    child did."""
    if job.args["how"] == "os.fork":
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = use_the_app(job.id)
            finally:
                os._exit(code)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    else:
        process = multiprocessing.get_context("fork").Process(target=child_main, args=(job.id,))
        process.start()
        process.join()
        code = process.exitcode or 0
    if code != 0:
        raise RuntimeError(f"the forked child exited with {code}")


def use_the_app(parent: int) -> int:
    """In the forked child: 0 when an insert and a read through the app worked."""
    inserted = child.insert({"parent": parent})
    return 0 if app.get(inserted.id).args == {"parent": parent} else 2


def child_main(parent: int) -> None:
    raise SystemExit(use_the_app(parent))


@app.worker
def child(job: kathikon.Job) -> None:
    """Inserted by a forked child; does nothing."""


@app.worker
def plain(job: kathikon.Job) -> None:
    """Does nothing: the jobs the worker runs besides the forking ones."""
