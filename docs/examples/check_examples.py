"""Run every example the documentation shows, against the installed kathikon.

The guides include their code from the files in this folder (pymdownx.snippets), so what a
page shows is what runs here. Each ``*.py`` runs as a script, and each ``*.sh`` with
``bash -euxo pipefail``, in a fresh temporary directory, with this folder on ``PYTHONPATH`` (for
``myapp``) and the interpreter's ``bin`` first on ``PATH`` (for the ``kathikon`` command). An
example fails by exiting non-zero (the examples assert what the pages say about them) or, when
a ``NAME.out`` file sits beside it, by printing anything else on stdout than that file holds
(pages include these files as the output they show).

Usage: ``python docs/examples/check_examples.py [NAME ...]`` (default: every example). Run it
from anywhere but the source tree's ``python/`` folder, so the installed package is imported.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT = 60


def examples(names: list[str]) -> list[Path]:
    found = sorted(
        p for p in HERE.iterdir() if p.suffix in (".py", ".sh") and p.name != Path(__file__).name
    )
    if names:
        found = [p for p in found if p.name in names or p.stem in names]
    return found


def run(example: Path) -> tuple[bool, str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["EXAMPLES"] = str(HERE)
    env.pop("COLUMNS", None)
    command = (
        [sys.executable, str(example)]
        if example.suffix == ".py"
        else ["bash", "-euxo", "pipefail", str(example)]
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kathikon-example-") as cwd:
        try:
            result = subprocess.run(
                command,
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return False, f"timed out after {TIMEOUT} s", time.monotonic() - started
    output = result.stdout + result.stderr
    ok = result.returncode == 0
    expected = example.with_suffix(".out")
    if ok and expected.exists() and result.stdout != expected.read_text():
        ok = False
        output = "".join(
            difflib.unified_diff(
                expected.read_text().splitlines(keepends=True),
                result.stdout.splitlines(keepends=True),
                str(expected.name),
                "stdout",
            )
        )
    return ok, output, time.monotonic() - started


def main() -> int:
    todo = examples(sys.argv[1:])
    if not todo:
        print("no examples found", file=sys.stderr)
        return 1
    failed = 0
    for example in todo:
        ok, output, seconds = run(example)
        print(f"{'ok  ' if ok else 'FAIL'} {example.name} ({seconds:.1f} s)")
        if not ok:
            failed += 1
            print("    " + output.rstrip().replace("\n", "\n    "))
    print(f"{len(todo) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
