#!/usr/bin/env bash
# Set up the peer benchmarks: Debian's Redis and PostgreSQL server binaries, and virtualenvs
# with the peers' pinned PyPI packages. Idempotent: re-running only does what is missing.
#
#   bash benches/peers/setup.sh
#
# Environment:
#   PEERS_PYTHON       interpreter for benches/.venv-peers (default: python3, needs >= 3.9)
#   PEERS_OBAN_PYTHON  interpreter >= 3.12 for benches/.venv-peers-oban (default: the first
#                      python3.12+ found on PATH or under pyenv; none found = oban is skipped)
#   PEERS_KATHIKON_WHEEL  a Kathikon wheel to install into benches/.venv-peers for the
#                      kathikon-pg adapter (default: build and install this source checkout,
#                      which needs Rust; PEERS_KATHIKON_WHEEL=none skips it)
#
# No server is started or enabled here: the benchmarks start their own, on 127.0.0.1 only.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCHES="$(dirname "$HERE")"
VENV="$BENCHES/.venv-peers"
OBAN_VENV="$BENCHES/.venv-peers-oban"

say() { printf '[peers setup] %s\n' "$*" >&2; }

# --- 1. server binaries from Debian's packages ---------------------------------------------
have_servers() {
    command -v redis-server >/dev/null 2>&1 &&
        compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null &&
        compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

if have_servers; then
    say "redis-server and postgresql already installed"
else
    if [ "$(id -u)" -ne 0 ]; then
        say "need root to apt-get install redis-server postgresql"; exit 1
    fi
    say "installing redis-server and postgresql with apt-get"
    # Keep the packages' maintainer scripts from starting system services: the benchmarks
    # run their own servers. policy-rc.d is removed again afterwards if we created it.
    made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    trap '[ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d' EXIT
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends redis-server postgresql
    rm -f /usr/sbin/policy-rc.d
    made_policy=""
    have_servers || { say "server binaries still missing after apt-get"; exit 1; }
fi

# --- 2. virtualenvs --------------------------------------------------------------------------
# (re)install only when the pinned files changed since the last successful install
sync_venv() {  # venv python requirements [constraints]
    local venv="$1" py="$2" req="$3" cons="${4:-}"
    local stamp="$venv/.peers-requirements.sha256"
    local want
    want="$(cat "$req" ${cons:+"$cons"} | sha256sum | cut -d' ' -f1)"
    if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say "$(basename "$venv") is up to date"
        return
    fi
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $(basename "$venv") with $("$py" -c 'import sys; print(sys.version.split()[0])')"
        "$py" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -r "$req" ${cons:+-c "$cons"}
    echo "$want" > "$stamp"
    say "$(basename "$venv"): installed $(tr '\n' ' ' < <(grep -v '^#' "$req"))"
}

PEERS_PYTHON="${PEERS_PYTHON:-python3}"
"$PEERS_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
    { say "$PEERS_PYTHON is older than 3.9"; exit 1; }
sync_venv "$VENV" "$PEERS_PYTHON" "$HERE/requirements-peers.txt" "$HERE/constraints-peers.txt"

# Kathikon itself, for kathikon-pg (Kathikon on the same PostgreSQL server as the peers):
# reinstalled when the wheel (or, from source, the checked-out commit) changes.
install_kathikon() {
    local what="${PEERS_KATHIKON_WHEEL:-$(dirname "$BENCHES")}"
    local stamp="$VENV/.peers-kathikon" want
    if [ "$what" = none ]; then say "PEERS_KATHIKON_WHEEL=none: kathikon-pg will be skipped"; return; fi
    if [ -f "$what" ]; then
        want="wheel $(sha256sum "$what" | cut -d' ' -f1)"
    else
        want="source $(git -C "$what" rev-parse HEAD 2>/dev/null || echo unknown)"
    fi
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say "kathikon in $(basename "$VENV") is up to date"
        return
    fi
    "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$what"
    # its dependencies, if any are missing (kathikon itself is satisfied by what was installed)
    "$VENV/bin/python" -m pip install -q kathikon
    echo "$want" > "$stamp"
    say "$(basename "$VENV"): installed kathikon from $what"
}
install_kathikon

# oban needs Python >= 3.12 (and a C compiler: its erlpack dependency is a source package)
oban_python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; }

find_oban_python() {
    local c root roots=()
    if [ -n "${PEERS_OBAN_PYTHON:-}" ]; then echo "$PEERS_OBAN_PYTHON"; return; fi
    for c in python3.12 python3.13 python3.14; do  # (a pyenv shim may exist and not run)
        if command -v "$c" >/dev/null 2>&1 && oban_python_ok "$c"; then command -v "$c"; return; fi
    done
    if command -v pyenv >/dev/null 2>&1; then roots+=("$(pyenv root)"); fi
    roots+=("${PYENV_ROOT:-$HOME/.pyenv}")
    for root in "${roots[@]}"; do
        for c in $(ls -d "$root"/versions/3.1[2-9]* 2>/dev/null | sort -V); do
            if oban_python_ok "$c/bin/python3"; then echo "$c/bin/python3"; return; fi
        done
    done
    return 1
}

if OBAN_PY="$(find_oban_python)" && oban_python_ok "$OBAN_PY"; then
    sync_venv "$OBAN_VENV" "$OBAN_PY" "$HERE/requirements-oban.txt"
else
    say "no Python >= 3.12 found: oban (needs >= 3.12) will be reported as skipped"
fi

say "done. Run: $VENV/bin/python $HERE/run_peers.py --out peers.json"
