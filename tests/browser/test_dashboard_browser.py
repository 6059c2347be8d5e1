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

import pytest
from browser_stage import Stage, chromium, missing, staged, wait_for

# The page structure the test reads, in one place: the templates' ids, classes and data
# attributes (python/kathikon/web/templates/).
NAV_LINK = "header.top nav a"
QUEUE_ROW = 'tr[data-queue="{queue}"]'
QUEUE_COUNT = 'tr[data-queue="{queue}"] [data-count="{state}"]'
QUEUE_STATUS = 'tr[data-queue="{queue}"] .status'
STATE_FILTER = 'form.filters select[name="state"]'
FILTER_BUTTON = 'form.filters button[type="submit"]'
JOB_ROW = "tr[data-job]"
JOB_LINK = 'tr[data-job="{id}"] a'
ROW_STATE = "td .state"
JOB_STATE = "h1 .state"
TRACEBACK = "pre.traceback"
ACTION_BUTTON = 'form[action$="/{action}"] button'
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


def test_the_dashboard_in_chromium_follows_jobs_retries_a_failure_and_pauses_a_queue(
    stage: Stage, shots: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    app = stage.app

    def text(driver: WebDriver, css: str) -> str:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)

    def until_text(driver: WebDriver, css: str, expected: str) -> None:
        WebDriverWait(driver, 30).until(
            ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), expected),
            f"{css!r} to show {expected!r}",
        )

    def count(queue: str, state: str) -> str:
        return QUEUE_COUNT.format(queue=queue, state=state)

    def shoot(driver: WebDriver, name: str) -> None:
        assert driver.save_screenshot(str(shots / f"{name}.png"))

    def nav(driver: WebDriver, label: str) -> None:
        links = driver.find_elements(By.CSS_SELECTOR, NAV_LINK)
        next(link for link in links if link.text == label).click()
        WebDriverWait(driver, 30).until(ec.title_contains(label))

    with chromium() as driver:
        try:
            # Overview: the queue's counts change as its jobs run, without a reload.
            app.pause_queue("emails")
            driver.get(stage.base + "/")
            driver.find_element(By.CSS_SELECTOR, QUEUE_ROW.format(queue="emails"))
            assert text(driver, count("emails", "completed")) == "0"
            driver.execute_script("window.kathikonNotReloaded = true;")
            emails = [app.insert("send_email", {"to": f"u{n}@example.com"}) for n in range(EMAILS)]
            until_text(driver, count("emails", "available"), str(EMAILS))
            app.resume_queue("emails")
            until_text(driver, count("emails", "completed"), str(EMAILS))
            assert text(driver, count("emails", "available")) == "0"
            assert driver.execute_script("return window.kathikonNotReloaded === true;")
            assert all(app.get(job.id).state == "completed" for job in emails)

            # A report fails on its first attempt: the overview shows it discarded.
            report = app.insert("render_report", {"report": "monthly"})
            until_text(driver, count("reports", "discarded"), "1")
            shoot(driver, "overview")

            # Jobs: filter the failed ones; the report is there, and only failures are.
            nav(driver, "Jobs")
            Select(driver.find_element(By.CSS_SELECTOR, STATE_FILTER)).select_by_value(
                "discarded"
            )
            driver.find_element(By.CSS_SELECTOR, FILTER_BUTTON).click()
            WebDriverWait(driver, 30).until(ec.url_contains("state=discarded"))
            rows = driver.find_elements(By.CSS_SELECTOR, JOB_ROW)
            assert str(report.id) in [row.get_attribute("data-job") for row in rows]
            states = {row.find_element(By.CSS_SELECTOR, ROW_STATE).text for row in rows}
            assert states == {"discarded"}
            shoot(driver, "jobs")

            # Job: its traceback, then Retry; the second attempt completes it.
            driver.find_element(By.CSS_SELECTOR, JOB_LINK.format(id=report.id)).click()
            WebDriverWait(driver, 30).until(ec.title_contains(f"Job {report.id}"))
            traceback = text(driver, TRACEBACK)
            assert "Traceback (most recent call last)" in traceback
            assert "FileNotFoundError: no template for report 'monthly' yet" in traceback
            assert text(driver, JOB_STATE) == "discarded"
            shoot(driver, "job")
            driver.find_element(By.CSS_SELECTOR, ACTION_BUTTON.format(action="retry")).click()
            until_text(driver, DONE, "Retried")

            def completed(d: WebDriver) -> bool:
                d.refresh()  # the job page is not live: look again until it says completed
                return text(d, JOB_STATE) == "completed"

            WebDriverWait(driver, 30).until(completed, "the retried job to complete")
            assert app.get(report.id).attempt == 2
            assert app.get(report.id).state == "completed"

            # Queues: pause emails (the worker starts none of its jobs), then resume it.
            nav(driver, "Queues")
            status = QUEUE_STATUS.format(queue="emails")
            assert text(driver, status) != "paused"
            pause = QUEUE_ACTION_BUTTON.format(queue="emails", action="pause")
            driver.find_element(By.CSS_SELECTOR, pause).click()
            until_text(driver, DONE, "Paused")
            assert text(driver, status) == "paused"
            assert app.check_queue("emails").paused
            held = app.insert("send_email", {"to": "held@example.com"})
            shoot(driver, "queues")
            assert app.get(held.id).state == "available"
            resume = QUEUE_ACTION_BUTTON.format(queue="emails", action="resume")
            driver.find_element(By.CSS_SELECTOR, resume).click()
            until_text(driver, DONE, "Resumed")
            assert text(driver, status) != "paused"
            assert not app.check_queue("emails").paused
            wait_for("the resumed queue to run", lambda: app.get(held.id).state == "completed")

            # Cron: the app's entry with its next run.
            nav(driver, "Cron")
            assert "weekly report" in text(driver, "table.cron")
            shoot(driver, "cron")

            # Every other page the navigation has (workers, once it exists), photographed.
            taken = {"overview", "jobs", "queues", "cron"}
            labels = [a.text for a in driver.find_elements(By.CSS_SELECTOR, NAV_LINK)]
            for label in labels:
                if label.lower() not in taken:
                    nav(driver, label)
                    shoot(driver, label.lower())
        except BaseException:
            shoot(driver, "failure")
            (shots / "failure.html").write_text(driver.page_source)
            raise
    for name in ("overview", "jobs", "job", "queues", "cron"):
        assert (shots / f"{name}.png").stat().st_size > 0
    assert "Traceback" not in stage.log("dashboard"), stage.log("dashboard")
