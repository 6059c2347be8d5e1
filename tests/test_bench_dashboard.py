"""`kathikon bench -w dashboard` renders the dashboard's pages on stores of growing size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_the_dashboard_workload_times_each_page_at_each_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "kathikon", "bench", "-w", "dashboard", "--scale", "0.01"]
        + ["--rounds", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = {
        r["kathikon"]["workload"]: r["kathikon"] for r in json.loads(out.read_text())["results"]
    }
    pages = ("overview", "job list, first page", "job list, a queue's failed jobs")
    # Scale 0.01: 10k and 100k jobs shrink to 1,000 (at least, once), 1M to 10,000.
    assert set(rows) == {f"render {page} @{size:,}" for page in pages for size in (1_000, 10_000)}
    for row in rows.values():
        assert row["p50_ms"] > 0
        # q0 holds a tenth of the jobs, and every 100th of those failed (and was discarded).
        assert row["failed_in_queue"] == row["jobs"] // 10 // 100
