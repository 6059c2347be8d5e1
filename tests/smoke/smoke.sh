#!/usr/bin/env bash
# Install one built wheel into a fresh virtualenv of every CPython 3.9–3.13 this machine has and
# run an import-and-run smoke test on each (smoke_job.py and examples/quickstart.py).
#
#   tests/smoke/smoke.sh dist/kathikon-…-manylinux….whl      (make smoke does this)
#
# An interpreter is looked for as python3.X on PATH, then under $PYENV_ROOT/versions (default
# ~/.pyenv/versions); a version that is missing, or cannot make a virtualenv, is reported as
# skipped with the reason. Fails if any version found fails, or if none is found.
set -euo pipefail

wheel=${1:?usage: smoke.sh WHEEL}
wheel=$(realpath "$wheel")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venvs=${SMOKE_VENVS:-$root/.venv-smoke}
versions=${SMOKE_PYTHONS:-3.9 3.10 3.11 3.12 3.13}
pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}

# The interpreter for version $1, or nothing. pyenv's shims stand on PATH for versions that are
# not selected and fail when run, so a candidate counts only if it runs and is that version.
find_python() {
    local want=$1 candidate
    for candidate in "$(command -v "python$want" || true)" \
        $(ls -d "$pyenv_root"/versions/"$want".*/bin/"python$want" 2>/dev/null | sort -V -r); do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        if [ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$want" ]; then
            echo "$candidate"
            return
        fi
    done
}

passed=() failed=() skipped=()
for v in $versions; do
    py=$(find_python "$v")
    if [ -z "$py" ]; then
        echo "smoke: CPython $v skipped: no python$v on PATH or under $pyenv_root/versions"
        skipped+=("$v")
        continue
    fi
    venv="$venvs/$v"
    rm -rf "$venv"
    if ! "$py" -m venv "$venv" >/dev/null 2>&1; then
        echo "smoke: CPython $v skipped: $py cannot create a virtualenv (no venv/ensurepip module)"
        skipped+=("$v")
        continue
    fi
    echo "smoke: CPython $v ($py)"
    work=$(mktemp -d)
    # From an empty directory, so only the installed package can be imported.
    if "$venv/bin/python" -m pip install -q --no-compile --disable-pip-version-check "$wheel" &&
        (cd "$work" && "$venv/bin/python" "$here/smoke_job.py" &&
            "$venv/bin/python" "$root/examples/quickstart.py" >/dev/null &&
            "$venv/bin/kathikon" --help >/dev/null); then
        passed+=("$v")
    else
        echo "smoke: CPython $v FAILED"
        failed+=("$v")
    fi
    rm -rf "$work" "$venv"
done

echo "smoke: passed: ${passed[*]:-none}; failed: ${failed[*]:-none}; skipped: ${skipped[*]:-none}"
[ ${#failed[@]} -eq 0 ] && [ ${#passed[@]} -gt 0 ]
