"""Scheduling (docs/guides/scheduling.md)."""

from __future__ import annotations

import time

# --8<-- [start:schedule]
from datetime import datetime, timedelta, timezone

import kathikon

app = kathikon.Kathikon(path=None, clock="manual")  # a clock that moves only when told


@app.worker
def remind(job: kathikon.Job) -> None:
    print("reminding", job.args["who"], "at", app.now() - start)


start = app.now()
remind.insert({"who": "ann"}, schedule_in=90)  # seconds from now
remind.insert({"who": "bob"}, schedule_in=timedelta(hours=1))  # or a timedelta
remind.insert({"who": "cy"}, schedule_at=start + timedelta(days=1))  # an aware datetime
remind.insert({"who": "di"}, schedule_at=datetime(2000, 1, 1, tzinfo=timezone.utc))  # past

print([job.state.value for job in app.jobs()])
app.drain()  # only di is due: its time has passed
app.advance_clock(90)
app.drain()  # ann
app.advance_clock(timedelta(hours=1) - timedelta(seconds=90))
app.drain()  # bob
app.advance_clock(timedelta(hours=23))
app.drain()  # cy
# --8<-- [end:schedule]

# --8<-- [start:naive]
try:
    remind.insert({"who": "ed"}, schedule_at=datetime(2030, 1, 1))  # no timezone
except kathikon.InvalidJobError as exc:
    print(exc)
# --8<-- [end:naive]
app.close()

# --8<-- [start:recurring]
app = kathikon.Kathikon(path=None, clock="manual")


@app.worker(name="reports.hourly")
def hourly(job: kathikon.Job) -> None:
    print("hourly report", job.args["n"], "at", job.scheduled_at.strftime("%H:%M"))
    # Schedule the next run, as the job's last step.
    hourly.insert({"n": job.args["n"] + 1}, schedule_at=job.scheduled_at + timedelta(hours=1))


hourly.insert({"n": 1}, schedule_at=datetime(2030, 1, 1, 9, tzinfo=timezone.utc))
print(app.drain(with_scheduled=datetime(2030, 1, 1, 11, tzinfo=timezone.utc)))
# --8<-- [end:recurring]
app.close()

# With the system clock, a scheduled job is promoted within milliseconds of its time.
app = kathikon.Kathikon(path=None)
ran: dict[int, float] = {}


@app.worker
def stamp(job: kathikon.Job) -> None:
    ran[job.id] = time.time()


app.start()
jobs = [stamp.insert({}, schedule_in=d) for d in (0.2, 0.4, 0.6)]
deadline = time.monotonic() + 10
while len(ran) < 3 and time.monotonic() < deadline:
    time.sleep(0.01)
app.close()
for job in jobs:
    late = ran[job.id] - job.scheduled_at.timestamp()
    assert -0.001 <= late < 0.25, late
