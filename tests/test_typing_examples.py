"""The typing examples in tests/typing/ run as written (``make typecheck`` type-checks them)."""

from __future__ import annotations

import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent / "typing"
# mistakes.py is only type-checked: each of its lines is wrong on purpose.
RUNNABLE = sorted(p.name for p in EXAMPLES.glob("*.py") if p.name != "mistakes.py")


def test_examples_are_found() -> None:
    assert {"workers.py", "inserting.py", "telemetry_usage.py", "testing_usage.py"} <= set(RUNNABLE)


@pytest.mark.skipif(
    sys.version_info < (3, 11) and find_spec("typing_extensions") is None,
    reason="before 3.11 the examples take assert_type from typing_extensions, not installed",
)
@pytest.mark.parametrize("name", RUNNABLE)
def test_example_runs(name: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
