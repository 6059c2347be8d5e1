"""Queues and concurrency (docs/guides/queues.md)."""

from __future__ import annotations

# --8<-- [start:example]
import asyncio
import threading
import time

import kathikon

app = kathikon.Kathikon(
    path="jobs.redb",
    queues={"default": 4, "emails": {"concurrency": 2}},  # name → concurrency
)
running = {"default": 0, "emails": 0}
most = {"default": 0, "emails": 0}
lock = threading.Lock()


def track(queue: str, delta: int) -> None:
    with lock:
        running[queue] += delta
        most[queue] = max(most[queue], running[queue])


@app.worker  # queue="default"
def resize(job: kathikon.Job) -> None:
    track("default", 1)
    time.sleep(0.05)
    track("default", -1)


@app.worker(queue="emails")
async def send_email(job: kathikon.Job) -> None:
    track("emails", 1)
    await asyncio.sleep(0.05)
    track("emails", -1)


app.insert_all([resize.new({"n": n}) for n in range(20)])
app.insert_all([send_email.new({"n": n}) for n in range(10)])
print(app.queue_depths())  # {'default': 20, 'emails': 10}

app.start()
while sum(queue["completed"] for queue in app.stats().values()) < 30:
    time.sleep(0.05)
app.stop()
print(most)  # at most each queue's concurrency, e.g. {'default': 4, 'emails': 2}
print(app.stats()["emails"])  # every state, counted
app.close()
# --8<-- [end:example]
assert 1 <= most["default"] <= 4 and 1 <= most["emails"] <= 2, most

# --8<-- [start:select]
app = kathikon.Kathikon(path="jobs.redb", queues={"default": 4, "emails": 2})
app.start(queues=["emails"])  # only this queue, at its configured concurrency
app.stop()
app.start(queues={"default": 1})  # only this queue, one job at a time
app.stop()
# --8<-- [end:select]

# --8<-- [start:locked]
try:
    kathikon.Kathikon(path="jobs.redb")  # the same file, while `app` holds it
except kathikon.StorageLockedError as exc:
    print(type(exc).__name__)
app.close()
# --8<-- [end:locked]

# --8<-- [start:served]
app = kathikon.Kathikon(path="jobs.redb", queues={"default": 1, "reports": 1})


@app.worker(queue="reports")
def report(job: kathikon.Job) -> None:
    pass


report.insert({"month": "2026-11"})
app.start(queues=["default"])  # "reports" left out: its job would wait forever
check = app.check_queue("reports")
print(check.served, check.available)  # False 1
print(check.summary)  # no process runs it: 1 job available, no worker has claimed ...
app.close()
# --8<-- [end:served]
assert not check.served and check.summary.startswith("no process runs it"), check

# Unconfigured queues are refused at decoration, at insert and at start.
app = kathikon.Kathikon(path=None, queues={"default": 1})
try:
    app.worker(queue="emails")(lambda job: None)
except kathikon.ConfigurationError:
    pass
else:
    raise AssertionError("a worker on an unconfigured queue was accepted")


@app.worker
def noop(job: kathikon.Job) -> None:
    pass


try:
    noop.insert({}, queue="emails")
except kathikon.UnknownQueueError:
    pass
else:
    raise AssertionError("an insert into an unconfigured queue was accepted")
try:
    app.start(queues=["emails"])
except kathikon.ConfigurationError:
    pass
else:
    raise AssertionError("start() of an unconfigured queue was accepted")
app.close()
