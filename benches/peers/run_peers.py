"""Run every peer adapter x workload, several interleaved rounds, and collect the JSON results.

    benches/.venv-peers/bin/python benches/peers/run_peers.py --out peers.json
    benches/.venv-peers/bin/python benches/peers/run_peers.py --jobs 2000 --rounds 1 \
        --concurrency 1,10,100 --rates 1000,10000 --systems huey,celery

Each adapter run is its own process (which starts and stops the servers it needs) and is
killed if it is still running after 130 s. Rounds are interleaved: round 1 of everything, then
round 2, and so on. The JSON list of every result goes to --out (or stdout); a table of the
medians goes to stderr. Only the standard library is used here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_PYTHON = HERE.parent / ".venv-peers" / "bin" / "python"
ADAPTERS = {  # system -> adapter script
    "flexiq": "flexiq_sqlite.py",
    "huey": "huey_sqlite.py",
    "rq": "rq_redis.py",
    "celery": "celery_redis.py",
    "dramatiq": "dramatiq_redis.py",
    "procrastinate": "procrastinate_pg.py",
    "oban": "oban_pg.py",
    "kathikon-pg": "kathikon_pg.py",
}
WORKLOADS = ("insert", "insert_bulk", "drain", "latency", "scheduled")
RUN_TIMEOUT_S = 130.0
SERVER_NAMES = ("redis-server", "postgres")


def _csv(kind: type, text: str) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=10000, help="N for insert, insert_bulk, drain")
    p.add_argument("--latency-jobs", type=int, default=2000)
    p.add_argument("--scheduled-jobs", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--concurrency", default="10", help="drain concurrency, comma-separated (e.g. 1,10,100)"
    )
    p.add_argument("--latency-concurrency", type=int, default=10)
    p.add_argument(
        "--rates", default="200,1000", help="latency insert rates (jobs/s), comma-separated"
    )
    p.add_argument("--scheduled-rate", type=float, default=100.0)
    p.add_argument("--systems", default=",".join(ADAPTERS))
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--python", default=str(DEFAULT_PYTHON), help="interpreter for the adapters")
    p.add_argument("--redis-appendfsync", choices=("everysec", "always"), default="everysec")
    p.add_argument("--out", help="write the JSON list of all results here (default: stdout)")
    a = p.parse_args(argv)
    a.systems = _csv(str, a.systems)
    a.workloads = _csv(str, a.workloads)
    a.concurrency = _csv(int, a.concurrency)
    a.rates = _csv(float, a.rates)
    for s in a.systems:
        if s not in ADAPTERS:
            p.error(f"unknown system {s!r}; choose from {', '.join(ADAPTERS)}")
    for w in a.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    if a.rounds < 1:
        p.error("--rounds must be >= 1")
    return a


def plan(a: argparse.Namespace) -> list[dict[str, Any]]:
    """One entry per (system, workload, setting), in the order they run within a round."""
    cases = []
    for system in a.systems:
        for workload in a.workloads:
            if workload in ("insert", "insert_bulk"):
                cases.append({"system": system, "workload": workload, "jobs": a.jobs,
                              "concurrency": 1, "rate": None})  # fmt: skip
            elif workload == "drain":
                for c in a.concurrency:
                    cases.append({"system": system, "workload": workload, "jobs": a.jobs,
                                  "concurrency": c, "rate": None})  # fmt: skip
            elif workload == "latency":
                for r in a.rates:
                    cases.append({"system": system, "workload": workload,
                                  "jobs": a.latency_jobs,
                                  "concurrency": a.latency_concurrency, "rate": r})  # fmt: skip
            else:
                cases.append({"system": system, "workload": workload,
                              "jobs": a.scheduled_jobs, "concurrency": a.latency_concurrency,
                              "rate": a.scheduled_rate})  # fmt: skip
    return cases


def _is_server(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return os.path.basename(cmd) in SERVER_NAMES and state != "Z"


def reap_leftover_servers(pid_dir: Path) -> list[int]:
    """Stop, by the PIDs they recorded, servers an adapter started and did not stop (it was
    killed), and delete their temp dirs: the quick-stop signal, then SIGKILL."""
    pids, dirs = [], []
    for path in pid_dir.glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid_text, tmp = (path.read_text().splitlines() + [""])[:2]
            pid = int(pid_text)
            dirs.append(tmp)
            if _is_server(pid):
                kind = path.name.split("-", 1)[0]
                os.kill(pid, signal.SIGQUIT if kind == "postgres" else signal.SIGTERM)
                pids.append(pid)
        path.unlink(missing_ok=True)
    deadline = time.monotonic() + 5.0
    while any(_is_server(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _is_server(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    for tmp in dirs:
        if tmp and Path(tmp).name.startswith("peer-"):
            shutil.rmtree(tmp, ignore_errors=True)
    return pids


def run_case(a: argparse.Namespace, case: dict[str, Any], round_no: int) -> dict[str, Any]:
    argv = [a.python, str(HERE / ADAPTERS[case["system"]]),
            "--workload", case["workload"], "--jobs", str(case["jobs"]),
            "--concurrency", str(case["concurrency"]),
            "--redis-appendfsync", a.redis_appendfsync]  # fmt: skip
    if case["rate"] is not None:
        argv += ["--rate", str(case["rate"])]
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine skews the figures
    with tempfile.TemporaryDirectory(prefix="peer-pids-") as pid_dir:
        env = dict(os.environ, PEER_PID_DIR=pid_dir)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
            timed_out = False
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            timed_out = True
        leftovers = reap_leftover_servers(Path(pid_dir))
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip()]
    result: dict[str, Any]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        result = {**case, "error": "adapter printed no JSON result"}
    if timed_out:
        result["error"] = f"killed after {RUN_TIMEOUT_S:.0f} s"
    if "error" in result or proc.returncode not in (0, None):
        result.setdefault("error", f"adapter exited with code {proc.returncode}")
        result["stderr_tail"] = err.decode(errors="replace")[-1500:]
    if leftovers:
        result["leftover_servers_killed"] = leftovers
    result["round"] = round_no
    result["loadavg_1m_before"] = load_before
    result["wall_s"] = round(time.monotonic() - t0, 2)
    return result


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r.get("system"), r.get("workload"), r.get("concurrency"), r.get("rate"))


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median (and range) per system x workload x setting over the rounds that produced data."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(_key(r), []).append(r)
    rows = []
    for (system, workload, conc, rate), rs in groups.items():
        row: dict[str, Any] = {"system": system, "workload": workload, "concurrency": conc,
                               "rate": rate, "runs": len(rs)}  # fmt: skip
        skipped = [r["skipped"] for r in rs if "skipped" in r]
        if skipped:
            row["skipped"] = skipped[0]
        for field in ("jobs_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "achieved_rate"):
            vals = [r[field] for r in rs if isinstance(r.get(field), (int, float))]
            if vals:
                row[field] = round(statistics.median(vals), 3)
                row[f"{field}_range"] = [min(vals), max(vals)]
        errors = [r["error"] for r in rs if r.get("error")]
        if errors:
            row["errors"] = len(errors)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'system':<14}{'workload':<12}{'conc':>5}{'rate':>7}{'got':>7}  {'jobs/s':>10}"
        f"  {'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}  note"
    ]

    def num(v: Any, width: int) -> str:
        return f"{v:>{width},.1f}" if isinstance(v, (int, float)) else f"{'-':>{width}}"

    for r in rows:
        note = r.get("skipped", "")
        if r.get("errors"):
            note = f"{r['errors']} run(s) with errors (partial results)"
        rate = f"{r['rate']:.0f}" if r.get("rate") else "-"
        got = f"{r['achieved_rate']:.0f}" if r.get("achieved_rate") else "-"
        lines.append(
            f"{r['system']:<14}{r['workload']:<12}{r['concurrency']:>5}{rate:>7}{got:>7}  "
            f"{num(r.get('jobs_per_s'), 10)}  {num(r.get('p50_ms'), 9)}{num(r.get('p95_ms'), 9)}"
            f"{num(r.get('p99_ms'), 9)}{num(r.get('max_ms'), 9)}  {note[:60]}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if not Path(a.python).exists():
        print(f"{a.python} not found: run benches/peers/setup.sh first", file=sys.stderr)
        return 2
    cases = plan(a)
    results: list[dict[str, Any]] = []
    skipped: set[tuple[Any, ...]] = set()
    total = len(cases) * a.rounds
    done = 0
    for round_no in range(1, a.rounds + 1):
        for case in cases:
            done += 1
            key = (case["system"], case["workload"], case["concurrency"], case["rate"])
            if key in skipped:  # a skip does not change between rounds
                continue
            r = run_case(a, case, round_no)
            results.append(r)
            if "skipped" in r:
                skipped.add(key)
            what = (
                r.get("skipped")
                or r.get("error")
                or (
                    f"{r['jobs_per_s']} jobs/s"
                    if r.get("jobs_per_s") is not None
                    else f"p50 {r.get('p50_ms')} ms, p99 {r.get('p99_ms')} ms"
                )
            )
            print(
                f"[{done}/{total}] round {round_no} {case['system']} {case['workload']} "
                f"c={case['concurrency']} rate={case['rate']}: {str(what)[:120]} "
                f"({r['wall_s']} s)",
                file=sys.stderr,
                flush=True,
            )
    text = json.dumps(results, indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")
    else:
        print(text)
    print("\nmedians over rounds:\n" + table(summarize(results)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
