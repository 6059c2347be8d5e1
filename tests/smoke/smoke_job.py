"""Import-and-run smoke test of an installed kathikon, run by ``make smoke`` on every CPython.

It needs nothing but kathikon and its dependencies: no pytest, no source tree.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import kathikon
import kathikon._native

ran: list[str] = []


def main() -> None:
    store = Path(tempfile.mkdtemp()) / "smoke.redb"
    app = kathikon.Kathikon(path=store, queues={"default": 2, "emails": 1})

    @app.worker(queue="emails")
    def send(job: kathikon.Job) -> None:
        ran.append(job.args["to"])

    @app.worker
    async def fetch(job: kathikon.Job) -> kathikon.Snooze | None:
        await asyncio.sleep(0)
        if job.attempt == 1 and job.args.get("snooze"):
            return kathikon.Snooze(0)
        ran.append(job.args["url"])
        return None

    class Report(kathikon.Worker):
        def perform(self, job: kathikon.Job) -> None:
            raise kathikon.Discard("nothing to report")

    app.register(Report)

    first = send.insert({"to": "a@b.c"})
    app.insert_all([fetch.new({"url": "u1"}), fetch.new({"url": "u2", "snooze": True})])
    app.insert(Report, {})
    counts = app.drain()
    assert counts == {"completed": 3, "scheduled": 1, "discarded": 1}, counts
    assert sorted(ran) == ["a@b.c", "u1", "u2"], ran
    assert app.get(first.id).state is kathikon.JobState.COMPLETED
    app.close()

    # The store is durable: reopen it and find the jobs; the CLI (click, rich) reads it too.
    with kathikon.Kathikon(path=store) as again:
        assert len(again.jobs(state="completed")) == 3
        assert len(again.jobs(state="discarded")) == 1
    cli = subprocess.run(
        [sys.executable, "-m", "kathikon", "stats", "--path", str(store), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert '"completed"' in cli.stdout, cli.stdout

    print(
        f"smoke ok: kathikon {kathikon.__version__} on CPython {sys.version.split()[0]} "
        f"(click {version('click')}, rich {version('rich')}), "
        f"native module {Path(kathikon._native.__file__).name}"
    )


if __name__ == "__main__":
    main()
