"""Cron (docs/guides/cron.md)."""

from __future__ import annotations

# --8<-- [start:declare]
from datetime import datetime, timedelta, timezone

import kathikon

app = kathikon.Kathikon(path=None, queues={"default": 2, "reports": 1}, clock="manual")
# Monday 2030-01-07, 06:50 in Athens (UTC+2 in winter).
app.advance_clock(datetime(2030, 1, 7, 4, 50, tzinfo=timezone.utc) - app.now())


@app.worker(queue="reports", cron="0 7 * * MON-FRI", cron_timezone="Europe/Athens")
def morning_report(job: kathikon.Job) -> None:
    print("morning report for", job.meta["cron"]["slot"])


@app.worker
def cleanup(job: kathikon.Job) -> None:
    print("cleanup older than", job.args["days"], "days, slot", job.meta["cron"]["slot"])


app.cron("*/30 * * * *", cleanup, args={"days": 30}, name="cleanup", timezone="UTC", priority=3)

for entry in app.crontab():
    print(entry.name, "|", entry.expression, "|", entry.timezone, "| next", entry.next_at)
app.advance_clock(timedelta(minutes=10))  # 05:00 UTC, 07:00 in Athens
app.drain()
# --8<-- [end:declare]
app.close()

# --8<-- [start:catch_up]
STORE = "jobs.redb"


def open_app() -> tuple[kathikon.Kathikon, kathikon.WorkerFunction]:
    app = kathikon.Kathikon(STORE, clock="manual")

    @app.worker(name="sync")
    def sync(job: kathikon.Job) -> None:
        pass

    return app, sync


app, sync = open_app()
app.advance_clock(datetime(2030, 1, 1, 0, 30, tzinfo=timezone.utc) - app.now())
app.cron("@hourly", sync, catch_up="once")
app.advance_clock(timedelta(hours=1))  # 01:00 fires
app.close()  # down from 01:30 until 04:30: 02:00, 03:00 and 04:00 pass

app, sync = open_app()
app.advance_clock(datetime(2030, 1, 1, 4, 30, tzinfo=timezone.utc) - app.now())
app.cron("@hourly", sync, catch_up="once")  # the same entry, declared again at start
for job in app.jobs():
    print(job.meta["cron"])
app.close()
# --8<-- [end:catch_up]
