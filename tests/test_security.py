"""Security: owner-only store files, no pickle (or any code execution) from stored data, and
worker names from the store looked up only among registered workers, never imported or
evaluated."""

from __future__ import annotations

import ast
import importlib.abc
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional

import pytest

import kathikon

S = kathikon.JobState
WaitUntil = Callable[..., None]
PACKAGE = Path(kathikon.__file__).resolve().parent  # what is installed, wheel or editable

# -- files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o002, 0o022, 0o077])
def test_the_store_file_is_created_owner_only_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    path = tmp_path / "jobs.redb"
    old = os.umask(umask)
    try:
        app = kathikon.Kathikon(path)
    finally:
        os.umask(old)
    try:
        app.insert(app.worker(name="sec.noop")(lambda job: None), {"secret": "s3cr3t"})
        # While open, the write-ahead log beside it holds the same data: owner-only too.
        log = tmp_path / "jobs.redb-wal"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    finally:
        app.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Nothing else is left next to it (no lock or journal file with looser permissions; a
    # clean close folds the write-ahead log back into the store and removes it).
    assert [p.name for p in tmp_path.iterdir()] == ["jobs.redb"]


def test_kathikon_never_creates_the_directory(tmp_path: Path) -> None:
    """The directory is the caller's: a missing one is a typed error naming the path, and
    nothing is created (so no directory is ever made with the umask's permissions)."""
    path = tmp_path / "missing" / "jobs.redb"
    with pytest.raises(kathikon.StorageError) as err:
        kathikon.Kathikon(path)
    assert str(path) in str(err.value)
    assert not (tmp_path / "missing").exists()
    assert list(tmp_path.iterdir()) == []


# -- no pickle, no eval ------------------------------------------------------------------------

FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
# The one place that imports by name: the command line's APP argument (module:attribute), a
# string the operator types, never one read from the store.
# cli/load.py imports the app the user names; processes.py imports, in a worker process, the module
# that created the app in its parent (a name from the parent's memory, never from the store).
IMPORT_BY_NAME_ALLOWED = {"load.py", "processes.py"}


def package_sources() -> list[Path]:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) >= 10, f"expected the package's sources under {PACKAGE}"
    return sources


def imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def called_names(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                out.add(func.id)
            elif isinstance(func, ast.Attribute):
                out.add(func.attr)
    return out


def test_no_pickle_or_eval_anywhere_in_the_package() -> None:
    problems = []
    for source in package_sources():
        text = source.read_text()
        tree = ast.parse(text, filename=str(source))
        where = source.relative_to(PACKAGE)
        bad_imports = imported_modules(tree) & FORBIDDEN_MODULES
        if bad_imports:
            problems.append(f"{where} imports {sorted(bad_imports)}")
        # Also a plain text search, for importlib.import_module("pickle") and the like.
        if "pickle" in text:
            problems.append(f"{where} mentions pickle")
        bad_calls = called_names(tree) & FORBIDDEN_CALLS
        if bad_calls:
            problems.append(f"{where} calls {sorted(bad_calls)}")
        if "import_module" in called_names(tree) and source.name not in IMPORT_BY_NAME_ALLOWED:
            problems.append(f"{where} imports modules by name")
    assert not problems, problems


def test_the_grep_test_would_catch_a_pickle_import() -> None:
    tree = ast.parse("import os\nfrom pickle import loads\nimport cloudpickle as cp\n")
    assert imported_modules(tree) & FORBIDDEN_MODULES == {"pickle", "cloudpickle"}
    assert called_names(ast.parse("x = eval(s)\ny = builtins.exec(s)")) >= {"eval", "exec"}


# -- worker names from the store -------------------------------------------------------------

# A worker name that would do damage if it were imported, resolved or evaluated.
HOSTILE_NAMES = [
    "os.system",
    "sec_never_imported_module.attack",
    "__import__('os').system('touch PWNED')",
    "builtins.exec",
]


class ImportRecorder(importlib.abc.MetaPathFinder):
    """Records every import attempted while installed (and finds nothing itself)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None
    ) -> None:
        self.names.append(fullname)
        return None


@pytest.fixture
def guarded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[list[Any], ImportRecorder]]:
    """os.system and exec replaced by recorders, imports recorded, cwd in tmp_path."""
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(("os.system", a)) or 0)
    monkeypatch.chdir(tmp_path)
    recorder = ImportRecorder()
    sys.meta_path.insert(0, recorder)
    try:
        yield calls, recorder
    finally:
        sys.meta_path.remove(recorder)


def insert_as(path: Path, name: str) -> int:
    """Store a job for worker ``name`` from an app that has such a worker."""
    app = kathikon.Kathikon(path)
    try:
        app.worker(name=name)(lambda job: None)
        return app.insert(name, {"cmd": "touch PWNED"}).id
    finally:
        app.close()


def check_not_registered(job: kathikon.Job, name: str) -> None:
    assert job.state is S.RETRYABLE, job
    assert job.attempt == 1
    (entry,) = job.errors
    assert f"worker {name!r} is not registered in this app" in entry["error"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_stored_worker_name_is_never_resolved_in_drain(
    tmp_path: Path, guarded: tuple[list[Any], ImportRecorder], name: str
) -> None:
    calls, recorder = guarded
    path = tmp_path / "jobs.redb"
    job_id = insert_as(path, name)
    app = kathikon.Kathikon(path)  # this app has no worker of that name
    try:

        @app.worker(name="sec.other")
        def other(job: kathikon.Job) -> None:
            pass

        before = set(sys.modules)
        recorder.names.clear()
        assert app.drain() == {"retryable": 1}
        check_not_registered(app.get(job_id), name)
        imported = recorder.names
        new_modules = set(sys.modules) - before
    finally:
        app.close()
    assert calls == []
    assert not (tmp_path / "PWNED").exists()
    assert "sec_never_imported_module" not in sys.modules
    assert not any("sec_never_imported_module" in n or n == "os" for n in imported), imported
    assert not any(name.split(".")[0] in m for m in new_modules), new_modules


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_stored_worker_name_is_never_resolved_by_the_runner(
    tmp_path: Path, guarded: tuple[list[Any], ImportRecorder], wait_until: WaitUntil, name: str
) -> None:
    calls, recorder = guarded
    path = tmp_path / "jobs.redb"
    job_id = insert_as(path, name)
    app = kathikon.Kathikon(path, poll_interval=0.05)
    try:
        recorder.names.clear()
        app.start()
        wait_until(lambda: app.get(job_id).state is S.RETRYABLE, what="the job to be retried")
        assert app.stop(timeout=5)
        check_not_registered(app.get(job_id), name)
    finally:
        app.close()
    assert calls == []
    assert not (tmp_path / "PWNED").exists()
    assert "sec_never_imported_module" not in sys.modules
    assert not any("sec_never_imported_module" in n for n in recorder.names), recorder.names


def test_a_worker_name_is_matched_exactly_not_by_prefix_or_attribute(tmp_path: Path) -> None:
    """A stored name that merely resembles a registered one (a prefix, a dotted attribute,
    other case) is not registered: nothing runs."""
    path = tmp_path / "jobs.redb"
    ids = [insert_as(path, n) for n in ("sec.real.perform", "sec.rea", "SEC.REAL", "sec.real ")]
    app = kathikon.Kathikon(path)
    ran: list[int] = []
    try:

        @app.worker(name="sec.real")
        def real(job: kathikon.Job) -> None:
            ran.append(job.id)

        assert app.drain() == {"retryable": len(ids)}
        assert ran == []
    finally:
        app.close()
