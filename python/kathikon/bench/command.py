"""``kathikon bench``: the command-line front of :mod:`kathikon.bench`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import click

from . import WORKLOADS, machine, run
from .peers import find_peers_dir, peer_medians, run_peers

DEFAULT = "fsync,insert,drain,latency,scheduled,open,processes"
# Row fields with a column of their own; the rest go to "notes".
SHOWN = {"workload", "jobs", "rounds", "durability", "jobs_per_s", "p50_ms", "p95_ms"} | {
    "p99_ms",
    "max_ms",
}


def _peers_path(given: Optional[str]) -> Path:
    """Where the peers' runner is, found before Kathikon's workloads run, so a missing source
    checkout is reported at once rather than after minutes of measuring."""
    try:
        return find_peers_dir(given)
    except FileNotFoundError as e:
        raise click.UsageError(str(e)) from None


def _fmt(value: Optional[float], unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if unit == "jobs/s" else f"{value:.2f}"


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
) -> None:
    """Measure Kathikon on this machine (embedded store, fsync per commit), optionally side by
    side with the peers, and print a table of medians."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    selected = [w.strip() for w in workloads.split(",") if w.strip()]
    unknown = [w for w in selected if w not in WORKLOADS]
    if unknown:
        raise click.UsageError(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    if rounds < 1 or scale <= 0:
        raise click.UsageError("--rounds must be >= 1 and --scale > 0")
    peer_workloads = [p for w in selected for p in PEER_WORKLOADS.get(w, ())] if peers else []
    peers_path = _peers_path(peers_dir) if peer_workloads else None
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("kathikon", total=rounds * len(selected))
        rows = run(selected, scale=scale, rounds=rounds, on_step=step_and_advance(progress, task))
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
    table = Table(title=f"Kathikon {machine()['kathikon']} — medians of {rounds} round(s)")
    for column in ("workload", "system", "jobs", "jobs/s", "p50 ms", "p99 ms", "vs peer", "notes"):
        table.add_column(column, justify="left" if column in ("workload", "system") else "right")
    report: list[dict[str, Any]] = []
    for row in rows:
        extra = {k: v for k, v in row.items() if k not in SHOWN and not k.startswith("jobs_per_s_")}
        notes = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()
        )
        table.add_row(
            row["workload"],
            f"kathikon ({row['durability']})",
            str(row["jobs"]),
            _fmt(row.get("jobs_per_s"), "jobs/s"),
            _fmt(row.get("p50_ms"), "ms"),
            _fmt(row.get("p99_ms"), "ms"),
            "",
            notes,
        )
        entry = {"kathikon": row, "peers": peer_medians(peer_results, row["workload"])}
        for system, peer in sorted(entry["peers"].items()):
            ratio = ""
            if row.get("jobs_per_s") and peer.get("jobs_per_s"):
                ratio = f"{row['jobs_per_s'] / peer['jobs_per_s']:.1f}×"
            elif row.get("p99_ms") and peer.get("p99_ms"):
                ratio = f"{peer['p99_ms'] / row['p99_ms']:.1f}× lower p99"
            table.add_row(
                "",
                f"{system} {peer.get('version') or ''} ({peer.get('durability')})",
                "",
                _fmt(peer.get("jobs_per_s"), "jobs/s"),
                _fmt(peer.get("p50_ms"), "ms"),
                _fmt(peer.get("p99_ms"), "ms"),
                ratio,
                "",
            )
        report.append(entry)
    # A wide table even when piped to a file, so the columns stay readable.
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    if json_path:
        payload = {"machine": machine(), "results": report, "peer_runs": peer_results}
        Path(json_path).write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {json_path}")


def step_and_advance(progress: Any, task: Any) -> Any:
    """A callback that moves the bar one step per workload started after the first."""
    first = [True]

    def on_step(label: str) -> None:
        if not first[0]:
            progress.advance(task)
        first[0] = False
        progress.update(task, description=label)

    return on_step
