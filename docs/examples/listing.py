"""Finding, counting and acting on many jobs (docs/guides/workers.md)."""

from __future__ import annotations

# --8<-- [start:find]
import kathikon

app = kathikon.Kathikon(path=None, clock="manual", queues={"default": 1, "emails": 1})


@app.worker(queue="emails")
def send(job: kathikon.Job) -> None:
    if job.args["to"].endswith(".invalid"):
        raise ValueError("cannot deliver")


for n in range(5):
    send.insert({"to": f"user{n}@example.com", "account": {"id": n % 2}}, tags=["welcome"])
send.insert({"to": "bob@example.invalid", "account": {"id": 1}}, max_attempts=1)
app.drain()

# The newest 2 jobs of queue emails in either of two states, then the next page.
page = app.jobs(queue="emails", state=["completed", "discarded"], order="desc", limit=2)
print([job.id for job in page], page.cursor is not None)
page = app.jobs(
    queue="emails", state=["completed", "discarded"], order="desc", limit=2, cursor=page.cursor
)
print([job.id for job in page])
# Contained JSON: every job whose args hold {"account": {"id": 1}}.
print(app.count(args={"account": {"id": 1}}), app.count(tags=["welcome"], state="completed"))
# Bulk actions: the same filters, each returning how many jobs changed.
print(app.retry_jobs(state="discarded"))
print(app.delete_jobs(state="completed"))  # finished jobs only, unless force=True
print(app.delete_jobs(queue="emails"), app.delete_jobs(queue="emails", force=True))
# --8<-- [end:find]
app.close()
