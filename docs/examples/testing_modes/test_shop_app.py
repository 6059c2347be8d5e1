import pytest

import kathikon
import shop_app
from kathikon.testing import assert_enqueued, drain_jobs, perform_job, refute_enqueued


@pytest.fixture(autouse=True)
def empty_outbox() -> None:
    shop_app.outbox.clear()


def test_register_enqueues_the_sign_up(kathikon_app: kathikon.Kathikon) -> None:
    job = shop_app.register("ann@example.com")

    assert kathikon_app is shop_app.app
    assert job.id == 1  # every test starts from an empty store
    assert_enqueued(kathikon_app, worker=shop_app.sign_up, args={"email": "ann@example.com"})
    refute_enqueued(kathikon_app, worker=shop_app.send_welcome)  # nothing ran yet


def test_draining_runs_the_function_workers(kathikon_app: kathikon.Kathikon) -> None:
    shop_app.register("bob@example.com")

    # sign_up ran, then the email it inserted: drain_jobs runs jobs that jobs insert.
    assert drain_jobs(kathikon_app) == {"completed": 2}
    assert shop_app.outbox == ["bob@example.com"]
    assert kathikon_app.jobs(state="available") == []


def test_one_worker_on_its_own(kathikon_app: kathikon.Kathikon) -> None:
    result = perform_job(shop_app.send_welcome, {"to": "cy@example.com"})

    assert result.outcome == "completed"
    assert shop_app.outbox == ["cy@example.com"]
