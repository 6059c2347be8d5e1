"""Running the peer adapters of ``benches/peers`` (a source checkout only) and lining their
results up with Kathikon's, workload by workload."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

# Kathikon's row name → (peer workload, key that must match, value)
MATCHES: dict[str, tuple[str, Optional[str], Optional[float]]] = {
    "insert": ("insert", None, None),
    "insert_all /1000": ("insert_bulk", None, None),
    "drain sync c=1": ("drain", "concurrency", 1),
    "drain sync c=10": ("drain", "concurrency", 10),
    "drain sync c=100": ("drain", "concurrency", 100),
    "latency @1000/s": ("latency", "rate", 1000),
    "latency @10000/s": ("latency", "rate", 10000),
    "scheduled +1s": ("scheduled", None, None),
}


def find_peers_dir(given: Optional[str]) -> Path:
    candidates = [Path(given)] if given else [Path.cwd() / "benches" / "peers"]
    for path in candidates:
        if (path / "run_peers.py").exists():
            return path.resolve()
    raise FileNotFoundError(
        "benches/peers/run_peers.py not found; run `kathikon bench --peers` from a Kathikon "
        "source checkout (after `bash benches/peers/setup.sh`) or pass --peers-dir"
    )


def run_peers(
    peers_dir: Path,
    *,
    jobs: int,
    latency_jobs: int,
    scheduled_jobs: int,
    rounds: int,
    concurrency: list[int],
    rates: list[int],
    systems: Optional[list[str]] = None,
    workloads: Optional[list[str]] = None,
) -> list[dict[str, Any]]:
    """Run ``run_peers.py`` with the peers' own interpreter; return every result."""
    python = peers_dir.parent / ".venv-peers" / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"{python} is missing; run `bash {peers_dir}/setup.sh` first")
    with tempfile.TemporaryDirectory(prefix="kathikon-peers-") as tmp:
        out = Path(tmp) / "peers.json"
        argv = [
            str(python),
            str(peers_dir / "run_peers.py"),
            "--jobs",
            str(jobs),
            "--latency-jobs",
            str(latency_jobs),
            "--scheduled-jobs",
            str(scheduled_jobs),
            "--rounds",
            str(rounds),
            "--concurrency",
            ",".join(map(str, concurrency)),
            "--rates",
            ",".join(map(str, rates)),
            "--out",
            str(out),
        ]
        if systems:
            argv += ["--systems", ",".join(systems)]
        if workloads:
            argv += ["--workloads", ",".join(workloads)]
        subprocess.run(argv, check=True, stdout=sys.stderr)
        results: list[dict[str, Any]] = json.loads(out.read_text())
    return results


def peer_medians(results: list[dict[str, Any]], row: str) -> dict[str, dict[str, Any]]:
    """For Kathikon's ``row``, each peer system's median over its rounds."""
    if row not in MATCHES:
        return {}
    workload, key, value = MATCHES[row]
    by_system: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if r.get("workload") != workload or "skipped" in r or "error" in r:
            continue
        if key is not None and float(r.get(key) or 0) != value:
            continue
        by_system.setdefault(r["system"], []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for system, rs in by_system.items():
        summary: dict[str, Any] = {
            "rounds": len(rs),
            "version": rs[0].get("version"),
            "durability": rs[0].get("durability"),
        }
        for field in ("jobs_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms"):
            values = [float(r[field]) for r in rs if r.get(field) is not None]
            if values:
                summary[field] = statistics.median(values)
                summary[f"{field}_min"] = min(values)
                summary[f"{field}_max"] = max(values)
        out[system] = summary
    return out
