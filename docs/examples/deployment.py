"""The deployment examples (docs/guides/deployment.md): deploy/myapp-worker.service and
deploy/Dockerfile. Docker cannot run here, so this runs the command each file starts, with the
environment each sets, outside Docker and systemd: the worker must start, run a job, and exit 0
on SIGTERM within its grace period, which must fit in the stop timeout each file documents.
``systemd-analyze verify`` checks the unit too, where it is installed."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(os.environ["EXAMPLES"])
DEPLOY = HERE / "deploy"
BIN = Path(sys.executable).parent


def run_worker(argv: list[str], env: dict[str, str], workdir: Path) -> None:
    """Insert a job, start the worker, wait for the job, SIGTERM it, expect exit 0."""
    store = env["MYAPP_STORE"]
    Path(store).parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env}
    full_env.pop("PYTHONPATH", None)  # myapp is found in the working directory, as deployed
    insert = (
        "from myapp.jobs import app, send_email; send_email.insert({'to': 'a@b.c'}); app.close()"
    )
    subprocess.run([sys.executable, "-c", insert], cwd=workdir, env=full_env, check=True)
    proc = subprocess.Popen(
        argv, cwd=workdir, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 20
    line = ""
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            break
    assert line.strip() == "sent to a@b.c", line
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, (proc.returncode, err)
    assert "worker started" in err and f"store={store}" in err, err
    assert "stopped: every running job finished" in err, err


def grace(argv: list[str]) -> float:
    return float(argv[argv.index("--grace") + 1])


# -- systemd -------------------------------------------------------------------------------
unit = (DEPLOY / "myapp-worker.service").read_text()
settings: dict[str, list[str]] = {}
for line in unit.splitlines():
    m = re.match(r"^(\w+)=(.*)$", line)
    if m:
        settings.setdefault(m.group(1), []).append(m.group(2))
exec_start = settings["ExecStart"][0].split()
assert exec_start[0] == "/srv/myapp/.venv/bin/kathikon" and exec_start[1] == "worker"
assert float(settings["TimeoutStopSec"][0]) > grace(exec_start) + 5
assert settings["KillSignal"] == ["SIGTERM"]
unit_env = {k: v for k, _, v in (e.partition("=") for e in settings["Environment"])}
state_dir = Path(unit_env["MYAPP_STORE"]).parent
assert state_dir == Path("/var/lib") / settings["StateDirectory"][0]

with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp)
    srv = root / "srv" / "myapp"
    shutil.copytree(HERE / "myapp", srv / "myapp")
    env = {k: v.replace("/var/lib", str(root / "var" / "lib")) for k, v in unit_env.items()}
    run_worker([str(BIN / "kathikon"), *exec_start[1:]], env, srv)
    analyze = shutil.which("systemd-analyze")
    if analyze:
        local = root / "myapp-worker.service"
        local.write_text(
            unit.replace("/srv/myapp/.venv/bin/kathikon", str(BIN / "kathikon"))
            .replace("WorkingDirectory=/srv/myapp", f"WorkingDirectory={srv}")
            .replace("User=myapp", "User=root")
            .replace("Group=myapp", "Group=root")
        )
        result = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True)
        assert result.returncode == 0 and not result.stderr.strip(), result.stderr

# -- Docker --------------------------------------------------------------------------------
dockerfile = (DEPLOY / "Dockerfile").read_text()
cmd_line = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
assert cmd_line
cmd: list[str] = json.loads(cmd_line.group(1))
assert cmd[:2] == ["kathikon", "worker"]
env_line = re.search(r"^ENV (.*)$", dockerfile, re.M)
assert env_line
docker_env = {k: v for k, _, v in (pair.partition("=") for pair in env_line.group(1).split())}
assert "--time 30" in dockerfile and "stop_grace_period: 30s" in dockerfile
assert grace(cmd) < 30
assert re.search(r"^WORKDIR /srv/myapp$", dockerfile, re.M)
assert re.search(r"^COPY myapp/ \./myapp/$", dockerfile, re.M)
with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp)
    shutil.copytree(HERE / "myapp", root / "srv" / "myapp" / "myapp")
    env = {k: v.replace("/data", str(root / "data")) for k, v in docker_env.items()}
    run_worker([str(BIN / cmd[0]), *cmd[1:]], env, root / "srv" / "myapp")

# -- FastAPI and Django ------------------------------------------------------------------------
# They need FastAPI and Django, which the checks do not install: they must parse, and import
# the app from the module the worker runs.
for name in ("fastapi_web.py", "django_jobs.py", "django_views.py"):
    source = (DEPLOY / name).read_text()
    ast.parse(source, name)
assert "from myapp.jobs import" in (DEPLOY / "fastapi_web.py").read_text()
assert "jobs.close()" in (DEPLOY / "fastapi_web.py").read_text()
print("deployment examples run")
