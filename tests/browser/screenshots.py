"""Photograph each page of the dashboard for the docs, on the browser test's stage (the shop
app under a real `kathikon worker`, `kathikon dashboard`, Debian's headless Chromium):

    make screenshots        # or: .venv-test/bin/python tests/browser/screenshots.py [FOLDER]

writes overview.png, jobs.png, job.png, queues.png, cron.png (and one per other page the
navigation links to) at 1280x800 into FOLDER (default docs/images/dashboard/).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from browser_stage import WINDOW, Stage, chromium, missing, staged, wait_for

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "docs" / "images" / "dashboard"


def populate(stage: Stage) -> int:
    """Jobs in most states; returns the id of a failed report, whose page is photographed."""
    app = stage.app
    sent = [app.insert("send_email", {"to": f"user{n}@example.com"}) for n in range(12)]
    for n in range(3):
        app.insert("send_email", {"to": f"later{n}@example.com"}, schedule_in=3600)
    reports = [app.insert("render_report", {"report": name}) for name in ("daily", "monthly")]
    wait_for(
        "the jobs to run",
        lambda: all(app.get(j.id).state in ("completed", "discarded") for j in sent + reports),
    )
    app.retry(reports[0].id)
    wait_for("the retried report", lambda: app.get(reports[0].id).state == "completed")
    app.pause_queue("default")
    for n in range(4):
        app.insert("send_email", {"to": f"queued{n}@example.com"}, queue="default")
    return reports[1].id


def photograph(stage: Stage, folder: Path) -> list[Path]:
    from selenium.webdriver.common.by import By

    failed = populate(stage)
    pages = {"overview": "/", "jobs": "/jobs", "job": f"/jobs/{failed}", "queues": "/queues"}
    written = []
    with chromium(WINDOW) as driver:
        driver.get(stage.base + "/")
        for link in driver.find_elements(By.CSS_SELECTOR, "header.top nav a"):
            pages.setdefault(link.text.lower(), str(link.get_attribute("href")))
        for name, url in pages.items():
            driver.get(url if url.startswith("http") else stage.base + url)
            path = folder / f"{name}.png"
            if not driver.save_screenshot(str(path)):
                raise RuntimeError(f"Chromium took no screenshot of {url}")
            written.append(path)
    return written


def main(argv: list[str]) -> int:
    folder = Path(argv[1]) if len(argv) > 1 else DEFAULT_FOLDER
    lacking = missing()
    if lacking:
        print(f"screenshots: need {', '.join(lacking)}", file=sys.stderr)
        return 1
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kathikon-shots-") as tmp, staged(Path(tmp)) as stage:
        for path in photograph(stage, folder):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
