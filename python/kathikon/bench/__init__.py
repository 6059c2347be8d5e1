"""``kathikon bench``: Kathikon's throughput and latency, measured on this machine.

Each workload runs ``rounds`` times on a fresh store; the table shows the median and the
spread. See benches/RESULTS.md for recorded runs and the peers compared against.
"""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, Optional

import kathikon

from . import batches, cron, dashboard, limits, listing, procs, unique, workloads
from .workloads import Result

# name → (callable taking the scale factor, default job count)
WORKLOADS: dict[str, Callable[[float], list[Result]]] = {
    "fsync": lambda s: workloads.raw_fsync(),
    "insert": lambda s: [
        workloads.insert_single(int(5_000 * s)),
        workloads.insert_single(int(20_000 * s), threads=4),
        workloads.insert_single(int(20_000 * s), threads=8),
        workloads.insert_batches(int(100_000 * s)),
    ],
    "drain": lambda s: [
        workloads.drain(int(n * s), c, use_async=a)
        for a in (False, True)
        for c, n in ((1, 5_000), (10, 20_000), (100, 20_000))
    ],
    "latency": lambda s: [
        workloads.latency(1_000, int(3_000 * s)),
        workloads.latency(10_000, int(20_000 * s)),
    ],
    "scheduled": lambda s: [workloads.scheduled(int(1_000 * s))],
    "open": lambda s: [workloads.open_recovery(int(1_000_000 * s))],
    "processes": lambda s: [
        procs.insert_clients(int(8_000 * s)),
        procs.drain_processes(int(100_000 * s)),
        procs.short_jobs(int(200_000 * s), processes=0),
        procs.short_jobs(int(200_000 * s), processes=2),
        procs.cpu_bound(int(2_000 * s), processes=0),
        procs.cpu_bound(int(2_000 * s), processes=2),
    ],
    "cron": lambda s: [cron.cron_lateness(max(3.0, 20 * s))],
    "unique": unique.workload,
    "limits": limits.workload,
    "listing": listing.workload,
    "dashboard": dashboard.workload,
    "batches": batches.workload,
}


def machine() -> dict[str, Any]:
    import os

    return {
        "kathikon": kathikon.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def summarise(rounds: list[list[Result]]) -> list[dict[str, Any]]:
    """Median and spread over rounds, per result name."""
    by_name: dict[str, list[Result]] = {}
    for results in rounds:
        for r in results:
            by_name.setdefault(r.workload, []).append(r)
    rows = []
    for name, results in by_name.items():
        row: dict[str, Any] = {"workload": name, "jobs": results[0].jobs, "rounds": len(results)}
        row["durability"] = results[0].durability
        rates = [r.jobs_per_s for r in results if r.jobs_per_s is not None]
        if rates:
            row["jobs_per_s"] = statistics.median(rates)
            row["jobs_per_s_min"] = min(rates)
            row["jobs_per_s_max"] = max(rates)
        for key in ("p50", "p95", "p99", "max"):
            values = [r.latency_ms[key] for r in results if key in r.latency_ms]
            if values:
                row[f"{key}_ms"] = statistics.median(values)
        for key in results[0].extra:
            values = [r.extra[key] for r in results if key in r.extra]
            row[key] = statistics.median(values)
        rows.append(row)
    return rows


def run(
    selected: Sequence[str],
    scale: float = 1.0,
    rounds: int = 3,
    on_step: Optional[Callable[[str], None]] = None,
) -> list[dict[str, Any]]:
    """Run the selected workloads ``rounds`` times, interleaved, and summarise."""
    all_rounds: list[list[Result]] = []
    for i in range(rounds):
        results: list[Result] = []
        for name in selected:
            if on_step:
                on_step(f"round {i + 1}/{rounds}: {name}")
            results.extend(WORKLOADS[name](scale))
        all_rounds.append(results)
    return summarise(all_rounds)


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps({"machine": machine(), "results": rows}, indent=2)


__all__ = ["WORKLOADS", "Result", "asdict", "machine", "run", "summarise", "to_json"]
