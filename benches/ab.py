"""Compare two builds of Kathikon in the same run: `kathikon bench` from each, alternated.

    python benches/ab.py OLD_VENV NEW_VENV [--pairs 6] [--workloads insert,drain,latency]
                         [--old-url URL --new-url URL]

Each pair runs the old build's `kathikon bench` and then the new one's (the order flips every
pair), one round each, and the table gives each figure's median over the pairs for both builds
and the median of the pair-by-pair ratios new / old. The disk's and CPU's speed swing a lot
between minutes on a shared machine; a ratio taken pair by pair, within the same minute, is the
figure to trust. With ``--old-url``/``--new-url``, each build runs its workloads on a
PostgreSQL database of its own (builds of different schema versions cannot share one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

#: Figures where lower is better (latencies); every other figure is a rate.
LOWER_IS_BETTER = ("p50_ms", "p99_ms")


def run_bench(venv: Path, workloads: str, scale: float, url: str | None) -> dict[str, float]:
    """One `kathikon bench` run of the build in `venv` (on the database at `url`, if given):
    {"workload figure": value}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        subprocess.run(
            [
                str(venv / "bin" / "kathikon"),
                "bench",
                "-w",
                workloads,
                "--scale",
                str(scale),
                "--rounds",
                "1",
                "--json",
                str(out),
                *(["--url", url] if url else []),
            ],
            check=True,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
        )
        results = json.loads(out.read_text())["results"]
    figures: dict[str, float] = {}
    for row in results:
        k = row["kathikon"]
        if "jobs_per_s" in k:
            figures[f"{k['workload']} jobs/s"] = k["jobs_per_s"]
        for key in LOWER_IS_BETTER:
            if key in k:
                figures[f"{k['workload']} {key.replace('_ms', '')} ms"] = k[key]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="virtualenv with the old build installed")
    parser.add_argument("new", type=Path, help="virtualenv with the new build installed")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--workloads", default="insert,drain,latency")
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--raw", type=Path, help="also write every run's figures here (JSON)")
    parser.add_argument("--old-url", help="the old build's PostgreSQL database (bench --url)")
    parser.add_argument("--new-url", help="the new build's PostgreSQL database (bench --url)")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for pair in range(args.pairs):
        order = ("old", "new") if pair % 2 == 0 else ("new", "old")
        for which in order:
            venv, url = (args.old, args.old_url) if which == "old" else (args.new, args.new_url)
            runs[which].append(run_bench(venv, args.workloads, args.scale, url))
        print(f"pair {pair + 1}/{args.pairs} done", file=sys.stderr)
    if args.raw is not None:
        args.raw.write_text(json.dumps(runs, indent=1))
    print("| figure | old (median) | new (median) | new / old, pair by pair: median [min–max] |")
    print("|---|---|---|---|")
    for name in runs["old"][0]:
        old = [r[name] for r in runs["old"]]
        new = [r[name] for r in runs["new"]]
        ratios = [n / o for n, o in zip(new, old) if o]
        ratio = statistics.median(ratios)
        fmt = "{:,.2f}" if name.endswith(" ms") else "{:,.0f}"
        print(
            f"| {name} | {fmt.format(statistics.median(old))} | "
            f"{fmt.format(statistics.median(new))} | "
            f"{ratio:.3f} [{min(ratios):.2f}–{max(ratios):.2f}] |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
