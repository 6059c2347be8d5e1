"""`kathikon bench` runs its workloads for real and reports what it measured."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kathikon
from kathikon.bench import workloads
from kathikon.bench.legend import plain
from kathikon.bench.peers import peer_medians


def run_bench(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `kathikon bench ARGS` in `tmp_path`."""
    return subprocess.run(
        [sys.executable, "-m", "kathikon", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


def bench(tmp_path: Path, *args: str) -> tuple[str, list[dict[str, Any]]]:
    """Run `kathikon bench ARGS --json F` in `tmp_path`; its printed table and the Kathikon
    rows of F."""
    out = tmp_path / "bench.json"
    result = run_bench(tmp_path, *args, "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    return result.stdout, [entry["kathikon"] for entry in report["results"]]


def test_bench_command_measures_and_writes_json(tmp_path: Path) -> None:
    args = ("-w", "fsync,insert,drain,scheduled", "--scale", "0.02", "--rounds", "2")
    table, results = bench(tmp_path, *args)
    assert "drain sync c=10" in table
    rows = {row["workload"]: row for row in results}
    assert {"raw fsync (4 KiB)", "insert", "insert_all /1000", "drain sync c=1"} <= set(rows)
    # The direct rate is shown wherever the file system takes O_DIRECT, as the log then uses it.
    direct_refused = workloads.raw_fsync_rate(0.01, direct=True) is None
    assert ("raw fsync (4 KiB, O_DIRECT)" in rows) != direct_refused
    for name in ("insert", "insert_all /1000", "drain sync c=10", "drain async c=100"):
        row = rows[name]
        assert row["rounds"] == 2
        assert row["durability"] == "fsync"
        assert row["jobs_per_s_min"] <= row["jobs_per_s"] <= row["jobs_per_s_max"]
        assert row["jobs_per_s"] > 0
    scheduled = rows["scheduled +1s"]
    assert scheduled["missing"] == 0
    assert scheduled["early"] == 0  # a scheduled job never starts before its time
    assert 0 <= scheduled["p50_ms"] <= scheduled["p99_ms"] <= scheduled["max_ms"]


def test_the_table_explains_itself_and_progress_is_plain_lines_off_a_terminal(
    tmp_path: Path,
) -> None:
    out = tmp_path / "bench.json"
    args = ("-w", "fsync,latency", "--scale", "0.02", "--rounds", "2", "--json", str(out))
    result = run_bench(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    table = result.stdout
    # The disk's own rate is a line of its own, not a Kathikon row of 0 jobs.
    assert "raw fsync" not in table and "kathikon (fsync)" in table
    assert re.search(r"^disk: [\d,]+ fsyncs/s raw", table, re.M), table
    header = next(line for line in table.splitlines() if "workload" in line)
    assert "jobs/s" in header and "vs peer" not in header  # no peers asked for
    assert not re.search(r"\d[eE][+-]?\d", table), table  # e.g. achieved_rate=9.98e+03
    for explained in ("jobs/s", "p50 ms, p99 ms", "achieved_rate", "missing"):
        assert re.search(rf"^{re.escape(explained)}\s{{2,}}\w", table, re.M), explained
    # stderr is a pipe: one plain line per workload and round.
    assert result.stderr.splitlines() == [
        f"kathikon bench: round {r}/2: {w}" for r in (1, 2) for w in ("fsync", "latency")
    ] + [f"wrote {out}"]
    # The JSON keeps its keys, the disk's rows included (benches/ab.py reads them).
    rows = {
        e["kathikon"]["workload"]: e["kathikon"] for e in json.loads(out.read_text())["results"]
    }
    assert rows["raw fsync (4 KiB)"]["jobs"] == 0 and rows["raw fsync (4 KiB)"]["jobs_per_s"] > 0
    assert {"p50_ms", "p99_ms", "achieved_rate"} <= set(rows["latency @10000/s"])


def test_numbers_are_never_in_scientific_notation() -> None:
    assert [plain(v) for v in (0.000123, 0.0456, 1.234, 98.76, 999.4, 12_345.6, 2.5e7)] == [
        "0.000123",
        "0.0456",
        "1.23",
        "98.8",
        "999",
        "12,346",
        "25,000,000",
    ]
    assert plain(0) == "0" and plain(-1500.0) == "-1,500"


def test_the_open_workload_measures_memory_in_a_fresh_process(tmp_path: Path) -> None:
    _, (row,) = bench(tmp_path, "-w", "open", "--scale", "0.02", "--rounds", "1")
    assert row["workload"] == "open" and row["jobs"] == 20_000
    assert 0 < row["open_seconds"] < 60
    assert 50 < row["file_bytes_per_job"] < 2_000
    # The claim queues alone hold ~28 bytes a queued job. Measured in the process that had
    # just written the store, its freed memory was reused and this came out at 1-6 bytes.
    assert row["rss_bytes_per_queued_job"] >= 20


def test_the_listing_workload_times_the_newest_jobs_of_a_queue_in_a_state(
    tmp_path: Path,
) -> None:
    _, results = bench(tmp_path, "-w", "listing", "--scale", "0.01", "--rounds", "1")
    rows = {row["workload"]: row for row in results}
    assert set(rows) == {
        "newest 50 of a queue, rare state",
        "newest 50 of a queue, common state",
        "newest 50 of a queue, empty state",
        "newest 50 discarded of a queue",
        "newest 50 retryable of a queue",
        "count of a queue in a state",
    }
    assert all(row["jobs"] == 10_000 and row["p50_ms"] > 0 for row in rows.values())
    assert rows["newest 50 of a queue, rare state"]["in_state"] == 10
    assert rows["newest 50 discarded of a queue"]["in_state"] == 10
    assert rows["newest 50 retryable of a queue"]["in_state"] == 10


def test_the_processes_workload_runs_clients_and_worker_processes(tmp_path: Path) -> None:
    _, results = bench(tmp_path, "-w", "processes", "--scale", "0.05", "--rounds", "1")
    rows = {row["workload"]: row for row in results}
    assert set(rows) == {
        "insert x4 client processes",
        "drain sync via 2 worker processes",
        "short jobs, in-process",
        "short jobs, 2 worker processes",
        "cpu 1 ms jobs, in-process",
        "cpu 1 ms jobs, 2 worker processes",
    }
    assert rows["insert x4 client processes"]["jobs"] == 400
    assert all(row["jobs_per_s"] > 0 for row in rows.values())
    # CPU per job, read from /proc: the owner's in both, the worker processes' with them.
    alone, served = rows["short jobs, in-process"], rows["short jobs, 2 worker processes"]
    assert alone["owner_cpu_us"] > 0 and "workers_cpu_us" not in alone
    assert served["owner_cpu_us"] > 0 and served["workers_cpu_us"] > 0


def test_peer_results_are_matched_per_workload_and_setting() -> None:
    runs = [
        {"system": "huey", "workload": "drain", "concurrency": 10, "jobs_per_s": 100.0},
        {"system": "huey", "workload": "drain", "concurrency": 10, "jobs_per_s": 300.0},
        {"system": "huey", "workload": "drain", "concurrency": 10, "jobs_per_s": 200.0},
        {"system": "huey", "workload": "drain", "concurrency": 1, "jobs_per_s": 9.0},
        {"system": "rq", "workload": "drain", "concurrency": 10, "error": "timed out"},
        {"system": "rq", "workload": "insert_bulk", "skipped": "no bulk API"},
    ]
    medians = peer_medians(runs, "drain sync c=10")
    assert set(medians) == {"huey"}
    assert medians["huey"]["jobs_per_s"] == 200.0
    assert (medians["huey"]["jobs_per_s_min"], medians["huey"]["jobs_per_s_max"]) == (100.0, 300.0)
    assert peer_medians(runs, "drain sync c=1")["huey"]["jobs_per_s"] == 9.0
    assert peer_medians(runs, "insert_all /1000") == {}


def test_peers_without_a_checkout_fail_at_once_with_the_fix(tmp_path: Path) -> None:
    """Outside a source checkout `--peers` is a usage error, reported before Kathikon's own
    workloads spend their minutes, and it says what to do."""
    result = run_bench(tmp_path, "--peers", "-w", "drain", "--scale", "1", timeout=60)
    assert result.returncode == 2, result.stderr
    assert "run_peers.py not found" in result.stderr
    assert "--peers-dir" in result.stderr
    assert "a bug in kathikon" not in result.stderr


def test_the_limits_workload_measures_a_rate_limit_and_the_limiters_cost(tmp_path: Path) -> None:
    _, results = bench(tmp_path, "-w", "limits", "--scale", "0.05", "--rounds", "1")
    rows = {row["workload"]: row for row in results}
    assert set(rows) == {
        "rate limit 200/s",
        "drain limits=none",
        "drain limits=global",
        "drain limits=partitioned",
    }
    rate = rows["rate limit 200/s"]
    assert rate["busiest_second"] == 200, "never more claims in a second than allowed"
    assert 0.95 <= rate["rate_vs_allowed"] <= 1.0
    assert all(rows[f"drain limits={k}"]["jobs"] == 2_500 for k in ("none", "global"))


def test_the_limits_workload_runs_on_postgresql_and_leaves_no_limit(
    tmp_path: Path, pg_url: str
) -> None:
    _, results = bench(
        tmp_path, "-w", "limits", "--url", pg_url, "--scale", "0.05", "--rounds", "1"
    )
    rows = {row["workload"]: row for row in results}
    assert {row["durability"] for row in results} == {"postgresql"}, "labelled as on the database"
    assert rows["rate limit 200/s"]["busiest_second"] == 200, rows
    assert all(rows[f"drain limits={k}"]["jobs"] == 2_500 for k in ("none", "global"))
    app = kathikon.Kathikon(url=pg_url)
    check = app.check_queue(workloads.DATABASE_QUEUE)
    assert check.global_limit is None and check.rate_limit is None, "the bench's limits removed"
    assert check.available == 0 and check.executing == 0, "and its jobs"
    app.close()


def test_the_batches_workload_sets_batches_beside_plain_jobs(tmp_path: Path) -> None:
    _, results = bench(tmp_path, "-w", "batches", "--scale", "0.1", "--rounds", "1")
    rows = {r["workload"]: r for r in results}
    for kind in ("plain", "batch"):
        assert rows[f"insert /1000 {kind}"]["jobs"] == 1_000
        assert rows[f"drain c=10 {kind}"]["jobs_per_s"] > 0
    callback = rows["callback after last member (10 per batch)"]
    assert callback["jobs"] == 20
    assert 0 < callback["p50_ms"] <= callback["p99_ms"]
