"""The stage the browser test and the screenshot script share: the ``shop`` app in a fresh
folder owned by a real ``kathikon worker`` subprocess, ``kathikon dashboard`` serving it on a
free port of 127.0.0.1 with actions allowed (another subprocess, a client of the worker), and
Debian's Chromium, headless, driven by Selenium through Debian's chromedriver.

Selenium is told where both binaries are, so it never looks for (or downloads) a browser of
its own.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import kathikon

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

HERE = Path(__file__).resolve().parent
#: Debian's package names, for the messages that say what to install.
PACKAGES = {"chromium": "chromium", "chromedriver": "chromium-driver"}
#: The window every page is shown (and photographed) in.
WINDOW = (1280, 800)
TIMEOUT = 30.0


def missing() -> list[str]:
    """What the browser test needs and this machine lacks, each named with how to get it."""
    out = [
        f"{binary} (apt-get install {package})"
        for binary, package in PACKAGES.items()
        if shutil.which(binary) is None
    ]
    if importlib.util.find_spec("selenium") is None:
        out.append("the selenium package (make test-env installs it)")
    return out


def wait_for(what: str, check: Callable[[], object], timeout: float = TIMEOUT) -> None:
    """Poll ``check`` until it is truthy; ``AssertionError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("COLUMNS", "LINES", "KATHIKON_DEBUG", "KATHIKON_DASHBOARD_TOKEN"):
        env.pop(name, None)
    return env


@contextmanager
def _process(root: Path, name: str, args: list[str]) -> Iterator[subprocess.Popen[str]]:
    """``python -m kathikon.cli ARGS`` in ``root``, its stderr in ``root/NAME.log``; killed
    after (it holds no state the test reads once it is over)."""
    with (root / f"{name}.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kathikon.cli", *args],
            cwd=root,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(TIMEOUT)


@dataclass
class Stage:
    root: Path
    base: str
    """The dashboard's address, e.g. ``http://127.0.0.1:41234``."""
    app: kathikon.Kathikon
    """The shop app loaded in this process: a client of the worker, to insert and check."""

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text()


@contextmanager
def staged(root: Path) -> Iterator[Stage]:
    """The worker and the dashboard running on a fresh copy of the shop app in ``root``."""
    shutil.copy(HERE / "shop.py", root / "shop.py")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with _process(root, "worker", ["worker", "shop:app"]) as worker:

        def worker_started() -> bool:
            assert worker.poll() is None, (root / "worker.log").read_text()
            return "worker started" in (root / "worker.log").read_text()

        wait_for("the worker to start", worker_started)
        dashboard_args = ["dashboard", "shop:app", "--port", str(port), "--allow-actions"]
        with _process(root, "dashboard", dashboard_args) as dashboard:

            def answers() -> bool:
                assert dashboard.poll() is None, (root / "dashboard.log").read_text()
                try:
                    with urllib.request.urlopen(base + "/", timeout=2) as r:
                        return bool(r.status == 200)
                except OSError:
                    return False

            wait_for("the dashboard to answer", answers)
            app = runpy.run_path(str(root / "shop.py"), run_name="shop_in_test")["app"]
            try:
                assert app.role == "client"
                yield Stage(root, base, app)
            finally:
                app.close(timeout=5)


@contextmanager
def chromium(window: tuple[int, int] = WINDOW) -> Iterator[Chrome]:
    """Debian's Chromium, headless, at ``window`` (width, height) CSS pixels."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={window[0]},{window[1]}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(shutil.which("chromedriver"))))
    try:
        # The window's size includes the browser's own bars even headless: grow it by their
        # size so that the page (and every screenshot) is ``window`` exactly.
        driver.set_window_size(*window)
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight];")
        driver.set_window_size(2 * window[0] - inner[0], 2 * window[1] - inner[1])
        yield driver
    finally:
        driver.quit()
