"""Draw drain throughput per system from a `kathikon bench --peers --json` report.

    python benches/chart.py benches/results.json benches/drain.png

Needs matplotlib (``make bench-peers`` installs it into .venv-tools).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(report_path: str, png_path: str) -> None:
    report = json.loads(Path(report_path).read_text())
    groups = [e for e in report["results"] if e["kathikon"]["workload"].startswith("drain sync")]
    systems = sorted({s for e in groups for s in e["peers"]})
    labels = [e["kathikon"]["workload"].removeprefix("drain sync ") for e in groups]
    # Kathikon's async drains beside its sync ones, at the same concurrency.
    by_name = {e["kathikon"]["workload"]: e["kathikon"] for e in report["results"]}
    async_of = {
        e["kathikon"]["workload"]: by_name.get(e["kathikon"]["workload"].replace("sync", "async"))
        for e in groups
    }
    series = ["kathikon", "kathikon async", *systems]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(10, 5))
    for i, system in enumerate(series):
        if system == "kathikon":
            values = [e["kathikon"].get("jobs_per_s", 0) for e in groups]
        elif system == "kathikon async":
            values = [
                (async_of[e["kathikon"]["workload"]] or {}).get("jobs_per_s", 0) for e in groups
            ]
        else:
            values = [e["peers"].get(system, {}).get("jobs_per_s", 0) for e in groups]
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=system)
    ax.set_yscale("log")
    ax.set_ylabel("no-op jobs drained per second (log scale)")
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], labels)
    ax.set_title(
        f"Drain throughput, {report['machine']['cpus']} CPUs, medians of the same run "
        "(Kathikon: fsync per commit; peers: sync workers)"
    )
    # Below the plot: every part of the plot area has a bar rising through it.
    ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
