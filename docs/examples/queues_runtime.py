"""Queues controlled at runtime (docs/guides/queues.md, "Changing queues at runtime")."""

from __future__ import annotations

# --8<-- [start:pause]
import time

import kathikon

app = kathikon.Kathikon(path="jobs.redb", queues={"default": 2, "emails": 2})
sent: list[str] = []


@app.worker(queue="emails")
def send_email(job: kathikon.Job) -> None:
    sent.append(job.args["to"])


app.start()
app.pause_queue("emails")  # from here on no email starts, in any process of the store
send_email.insert({"to": "ada@example.com"})
time.sleep(0.5)
print(sent, app.check_queue("emails").paused)  # [] True
app.resume_queue("emails")  # idle workers take the job at once
while not sent:
    time.sleep(0.01)
print(sent)  # ['ada@example.com']
# --8<-- [end:pause]

# --8<-- [start:scale]
app.scale_queue("emails", 5)  # every worker of the store, within a second
check = app.check_queue("emails")
print(check.concurrency, check.configured_concurrency)  # 5 2
app.scale_queue("emails", None)  # back to each worker's configured concurrency

app.start_queue("imports", 3)  # not in the constructor: now it runs, and takes inserts
send_email.insert({"to": "bob@example.com"}, queue="imports")
while len(sent) < 2:
    time.sleep(0.01)
app.stop_queue("imports")  # no worker claims from it; its jobs stay stored
print(app.check_queue("imports").summary)
for queue in app.queues():
    print(queue.queue, queue.paused, queue.stopped, queue.concurrency)
app.close()
# --8<-- [end:scale]

# The settings are stored: a new app on the file sees them.
app = kathikon.Kathikon(path="jobs.redb", queues={"default": 2, "emails": 2})
assert app.check_queue("imports").stopped and app.check_queue("imports").started == 3
app.close()
