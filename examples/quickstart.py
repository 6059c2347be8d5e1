"""Kathikon quick start: define workers, insert jobs, run them in the background.

Run it with `make quickstart` (or `python examples/quickstart.py` once kathikon is installed).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import kathikon

store = Path(tempfile.mkdtemp()) / "jobs.redb"
app = kathikon.Kathikon(path=store, queues={"default": 10, "emails": 5})


# backoff: seconds before a retry (the default grows exponentially from about 17 s)
@app.worker(queue="emails", max_attempts=3, backoff=lambda job: 0.2)
def send_email(job: kathikon.Job) -> None:
    print(f"  sending to {job.args['email']} (attempt {job.attempt})")
    if job.args["email"].startswith("flaky") and job.attempt == 1:
        raise ConnectionError("SMTP server went away")


@app.worker
async def fetch(job: kathikon.Job) -> None:
    await asyncio.sleep(0.01)
    print(f"  fetched {job.args['url']}")


class Report(kathikon.Worker):
    queue = "default"

    def perform(self, job: kathikon.Job) -> kathikon.Snooze | None:
        if job.attempt == 1:
            return kathikon.Snooze(0.3)  # not ready yet: try again shortly, attempt not used up
        print(f"  report {job.args['name']} done")
        return None


app.register(Report)

print("inserting (each insert is fsync'd before it returns)")
jobs = [
    send_email.insert({"email": "a@example.com"}),
    send_email.insert({"email": "flaky@example.com"}, schedule_in=0.1),  # retried once
    *app.insert_all([fetch.new({"url": f"https://example.com/{i}"}) for i in range(3)]),
    app.insert(Report, {"name": "weekly"}, priority=0),
]

with app:  # workers run in background threads for the block
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(not app.get(j.id).state.finished for j in jobs):
        time.sleep(0.05)

app = kathikon.Kathikon(path=store)  # reopen: everything is still there
print("final states:")
for job in app.jobs():
    name = job.worker.rsplit(".", 1)[-1]
    print(f"  #{job.id} {name:<12} {job.state.value:<10} attempts={job.attempt}")
assert all(job.state is kathikon.JobState.COMPLETED for job in app.jobs())
app.close()
print("all jobs completed")
