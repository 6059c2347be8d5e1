"""``kathikon bench``'s printed report: the table of medians, then the disk's raw rate and a
legend of what each column measures (:mod:`.legend`)."""

from __future__ import annotations

import sys
from typing import Any, Optional

from . import machine
from .legend import RAW_FSYNC, RAW_FSYNC_DIRECT, disk_line, legend, plain

# Row fields with a column of their own; the rest go to "notes".
SHOWN = {"workload", "jobs", "rounds", "durability", "jobs_per_s", "p50_ms", "p95_ms"} | {
    "p99_ms",
    "max_ms",
}


def _fmt(value: Optional[float]) -> str:
    return "—" if value is None else plain(value)


def _peer_ratio(row: dict[str, Any], peer: dict[str, Any]) -> str:
    if row.get("jobs_per_s") and peer.get("jobs_per_s"):
        return f"{row['jobs_per_s'] / peer['jobs_per_s']:.1f}×"
    if row.get("p99_ms") and peer.get("p99_ms"):
        return f"{peer['p99_ms'] / row['p99_ms']:.1f}× lower p99"
    return ""


def print_report(report: list[dict[str, Any]], rounds: int, *, with_peers: bool) -> None:
    """Print ``report`` (entries of Kathikon's row and its peers' medians) on stdout. The
    ``vs peer`` column is there only when the peers ran."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Kathikon {machine()['kathikon']} — medians of {rounds} round(s)")
    columns = ["workload", "system", "jobs", "jobs/s", "p50 ms", "p99 ms"]
    columns += ["vs peer", "notes"] if with_peers else ["notes"]
    for column in columns:
        left = column in ("workload", "system", "notes")
        table.add_column(column, justify="left" if left else "right")
    notes_shown: set[str] = set()
    for entry in report:
        row = entry["kathikon"]
        if row["workload"] in (RAW_FSYNC, RAW_FSYNC_DIRECT):
            continue  # the disk's own rate, said under the table
        extra = {k: v for k, v in row.items() if k not in SHOWN and not k.startswith("jobs_per_s_")}
        notes_shown.update(extra)
        notes = ", ".join(
            f"{k}={plain(v)}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()
        )
        cells = [
            row["workload"],
            f"kathikon ({row['durability']})",
            f"{row['jobs']:,}",
            _fmt(row.get("jobs_per_s")),
            _fmt(row.get("p50_ms")),
            _fmt(row.get("p99_ms")),
        ]
        table.add_row(*cells, *(["", notes] if with_peers else [notes]))
        for system, peer in sorted(entry["peers"].items()):
            table.add_row(
                "",
                f"{system} {peer.get('version') or ''} ({peer.get('durability')})",
                "",
                _fmt(peer.get("jobs_per_s")),
                _fmt(peer.get("p50_ms")),
                _fmt(peer.get("p99_ms")),
                _peer_ratio(row, peer),
                "",
            )
    # A wide table even when piped to a file, so the columns stay readable.
    out = Console(width=None if sys.stdout.isatty() else 160, highlight=False)
    if table.row_count:
        out.print(table)
    disk = disk_line([entry["kathikon"] for entry in report])
    if disk is not None:
        out.print(disk)
    if table.row_count:
        out.print()
        out.print(legend(notes_shown, with_peers))
