"""``kathikon bench``: the command-line front of :mod:`kathikon.bench`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import click

from . import WORKLOADS, machine, run
from .peers import find_peers_dir, peer_medians, run_peers
from .table import print_report
from .workloads import DATABASE_QUEUE, on_database

DEFAULT = "fsync,insert,drain,latency,scheduled,open,processes"
#: The workloads that run on a PostgreSQL database (``--url``); the first two are the default
#: there.
ON_DATABASE = ("drain", "latency", "limits")


def _peers_path(given: Optional[str]) -> Path:
    """Where the peers' runner is, found before Kathikon's workloads run, so a missing source
    checkout is reported at once rather than after minutes of measuring."""
    try:
        return find_peers_dir(given)
    except FileNotFoundError as e:
        raise click.UsageError(str(e)) from None


#: The peers' workloads (``benches/peers/run_peers.py``) behind each of ours; the others have
#: no peer counterpart.
PEER_WORKLOADS: dict[str, tuple[str, ...]] = {
    "insert": ("insert", "insert_bulk"),
    "drain": ("drain",),
    "latency": ("latency",),
    "scheduled": ("scheduled",),
}


@click.command("bench")
@click.option(
    "-w",
    "--workloads",
    default=DEFAULT,
    show_default=True,
    help=f"comma-separated, from: {', '.join(WORKLOADS)}",
)
@click.option("--scale", default=1.0, show_default=True, help="multiply every job count by this")
@click.option("--rounds", default=3, show_default=True, help="runs per workload; medians shown")
@click.option("--peers", is_flag=True, help="also run the peers of benches/peers (source checkout)")
@click.option("--peers-dir", default=None, help="where run_peers.py is (default ./benches/peers)")
@click.option("--systems", default=None, help="peers to run, comma-separated (default: all)")
@click.option(
    "--peer-concurrency", default="1,10,100", show_default=True, help="peers' drain concurrency"
)
@click.option("--peer-rates", default="1000,10000", show_default=True, help="peers' latency rates")
@click.option("--json", "json_path", default=None, help="also write all results as JSON here")
@click.option(
    "--url",
    default=None,
    help="run the drain and latency workloads (and limits, if chosen with -w) on this "
    "PostgreSQL database instead of store files (migrated if need be; their jobs go to queue "
    f"{DATABASE_QUEUE!r}, deleted after, as are the limits set on it)",
)
def bench_command(
    workloads: str,
    scale: float,
    rounds: int,
    peers: bool,
    peers_dir: Optional[str],
    systems: Optional[str],
    peer_concurrency: str,
    peer_rates: str,
    json_path: Optional[str],
    url: Optional[str],
) -> None:
    """Measure Kathikon on this machine (embedded store, fsync per commit), optionally side by
    side with the peers, and print a table of medians. With --url, the drain and latency
    workloads (and limits, when chosen) on a PostgreSQL database instead."""
    from rich.console import Console

    if url is not None and workloads == DEFAULT:
        workloads = ",".join(ON_DATABASE[:2])
    selected = [w.strip() for w in workloads.split(",") if w.strip()]
    unknown = [w for w in selected if w not in WORKLOADS]
    if unknown:
        raise click.UsageError(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    if url is not None and any(w not in ON_DATABASE for w in selected):
        raise click.UsageError(f"--url runs only the {', '.join(ON_DATABASE)} workloads")
    if rounds < 1 or scale <= 0:
        raise click.UsageError("--rounds must be >= 1 and --scale > 0")
    peer_workloads = [p for w in selected for p in PEER_WORKLOADS.get(w, ())] if peers else []
    peers_path = _peers_path(peers_dir) if peer_workloads else None
    console = Console(stderr=True)
    with on_database(url):
        rows = _measure(selected, scale, rounds, console)
    peer_results: list[dict[str, Any]] = []
    if peers_path is not None:
        console.print("running the peers (this starts Redis and PostgreSQL on 127.0.0.1)…")
        peer_results = run_peers(
            peers_path,
            jobs=int(10_000 * scale),
            latency_jobs=int(2_000 * scale),
            scheduled_jobs=int(200 * scale),
            rounds=rounds,
            concurrency=[int(c) for c in peer_concurrency.split(",") if c.strip()],
            rates=[int(r) for r in peer_rates.split(",") if r.strip()],
            systems=[s.strip() for s in systems.split(",")] if systems else None,
            workloads=peer_workloads,
        )
    report = [
        {"kathikon": row, "peers": peer_medians(peer_results, row["workload"])} for row in rows
    ]
    print_report(report, rounds, with_peers=peers_path is not None)
    if json_path:
        payload = {"machine": machine(), "results": report, "peer_runs": peer_results}
        Path(json_path).write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {json_path}", soft_wrap=True)


def _measure(selected: list[str], scale: float, rounds: int, console: Any) -> list[dict[str, Any]]:
    """Run Kathikon's workloads, showing progress on stderr: a bar on a terminal, else (a log,
    a CI job, a pipe) one plain line per workload, so that a long run shows it lives."""
    from rich.progress import Progress

    if not console.is_terminal:
        return run(selected, scale=scale, rounds=rounds, on_step=print_step)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("kathikon", total=rounds * len(selected))
        return run(selected, scale=scale, rounds=rounds, on_step=step_and_advance(progress, task))


def print_step(label: str) -> None:
    """One progress line on stderr: ``kathikon bench: round 1/3: insert``."""
    print(f"kathikon bench: {label}", file=sys.stderr, flush=True)


def step_and_advance(progress: Any, task: Any) -> Any:
    """A callback that moves the bar one step per workload started after the first."""
    first = [True]

    def on_step(label: str) -> None:
        if not first[0]:
            progress.advance(task)
        first[0] = False
        progress.update(task, description=label)

    return on_step
