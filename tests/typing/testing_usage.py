"""Typing example: kathikon.testing helpers and the pytest fixture, as a test suite uses them.

Type-checked by ``make typecheck`` (mypy --strict and pyright in strict mode) and run by
``tests/test_typing_examples.py``.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from datetime import timedelta
from typing import Any, Optional

import kathikon
from kathikon.testing import (
    PerformResult,
    all_enqueued,
    aperform_job,
    assert_enqueued,
    drain_jobs,
    make_app,
    perform_job,
    refute_enqueued,
    use,
)

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type


class SendWelcome(kathikon.Worker):
    queue = "emails"
    max_attempts = 3

    def perform(self, job: kathikon.Job) -> Optional[kathikon.Snooze]:
        if job.args.get("later"):
            return kathikon.Snooze(60)
        if job.args.get("fail"):
            raise ConnectionError("mail server down")
        return None

    def backoff(self, job: kathikon.Job) -> float:
        return 5.0


def register(app: kathikon.Kathikon) -> kathikon.WorkerFunction:
    app.register(SendWelcome)

    @app.worker
    async def fetch(job: kathikon.Job) -> str:
        await asyncio.sleep(0)
        return str(job.args["url"])

    return fetch


# The shape of a pytest test using the plugin's fixture (kathikon_app: kathikon.Kathikon).
def test_sign_up(kathikon_app: kathikon.Kathikon) -> None:
    fetch = register(kathikon_app)
    kathikon_app.insert(SendWelcome, {"email": "ann@example.com"})
    fetch.insert({"url": "https://example.com"}, schedule_in=timedelta(days=3))

    job = assert_enqueued(kathikon_app, worker=SendWelcome, args={"email": "ann@example.com"})
    assert_type(job, kathikon.Job)
    assert_enqueued(
        kathikon_app,
        worker=fetch,
        queue="default",
        state="scheduled",
        scheduled_at=kathikon_app.now() + timedelta(days=3),
        delta=0,
    )
    assert_enqueued(kathikon_app, state=["scheduled", kathikon.JobState.AVAILABLE], tags=[])
    refute_enqueued(kathikon_app, args={"email": "bob@example.com"}, state=None)
    found = all_enqueued(kathikon_app, queue="emails", priority=0, meta={})
    assert_type(found, list[kathikon.Job])
    assert len(found) == 1

    counts = drain_jobs(kathikon_app, "emails")
    assert_type(counts, Counter[str])
    assert counts == {"completed": 1}
    assert drain_jobs(kathikon_app, with_scheduled=True, max_runs=10) == {"completed": 1}

    result = perform_job(SendWelcome, {"email": "ann@example.com", "later": True})
    assert_type(result, PerformResult)
    assert_type(result.outcome, str)
    assert_type(result.job, kathikon.Job)
    assert_type(result.value, Any)
    assert_type(result.error, Optional[BaseException])
    assert_type(result.reason, Optional[str])
    assert_type(result.snooze, Optional[float])
    assert_type(result.retry_in, Optional[float])
    assert result.outcome == "snoozed" and result.snooze == 60

    failed = perform_job(
        SendWelcome, {"fail": True}, app=kathikon_app, attempt=3, reraise=False, max_attempts=3
    )
    assert failed.outcome == "discarded"

    fetched = asyncio.run(aperform_job(fetch, {"url": "u"}))
    assert fetched.value == "u"


# An app in a testing mode, as a conftest.py hands it to the fixture.
def inline_app() -> None:
    app = kathikon.Kathikon("jobs.redb", {"default": 1, "emails": 1}, testing="inline")
    assert_type(app.testing, Optional[str])
    use(app)
    try:
        done = register(app).insert({"url": "u"})
        assert done.state is kathikon.JobState.COMPLETED
    finally:
        use(None)
        app.close()


if __name__ == "__main__":
    inline_app()
    app = make_app(queues={"default": 1, "emails": 1})
    assert_type(app, kathikon.Kathikon)
    try:
        test_sign_up(app)
    finally:
        app.close()
    print("ok")
