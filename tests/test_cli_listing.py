"""``kathikon jobs`` with the new filters, order and cursor, and the bulk forms of
``cancel``/``retry`` and ``kathikon delete``, run for real as subprocesses on a store file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kathikon


def register(app: kathikon.Kathikon, *names: str) -> None:
    """Workers of these names (the tests insert jobs, nothing runs them)."""
    for name in names:
        app.worker(name=name)(lambda job: None)


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "KATHIKON_DEBUG")}
    return subprocess.run(
        [sys.executable, "-m", "kathikon.cli", *args, "--path", str(root / "jobs.redb")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def as_json(root: Path, *args: str) -> Any:
    result = cli(root, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def fill(root: Path) -> list[int]:
    app = kathikon.Kathikon(root / "jobs.redb", queues={"default": 1, "emails": 1})
    register(app, "w")
    try:
        jobs = [
            app.insert(
                "w",
                {"user": {"id": i % 3}},
                queue="emails" if i % 2 else "default",
                tags=["red"] if i < 4 else [],
            )
            for i in range(10)
        ]
        app.cancel(jobs[0])
        return [j.id for j in jobs]
    finally:
        app.close(timeout=5)


def test_jobs_filters_order_and_cursor(tmp_path: Path) -> None:
    ids = fill(tmp_path)
    listed = as_json(tmp_path, "jobs", "--state", "available", "--state", "cancelled")
    assert [j["id"] for j in listed] == ids
    assert [j["id"] for j in as_json(tmp_path, "jobs", "--tag", "red", "--queue", "default")] == [
        ids[0],
        ids[2],
    ]
    by_args = as_json(tmp_path, "jobs", "--args", '{"user": {"id": 2}}')
    assert [j["id"] for j in by_args] == [ids[2], ids[5], ids[8]]
    assert as_json(tmp_path, "jobs", "--finished-after", "2000-01-01T00:00") != []
    # Newest first, two per page, following the printed cursor.
    seen: list[int] = []
    cursor: list[str] = []
    while True:
        result = cli(tmp_path, "jobs", "--order", "desc", "--limit", "3", "--json", *cursor)
        assert result.returncode == 0, result.stderr
        seen += [j["id"] for j in json.loads(result.stdout)]
        if "--cursor" not in result.stderr:
            break
        cursor = ["--cursor", result.stderr.split("--cursor ")[1].split()[0]]
    assert seen == ids[::-1]
    table = cli(tmp_path, "jobs", "--limit", "4")
    assert "next page: --cursor" in table.stdout and "--after" in table.stdout


def test_bad_filter_values_are_one_line_errors_naming_them(tmp_path: Path) -> None:
    fill(tmp_path)
    for args, named in (
        (("jobs", "--args", "{nope"), "{nope"),
        (("jobs", "--inserted-before", "tuesday"), "tuesday"),
        (("jobs", "--cursor", "zzz"), "zzz"),
        (("cancel",), "--all"),
        (("delete", "--all", "--queue", "x"), "--all"),
    ):
        result = cli(tmp_path, *args)
        assert result.returncode != 0, args
        assert named in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_bulk_cancel_retry_and_delete_by_filters(tmp_path: Path) -> None:
    ids = fill(tmp_path)
    cancelled = as_json(tmp_path, "cancel", "--queue", "emails")
    assert cancelled["count"] == 5 and cancelled["action"] == "cancel"
    assert cli(tmp_path, "delete", "--queue", "default").stdout.strip() == "deleted 1 job"
    retried = cli(tmp_path, "retry", "--args", '{"user": {"id": 1}}', "--queue", "emails")
    assert retried.stdout.strip() == "retried 2 jobs"  # ids[1] and ids[7]
    assert as_json(tmp_path, "delete", "--all")["count"] == 3
    forced = as_json(tmp_path, "delete", "--all", "--force")
    assert forced["count"] == len(ids) - 1 - 3
    assert as_json(tmp_path, "jobs") == []
