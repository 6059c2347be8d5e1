"""One store, many processes, with real processes: producers inserting through the owner's
socket while worker processes run the jobs; a worker process SIGKILLed mid-job, one frozen
with SIGSTOP past its lease, and the owner SIGKILLed. Every acknowledged insert is accounted
for in each case."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest

import kathikon
from kathikon import JobState as S

HERE = Path(__file__).parent
KATHIKON = Path(sys.executable).with_name("kathikon")


@dataclass
class Setup:
    store: Path
    side: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def spawn(self, *args: str, **kw: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            list(args),
            cwd=HERE,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kw,  # type: ignore[call-overload]
        )
        self.procs.append(proc)
        return proc

    def worker(self, processes: int, *extra: str) -> subprocess.Popen[str]:
        # Without the INFO line per job, the stderr pipe (read only once the worker exits)
        # cannot fill up and block the worker.
        return self.spawn(
            str(KATHIKON),
            "worker",
            "mp_app:app",
            "--processes",
            str(processes),
            "--log-level",
            "warning",
            *extra,
        )

    def runs(self) -> list[tuple[str, int, int, int, float]]:
        """The side file: (what, pid, job id, attempt, time) per line."""
        if not self.side.exists():
            return []
        out = []
        for line in self.side.read_text().splitlines():
            what, pid, job, attempt, at = line.split()
            out.append((what, int(pid), int(job), int(attempt), float(at)))
        return out

    def client(self) -> kathikon.Kathikon:
        """An app in this test process; a client while another process owns the store. It
        knows mp_app's workers by name (to insert their jobs) but never runs them."""
        app = kathikon.Kathikon(self.store, queues={"default": 2}, lease=30)
        for name in ("mp_app.record", "mp_app.spin"):
            app.worker(name=name)(_not_here)
        return app


def _not_here(job: kathikon.Job) -> None:
    raise AssertionError("mp_app's jobs run in worker processes, not in the test process")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    env = dict(os.environ)
    env.update(
        KATHIKON_MP_STORE=str(tmp_path / "jobs.redb"),
        KATHIKON_MP_SIDE=str(tmp_path / "side.log"),
        PYTHONUNBUFFERED="1",
    )
    s = Setup(tmp_path / "jobs.redb", tmp_path / "side.log", env)
    try:
        yield s
    finally:
        for proc in s.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)
        # Worker processes the killed parents left behind notice and exit; make sure.
        subprocess.run(["pkill", "-KILL", "-f", f"{tmp_path}"], check=False)


def wait_for(what: str, predicate: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def worker_pids(setup: Setup, parent: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(parent)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


def started_worker(setup: Setup, processes: int, *extra: str) -> subprocess.Popen[str]:
    """``kathikon worker --processes N``, returned once every worker process is connected to
    the owner (so every test starts with all of them able to claim)."""
    w = setup.worker(processes, *extra)
    wait_for("the worker's socket", lambda: Path(f"{setup.store}.sock").exists())
    # multiprocessing's resource tracker is a child too; the workers are the others.
    wait_for(
        f"{processes} worker processes connected to the owner",
        lambda: (
            len([p for p in worker_pids(setup, w.pid) if _is_worker(p) and _connected(p)])
            >= processes
        ),
    )
    return w


def _connected(pid: int) -> bool:
    """Whether the process holds the two sockets of a client: its first pooled connection
    and its heartbeat's (multiprocessing talks to a child through pipes, not sockets)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    sockets = 0
    for fd in fds:
        try:
            sockets += os.readlink(fd).startswith("socket:")
        except OSError:
            pass
    return sockets >= 2


def acknowledged_by(producers: list[subprocess.Popen[str]]) -> set[int]:
    """Wait for producer.py processes; the ids of every insert that returned in them."""
    acknowledged: set[int] = set()
    for p in producers:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        acknowledged |= {int(line) for line in out.split()}
    return acknowledged


def _is_worker(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"resource_tracker" not in cmd


def state_of(app: kathikon.Kathikon, job_id: int) -> Optional[S]:
    return app.get(job_id).state


def test_a_second_process_is_a_client_with_the_same_api(setup: Setup) -> None:
    owner = setup.spawn(sys.executable, "owner.py")
    assert owner.stdout is not None
    assert owner.stdout.readline().strip() == "owner ready"
    app = setup.client()
    try:
        assert app.role == "client" and app.owner_pid == owner.pid
        job = app.insert("mp_app.record", {"n": 1})
        many = app.insert_all([app.new("mp_app.record", {"n": i}) for i in range(3)])
        assert app.get(job).state is S.AVAILABLE
        assert app.stats()["default"]["available"] == 4
        assert [j.id for j in app.jobs(state="available")] == [job.id] + [j.id for j in many]
        assert app.cancel(job).state is S.CANCELLED
        assert app.retry(job).state is S.AVAILABLE
        with pytest.raises(kathikon.JobNotFoundError):
            app.get(10**9)
        # drain() in a client claims through the socket and acks there.
        ran: list[int] = []
        local = app.worker(name="here")(lambda job: ran.append(job.id))
        mine = [local.insert().id for _ in range(3)]
        assert app.drain() == {"retryable": 4, "completed": 3}
        assert ran == mine
        assert all(app.get(i).state is S.COMPLETED for i in mine)
    finally:
        app.close()


def test_four_producers_and_two_worker_processes_lose_nothing(setup: Setup) -> None:
    w = started_worker(setup, 2)
    producers = [setup.spawn(sys.executable, "producer.py", "150") for _ in range(4)]
    acknowledged = acknowledged_by(producers)
    assert len(acknowledged) == 600
    app = setup.client()
    try:
        wait_for(
            "every acknowledged insert to complete",
            lambda: app.stats()["default"].get("completed", 0) == 600,
            timeout=60,
        )
        completed = {j.id for j in app.jobs(state="completed", limit=10_000)}
        assert acknowledged == completed
    finally:
        app.close()
    ran = {(job, pid) for what, pid, job, _, _ in setup.runs() if what == "end"}
    assert {job for job, _ in ran} == acknowledged
    # Both worker processes took part.
    assert len({pid for _, pid in ran}) == 2
    w.send_signal(signal.SIGTERM)
    _, err = w.communicate(timeout=60)
    assert w.returncode == 0, err


def test_per_queue_concurrency_holds_across_worker_processes(setup: Setup) -> None:
    setup.env["KATHIKON_MP_CONCURRENCY"] = "3"
    w = started_worker(setup, 2)
    app = setup.client()
    try:
        jobs = app.insert_all([app.new("mp_app.record", {"sleep": 0.1}) for _ in range(30)])
        wait_for(
            "the jobs to complete",
            lambda: all(state_of(app, j.id) is S.COMPLETED for j in jobs),
            timeout=60,
        )
    finally:
        app.close()
    events = sorted(
        (at, +1 if what == "start" else -1) for what, _, _, _, at in setup.runs() if what != "fail"
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    # The limit holds across both processes (lanes split 2 + 1), and both of them ran jobs
    # at once (a worker process that starts late can keep the peak at 2 instead of 3).
    assert 2 <= peak <= 3, f"at most 3 at once, saw {peak}"
    assert len({pid for what, pid, *_ in setup.runs() if what == "start"}) == 2
    w.send_signal(signal.SIGTERM)
    w.communicate(timeout=60)


def test_a_worker_process_killed_mid_job_has_its_job_rescued_and_run_elsewhere(
    setup: Setup,
) -> None:
    w = started_worker(setup, 2)
    app = setup.client()
    try:
        job = app.insert("mp_app.record", {"sleep": 30})
        wait_for("the job to start", lambda: any(r[0] == "start" for r in setup.runs()))
        victim = next(pid for what, pid, *_ in setup.runs() if what == "start")
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for("the job to complete", lambda: state_of(app, job.id) is S.COMPLETED)
        # Rescued when the connection dropped, not after the 30 s lease.
        assert time.monotonic() - killed_at < 10
        done = app.get(job)
        assert done.attempt == 2
        assert any(
            e["error"].startswith(f"rescued: worker process {victim} disconnected")
            for e in done.errors
        ), done.errors
        ends = [pid for what, pid, jid, attempt, _ in setup.runs() if what == "end"]
        assert ends and victim not in ends
    finally:
        app.close()
    w.send_signal(signal.SIGTERM)
    w.communicate(timeout=60)


def test_a_frozen_worker_loses_its_job_at_lease_expiry_and_its_late_outcome_is_refused(
    setup: Setup,
) -> None:
    setup.env["KATHIKON_MP_LEASE"] = "1.0"
    w = started_worker(setup, 2)
    app = setup.client()
    try:
        # Attempt 1 sleeps 3 s, then fails; any later attempt completes at once.
        job = app.insert("mp_app.record", {"sleep": 3, "fail_first": True}, max_attempts=5)
        wait_for("attempt 1 to start", lambda: any(r[0] == "start" for r in setup.runs()))
        frozen = next(pid for what, pid, *_ in setup.runs() if what == "start")
        os.kill(frozen, signal.SIGSTOP)
        try:
            wait_for("attempt 2 to complete", lambda: state_of(app, job.id) is S.COMPLETED)
        finally:
            os.kill(frozen, signal.SIGCONT)
        # The thawed process finishes attempt 1 and reports its failure: refused.
        wait_for("attempt 1's late failure", lambda: any(r[0] == "fail" for r in setup.runs()))
        wait_for(
            "the refusal to be recorded",
            lambda: any(e["error"].startswith("fenced:") for e in app.get(job).errors),
        )
        done = app.get(job)
        assert done.state is S.COMPLETED and done.attempt == 2
        kinds = [(e["attempt"], e["error"].split(":")[0]) for e in done.errors]
        assert (1, "rescued") in kinds and (1, "fenced") in kinds, done.errors
        fenced = next(e["error"] for e in done.errors if e["error"].startswith("fenced:"))
        assert f"worker process {frozen}" in fenced and "'failed'" in fenced, fenced
        second = [pid for what, pid, _, attempt, _ in setup.runs() if what == "end"]
        assert second and frozen not in second
    finally:
        app.close()
    w.send_signal(signal.SIGTERM)
    w.communicate(timeout=60)


def test_when_the_owner_is_killed_clients_carry_on_through_the_next_owner(setup: Setup) -> None:
    owner = setup.spawn(sys.executable, "owner.py")
    assert owner.stdout is not None and owner.stdout.readline().strip() == "owner ready"
    app = setup.client()
    try:
        before = [app.insert("mp_app.record", {"n": i}).id for i in range(20)]
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        # A new owner appears before the client's next call: the call goes through it.
        second = setup.spawn(sys.executable, "owner.py")
        assert second.stdout is not None and second.stdout.readline().strip() == "owner ready"
        after = app.insert("mp_app.record", {"n": 100}).id
        assert app.role == "client" and app.owner_pid == second.pid
        stored = {j.id for j in app.jobs(limit=10_000)}
        assert set(before) | {after} <= stored
        # That owner dies too, and nobody replaces it: the next call (not an error) makes
        # this process the owner.
        os.kill(second.pid, signal.SIGKILL)
        second.wait()
        started = time.monotonic()
        assert app.get(after).state is S.AVAILABLE
        assert time.monotonic() - started < 5, "a takeover, not a hang"
        assert app.role == "owner" and app.owner_pid == os.getpid()
        assert set(before) | {after} <= {j.id for j in app.jobs(limit=10_000)}
        # And it serves: a new process is its client.
        probe = subprocess.run(
            [sys.executable, "-c", "from mp_app import app; print(app.role, app.owner_pid)"],
            cwd=HERE,
            env=setup.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.stdout.split() == ["client", str(os.getpid())], probe.stderr
    finally:
        app.close()


def test_the_cli_inspects_a_store_while_its_worker_runs(setup: Setup) -> None:
    w = started_worker(setup, 1)
    app = setup.client()
    try:
        job = app.insert("mp_app.record", {"n": 1})
        wait_for("the job to complete", lambda: state_of(app, job.id) is S.COMPLETED)
    finally:
        app.close()
    out = subprocess.run(
        [str(KATHIKON), "jobs", "--path", str(setup.store), "--json"],
        cwd=HERE,
        env=setup.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert [j["id"] for j in json.loads(out.stdout)] == [job.id]
    w.send_signal(signal.SIGTERM)
    w.communicate(timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user (setuid)")
def test_a_process_of_another_user_is_refused_even_when_file_modes_allow_it(
    setup: Setup,
) -> None:
    # A directory any user can reach (pytest's own are owner-only all the way up).
    open_dir = Path(tempfile.mkdtemp(prefix="kathikon-uid-", dir="/tmp"))
    try:
        setup.env["KATHIKON_MP_STORE"] = str(open_dir / "jobs.redb")
        owner = setup.spawn(sys.executable, "owner.py")
        assert owner.stdout is not None and owner.stdout.readline().strip() == "owner ready"
        sock = open_dir / "jobs.redb.sock"
        assert sock.stat().st_mode & 0o777 == 0o600
        # Open everything up, so only the owner's peer check stands in the way.
        for p in (open_dir, sock):
            p.chmod(0o777)
        _connect_as_nobody(sock)
    finally:
        owner.kill()
        shutil.rmtree(open_dir, ignore_errors=True)


def _probe(sock: Path, as_nobody: bool) -> str:
    """Connect and send a well-formed hello (postcard: variant 0, then version, pid, session
    and lease as varints); "answered" if the owner replies, "closed" if it hangs up."""
    code = (
        "import os, socket, struct\n"
        f"if {as_nobody}:\n"
        "    os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.settimeout(5)\n"
        "try:\n"
        f"    s.connect({str(sock)!r})\n"
        "    s.sendall(struct.pack('<I', 5) + bytes([0, 1, 1, 1, 1]))\n"
        "    print('closed' if s.recv(1) == b'' else 'answered')\n"
        "except (BrokenPipeError, ConnectionResetError):\n"
        "    print('closed')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _connect_as_nobody(sock: Path) -> None:
    assert _probe(sock, as_nobody=False) == "answered"
    assert _probe(sock, as_nobody=True) == "closed"


def test_an_owner_whose_socket_cannot_be_created_still_works_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "jobs.redb"
    blocker = tmp_path / "jobs.redb.sock"
    blocker.mkdir()
    (blocker / "keep").write_text("a directory where the socket should go")
    with caplog.at_level("WARNING", logger="kathikon"):
        app = kathikon.Kathikon(store)
    try:
        assert app.role == "owner"
        assert app._engine.serve_error is not None and "jobs.redb.sock" in app._engine.serve_error
        assert any("not served to other processes" in r.getMessage() for r in caplog.records)
        done = app.worker(name="here")(lambda job: None)
        job = done.insert()
        assert app.drain() == {"completed": 1}
        assert app.get(job).state is S.COMPLETED
    finally:
        app.close()


def test_worker_processes_killed_again_and_again_lose_nothing(setup: Setup) -> None:
    """Producers insert while worker processes are SIGKILLed at random, 15 times: every
    insert that returned completes; no job runs more often than it was claimed; every job
    that ran more than once carries the rescue that explains it."""
    setup.env["KATHIKON_MP_CONCURRENCY"] = "4"
    w = started_worker(setup, 2)
    # Jobs of 20 ms each: about 3 s of work for 4 lanes, so the kills land mid-job.
    producers = [setup.spawn(sys.executable, "producer.py", "300", "0.02") for _ in range(2)]
    rng = random.Random(20261128)
    kills = 0
    while kills < 15:
        time.sleep(rng.uniform(0.1, 0.4))
        live = [p for p in worker_pids(setup, w.pid) if _is_worker(p)]
        if live:
            os.kill(rng.choice(live), signal.SIGKILL)
            kills += 1
    acknowledged = acknowledged_by(producers)
    assert len(acknowledged) == 600
    app = setup.client()
    try:
        wait_for(
            "every acknowledged insert to complete",
            lambda: app.stats()["default"].get("completed", 0) == 600,
            timeout=120,
        )
        jobs = {j.id: j for j in app.jobs(limit=10_000)}
    finally:
        app.close()
    assert {i for i, j in jobs.items() if j.state is S.COMPLETED} == acknowledged
    starts: dict[int, int] = {}
    for what, _, job, _, _ in setup.runs():
        if what == "start":
            starts[job] = starts.get(job, 0) + 1
    assert set(starts) == acknowledged
    for job_id, job in jobs.items():
        assert starts[job_id] <= job.attempt, (job_id, starts[job_id], job.attempt)
        rescues = [e for e in job.errors if e["error"].startswith("rescued: worker process")]
        assert len(rescues) == job.attempt - 1, (job_id, job.attempt, job.errors)
    rescued = sum(1 for job in jobs.values() if job.attempt > 1)
    assert rescued >= 1, "no kill landed mid-job: the test proved nothing"
    print(f"kills={kills} jobs={len(jobs)} rescued={rescued} lost=0")
    w.send_signal(signal.SIGTERM)
    _, err = w.communicate(timeout=60)
    assert w.returncode == 0, err


@pytest.mark.parametrize("processes", ["1", "auto"])
def test_start_processes_from_a_script_runs_the_jobs_in_worker_processes(
    setup: Setup, processes: str
) -> None:
    from kathikon.processes import cores

    setup.env["KATHIKON_MP_PROCESSES"] = processes
    proc = setup.spawn(sys.executable, "start_processes.py")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["clean"] is True
    # One per core for "auto", as many as the queue's concurrency of 2 can use.
    expected = 1 if processes == "1" else min(cores(), 2)
    assert len(report["pids"]) == expected and report["me"] not in report["pids"]
    ran = {job: pid for _, pid, job, _, _ in setup.runs()}
    assert set(ran) == set(report["ids"])
    assert set(ran.values()) <= set(report["pids"])
    app = setup.client()  # the script closed the store: this process owns it now
    try:
        assert app.role == "owner"
        assert all(app.get(i).state is S.COMPLETED for i in report["ids"])
    finally:
        app.close()


def test_processes_auto_is_one_per_core_and_bad_counts_are_refused_naming_them() -> None:
    from kathikon.processes import cores, resolve

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if sys.version_info < (3, 13) or "PYTHON_CPU_COUNT" not in os.environ:
        assert cores() == usable
    assert resolve("auto") == cores() >= 1
    assert resolve(3) == 3
    for bad in (0, -1, True, "4", 2.0, None):
        with pytest.raises(kathikon.ConfigurationError, match=r'processes=.*"auto"') as refused:
            resolve(bad)
        assert repr(bad) in str(refused.value)


def test_restart_delay_doubles_from_one_second_to_a_minute() -> None:
    from kathikon.processes import restart_delay

    assert [restart_delay(n) for n in range(9)] == [1, 1, 2, 4, 8, 16, 32, 60, 60]


def test_a_worker_process_that_cannot_start_is_retried_with_growing_delays(
    setup: Setup,
) -> None:
    """The app is created under the main guard, so worker processes find no app: each exits
    with the error that says so, and the pool tries again after 1 s, then 2 s (not once a
    second forever), logging each failure as an error; stopping does not wait the delay out."""
    proc = setup.spawn(sys.executable, "start_broken.py")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["failures"] == 2, err
    assert report["clean"] is False  # a child exited with an error
    assert report["stopped_in"] < 1.5, report
    assert err.count("found no Kathikon app") >= 2, err
    delays = [
        line.rsplit("trying again in ", 1)[1]
        for line in err.splitlines()
        if "trying again in" in line
    ]
    assert delays[:2] == ["1 s", "2 s"], err
