"""What ``kathikon bench``'s table shows, said under it: the numbers' format, the disk's raw
rate, and a legend of each column and note that the run's rows use."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # rich is imported where the legend is drawn
    from rich.table import Table

#: Rows measuring the disk itself (``workloads.raw_fsync``), not Kathikon: the table leaves
#: them out and says their rate in a line of its own.
RAW_FSYNC = "raw fsync (4 KiB)"
RAW_FSYNC_DIRECT = "raw fsync (4 KiB, O_DIRECT)"

COLUMNS = {
    "system": "kathikon (fsync) is Kathikon at its default durability: an fsync per commit; "
    "kathikon (postgresql) is Kathikon on the database of --url, a commit per call.",
    "jobs/s": "jobs per second, the median over the rounds (min and max in --json). insert: "
    "single inserts, each durable before it returns; insert_all: batches in one commit; "
    "drain: jobs stored first, then from starting the workers until the last completed.",
    "p50 ms, p99 ms": "the median and the 99th percentile of a wait, in milliseconds. "
    "latency @N/s: from the insert call until the job starts in a worker, inserting N jobs a "
    "second; scheduled: how late a job starts after the time it was scheduled for.",
}
PEER_COLUMN = (
    "vs peer",
    "Kathikon's jobs/s divided by the peer's (above 1: Kathikon did more), or the peer's p99 "
    "divided by Kathikon's.",
)
NOTES = {
    "achieved_rate": "the insert rate reached, in jobs/s",
    "inserting_threads": "threads inserting, to reach that rate",
    "missing": "jobs that had not started 30 s after the last insert",
    "early": "jobs started before their scheduled time",
    "open_seconds": "opening the store and being ready to run its jobs, in a fresh process",
    "file_bytes_per_job": "the store file's size per job",
    "rss_bytes_per_queued_job": "memory the open added per job waiting to run",
    "start_p99_ms": "cron lateness: the 99th percentile, in ms, from the slot until its job "
    "started in a worker (the p50/p99 columns: until the owner inserted it)",
    "started": "cron jobs started in a worker",
    "owner_cpu_us": "CPU time (user + system) the store's owner process used per job completed, "
    "in µs, between 10 % and 90 % of the jobs done (with worker processes: serving their "
    "claims and acks)",
    "workers_cpu_us": "the worker processes' CPU time per job completed, together, in µs",
}


def plain(value: float) -> str:
    """A number as people write it, never in scientific notation: thousands grouped and no
    decimals from 1000 up, three significant digits below."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def disk_line(rows: list[dict[str, Any]]) -> Optional[str]:
    """The disk's raw fsync rate, from the rows of ``workloads.raw_fsync``, if it ran."""
    rates: dict[str, float] = {
        row["workload"]: row["jobs_per_s"] for row in rows if row.get("jobs_per_s") is not None
    }
    if RAW_FSYNC not in rates:
        return None
    line = (
        f"disk: {plain(rates[RAW_FSYNC])} fsyncs/s raw (a 4 KiB write and an fdatasync, "
        "through the page cache)"
    )
    if RAW_FSYNC_DIRECT in rates:
        line += f", {plain(rates[RAW_FSYNC_DIRECT])} with O_DIRECT (as the write-ahead log writes)"
    return line + ": the ceiling for single inserts from one thread."


def legend(notes: set[str], peers: bool) -> Table:
    """What each column, and each of the ``notes`` shown, measures: a two-column grid."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(style="dim")
    for column, text in COLUMNS.items():
        grid.add_row(column, text)
    if peers:
        grid.add_row(*PEER_COLUMN)
    for key, text in NOTES.items():
        if key in notes:
            grid.add_row(key, text + ".")
    return grid
