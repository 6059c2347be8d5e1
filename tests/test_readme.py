"""The README's quick start runs as written and prints what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_start_code() -> str:
    text = README.read_text()
    section = text[text.index("## Quick start") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block in the README's quick start"
    return match.group(1)


def test_quick_start_runs_as_written(tmp_path: Path) -> None:
    code = quick_start_code()
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert "sending to a@b.c" in out
    assert "fetching https://example.com" in out
    assert sorted(line for line in out if line.startswith("sending to")) == [
        "sending to a@b.c",
        "sending to p@q.r",
        "sending to s@t.u",
    ]
    # The report is scheduled a minute ahead, so drain does not run it.
    assert not any(line.startswith("report") for line in out)
    assert "{'completed': 4}" in out
    assert out[-1] == "completed"
    assert (tmp_path / "jobs.redb").exists()
