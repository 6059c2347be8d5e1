"""Opening a store: one app per store file per process, whether it owns the store or is a
client of another process; ``create=False`` refuses a missing file; the absolute path and what
the open did are logged."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import kathikon

# Owns the store given as argv[1], says so, and holds it until stdin closes.
OWNER = textwrap.dedent(
    """
    import sys
    import kathikon

    app = kathikon.Kathikon(sys.argv[1])
    assert app.role == "owner", app.role
    print("owner ready", flush=True)
    sys.stdin.read()
    app.close()
    """
)


@pytest.fixture
def other_owner(store_path: Path) -> Iterator[int]:
    """Another process owning ``store_path``; yields its pid."""
    with subprocess.Popen(
        [sys.executable, "-c", OWNER, str(store_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "owner ready"
            yield proc.pid
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)


def test_a_second_owner_app_in_one_process_is_refused_until_the_first_closes(
    store_path: Path,
) -> None:
    first = kathikon.Kathikon(store_path)
    assert first.role == "owner"
    with pytest.raises(kathikon.StorageLockedError) as info:
        kathikon.Kathikon(store_path)
    message = str(info.value)
    assert str(store_path) in message
    assert "one app per store per process" in message and "close it" in message
    first.close()
    again = kathikon.Kathikon(store_path)
    assert again.role == "owner"
    again.close()


def test_a_second_client_app_in_one_process_is_refused_until_the_first_closes(
    store_path: Path, other_owner: int
) -> None:
    first = kathikon.Kathikon(store_path)
    try:
        assert first.role == "client" and first.owner_pid == other_owner
        with pytest.raises(kathikon.StorageLockedError) as info:
            kathikon.Kathikon(store_path)
        assert str(store_path) in str(info.value)
        assert "one app per store per process" in str(info.value)
        # The same file under another spelling is the same store.
        with pytest.raises(kathikon.StorageLockedError):
            kathikon.Kathikon(store_path.parent / "." / store_path.name)
        # The refused open did not disturb the first app.
        first.worker(name="w")(lambda job: None)
        job = first.insert("w", {"n": 1})
        assert first.get(job).state is kathikon.JobState.AVAILABLE
    finally:
        first.close()
    second = kathikon.Kathikon(store_path)
    try:
        assert second.role == "client"
        assert second.stats()["default"]["available"] == 1
    finally:
        second.close()


def test_create_false_refuses_a_missing_file_naming_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(kathikon.StoreNotFoundError) as info:
        kathikon.Kathikon("shop.redb", create=False)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, kathikon.StorageError)
    message = str(info.value)
    assert os.path.join(os.getcwd(), "shop.redb") in message and "create=True" in message
    assert not (tmp_path / "shop.redb").exists(), "nothing was created"
    kathikon.Kathikon("shop.redb").close()
    existing = kathikon.Kathikon("shop.redb", create=False)
    assert existing.role == "owner"
    existing.close()


def test_the_open_logs_the_absolute_path_and_whether_it_created_the_store(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    caplog.set_level(logging.INFO, logger="kathikon")
    kathikon.Kathikon("shop.redb").close()
    kathikon.Kathikon("shop.redb").close()
    opens = [r.getMessage() for r in caplog.records if r.name == "kathikon.store"]
    where = os.path.join(os.getcwd(), "shop.redb")
    assert opens == [
        f"created a new, empty store at {where} (this process owns it)",
        f"opened the store at {where} (this process owns it)",
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "kathikon.store")


def test_a_client_open_logs_the_owner(
    store_path: Path, other_owner: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kathikon")
    kathikon.Kathikon(store_path).close()
    opens = [r.getMessage() for r in caplog.records if r.name == "kathikon.store"]
    assert opens == [
        f"opened the store at {store_path} as a client of its owner, pid {other_owner}"
    ]


def test_a_forked_child_may_open_the_store_its_parent_holds_as_a_client(
    store_path: Path, other_owner: int
) -> None:
    parent = kathikon.Kathikon(store_path)
    try:
        assert parent.role == "client"
        child = os.fork()
        if child == 0:  # the child inherits the parent's memory, not its app
            code = 1
            try:
                app = kathikon.Kathikon(store_path)
                code = 0 if app.role == "client" and app.owner_pid == other_owner else 2
                app.close()
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        parent.close()


def test_create_false_does_not_look_for_the_file_in_a_testing_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A production app made with create=False still imports under KATHIKON_TESTING, on a
    # machine where its store file does not exist.
    monkeypatch.chdir(tmp_path)
    app = kathikon.Kathikon("/nonexistent/shop.redb", create=False, testing="manual")
    assert app.path == "/nonexistent/shop.redb"
    app.close()
