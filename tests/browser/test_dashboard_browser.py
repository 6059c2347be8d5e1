"""The dashboard in a real browser: Debian's Chromium, headless, driven by Selenium, against
`kathikon dashboard` serving a store a real `kathikon worker` subprocess owns. It watches a
queue's counts change as jobs run without the page reloading, filters the failed jobs, reads
one's traceback, retries it and sees it complete, and pauses and resumes a queue; it saves a
screenshot of each page under the test's folder (or $KATHIKON_SCREENSHOTS).

Skipped when Chromium, chromedriver or selenium is missing, except under CI (CI set), where
that is a failure: `make browser` and `make test-env` install them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from browser_stage import Stage, chromium, missing, staged, wait_for

import kathikon

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

# The page structure the test reads, in one place: the templates' ids, classes and data
# attributes (python/kathikon/web/templates/).
NAV_LINK = "header.top nav a"
QUEUE_ROW = 'tr[data-queue="{queue}"]'
QUEUE_COUNT = 'tr[data-queue="{queue}"] [data-count="{state}"]'
QUEUE_STATUS = 'tr[data-queue="{queue}"] .status'
STATE_FILTER = "#filter-state"
FILTER_BUTTON = "#filter-submit"
JOB_ROW = "tr[data-job]"
JOB_LINK = 'tr[data-job="{id}"] a'
ROW_STATE = "td .state"
JOB_STATE = "h1 .state"
TRACEBACK = "pre.traceback"
ACTION_BUTTON = "#job-{action}"
QUEUE_ACTION_BUTTON = 'tr[data-queue="{queue}"] form[action$="/{action}"] button'
DONE = "p.done"

EMAILS = 5


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where the screenshots go: $KATHIKON_SCREENSHOTS, or the test's own folder."""
    folder = Path(os.environ.get("KATHIKON_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[Stage]:
    lacking = missing()
    if lacking:
        message = "the browser test needs " + ", ".join(lacking)
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must have them (make browser; make test-env)")
        pytest.skip(message)
    root = tmp_path / "shop"
    root.mkdir()
    with staged(root) as s:
        yield s


class Browser:
    """The driver with the few moves the test makes, each waiting explicitly for its result."""

    def __init__(self, driver: WebDriver, shots: Path) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.shots = shots
        self.by_css = By.CSS_SELECTOR
        self.ec = ec
        self.wait = WebDriverWait(driver, 30)

    def text(self, css: str) -> str:
        return str(self.driver.find_element(self.by_css, css).text)

    def click(self, css: str) -> None:
        self.driver.find_element(self.by_css, css).click()

    def until_text(self, css: str, expected: str) -> None:
        located = self.ec.text_to_be_present_in_element((self.by_css, css), expected)
        self.wait.until(located, f"{css!r} to show {expected!r}")

    def nav(self, label: str) -> None:
        links = self.driver.find_elements(self.by_css, NAV_LINK)
        next(link for link in links if link.text == label).click()
        self.wait.until(self.ec.title_contains(label))

    def shoot(self, name: str) -> None:
        assert self.driver.save_screenshot(str(self.shots / f"{name}.png"))


def count(queue: str, state: str) -> str:
    return QUEUE_COUNT.format(queue=queue, state=state)


def overview_follows_the_jobs(b: Browser, stage: Stage) -> kathikon.Job:
    """The emails queue's counts change as its jobs run, without a reload; then a report
    fails. Returns the report."""
    app = stage.app
    app.pause_queue("emails")
    b.driver.get(stage.base + "/")
    b.driver.find_element(b.by_css, QUEUE_ROW.format(queue="emails"))
    assert b.text(count("emails", "completed")) == "0"
    b.driver.execute_script("window.kathikonNotReloaded = true;")
    emails = [app.insert("send_email", {"to": f"u{n}@example.com"}) for n in range(EMAILS)]
    b.until_text(count("emails", "available"), str(EMAILS))
    app.resume_queue("emails")
    b.until_text(count("emails", "completed"), str(EMAILS))
    assert b.text(count("emails", "available")) == "0"
    assert b.driver.execute_script("return window.kathikonNotReloaded === true;")
    assert all(app.get(job.id).state == "completed" for job in emails)
    # A report fails on its first attempt: the overview shows it discarded.
    report = app.insert("render_report", {"report": "monthly"})
    b.until_text(count("reports", "discarded"), "1")
    b.shoot("overview")
    return report


def filter_the_failed_jobs(b: Browser, report: kathikon.Job) -> None:
    """The report is among the discarded jobs, and only discarded jobs are listed."""
    from selenium.webdriver.support.ui import Select

    b.nav("Jobs")
    Select(b.driver.find_element(b.by_css, STATE_FILTER)).select_by_value("discarded")
    b.click(FILTER_BUTTON)
    b.wait.until(b.ec.url_contains("state=discarded"))
    rows = b.driver.find_elements(b.by_css, JOB_ROW)
    assert str(report.id) in [row.get_attribute("data-job") for row in rows]
    assert {row.find_element(b.by_css, ROW_STATE).text for row in rows} == {"discarded"}
    b.shoot("jobs")


def read_the_traceback_and_retry(b: Browser, stage: Stage, report: kathikon.Job) -> None:
    """The job page shows the traceback; Retry runs a second attempt, which completes."""
    b.click(JOB_LINK.format(id=report.id))
    b.wait.until(b.ec.title_contains(f"Job {report.id}"))
    traceback = b.text(TRACEBACK)
    assert "Traceback (most recent call last)" in traceback
    assert "FileNotFoundError: no template for report 'monthly' yet" in traceback
    assert b.text(JOB_STATE) == "discarded"
    b.shoot("job")
    b.click(ACTION_BUTTON.format(action="retry"))
    b.until_text(DONE, "Retried")

    def completed(driver: WebDriver) -> bool:
        driver.refresh()  # the job page is not live: look again until it says completed
        return b.text(JOB_STATE) == "completed"

    b.wait.until(completed, "the retried job to complete")
    after = stage.app.get(report.id)
    assert (after.state, after.attempt) == ("completed", 2)


def pause_and_resume(b: Browser, stage: Stage) -> None:
    """Paused from the queues page, the worker starts no job of the queue; resumed, it does."""
    app = stage.app
    b.nav("Queues")
    status = QUEUE_STATUS.format(queue="emails")
    assert b.text(status) != "paused"
    b.click(QUEUE_ACTION_BUTTON.format(queue="emails", action="pause"))
    b.until_text(DONE, "Paused")
    assert b.text(status) == "paused"
    assert app.check_queue("emails").paused
    held = app.insert("send_email", {"to": "held@example.com"})
    b.shoot("queues")
    assert app.get(held.id).state == "available"
    b.click(QUEUE_ACTION_BUTTON.format(queue="emails", action="resume"))
    b.until_text(DONE, "Resumed")
    assert b.text(status) != "paused"
    assert not app.check_queue("emails").paused
    wait_for("the resumed queue to run", lambda: app.get(held.id).state == "completed")


def photograph_the_other_pages(b: Browser) -> None:
    """Cron, with the app's entry, and every other page the navigation links to (workers,
    once it exists)."""
    b.nav("Cron")
    assert "weekly report" in b.text("table.cron")
    b.shoot("cron")
    taken = {"overview", "jobs", "queues", "cron"}
    for label in [a.text for a in b.driver.find_elements(b.by_css, NAV_LINK)]:
        if label.lower() not in taken:
            b.nav(label)
            b.shoot(label.lower())


def test_the_dashboard_in_chromium_follows_jobs_retries_a_failure_and_pauses_a_queue(
    stage: Stage, shots: Path
) -> None:
    with chromium() as driver:
        b = Browser(driver, shots)
        try:
            report = overview_follows_the_jobs(b, stage)
            filter_the_failed_jobs(b, report)
            read_the_traceback_and_retry(b, stage, report)
            pause_and_resume(b, stage)
            photograph_the_other_pages(b)
        except BaseException:
            b.shoot("failure")
            (shots / "failure.html").write_text(driver.page_source)
            raise
    for name in ("overview", "jobs", "job", "queues", "cron"):
        assert (shots / f"{name}.png").stat().st_size > 0
    assert "Traceback" not in stage.log("dashboard"), stage.log("dashboard")
