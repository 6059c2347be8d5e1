"""The app the browser test and the dashboard's screenshots run under `kathikon worker`.

It is copied into a fresh folder, next to the store it opens there: a queue of emails that
are always sent, and a queue of reports whose first attempt fails with a traceback and whose
retry succeeds (decided by ``job.attempt``, so the dashboard's Retry is what completes it).
"""

import pathlib

import kathikon

HERE = pathlib.Path(__file__).resolve().parent

app = kathikon.Kathikon(
    HERE / "jobs.redb",
    queues={"default": 1, "emails": 2, "reports": 1},
    poll_interval=0.1,
    scheduler_interval=0.1,
)


@app.worker(name="send_email", queue="emails")
def send_email(job: kathikon.Job) -> dict[str, str]:
    return {"sent_to": job.args["to"]}


@app.worker(name="render_report", queue="reports", max_attempts=1)
def render_report(job: kathikon.Job) -> dict[str, int]:
    if job.attempt == 1:
        raise FileNotFoundError(f"no template for report {job.args['report']!r} yet")
    return {"pages": 3}


# Mondays at 03:00 UTC: the cron page has an entry that will not fire during a run.
app.cron("0 3 * * 1", render_report, {"report": "weekly"}, name="weekly report")
