"""Workers and outcomes (docs/guides/workers.md)."""

from __future__ import annotations

# --8<-- [start:define]
import asyncio
from typing import Optional

import kathikon

app = kathikon.Kathikon(path=None, queues={"default": 10, "emails": 5})


@app.worker  # bare: every setting at its default
def resize(job: kathikon.Job) -> None:
    print("resizing", job.args["image"])


@app.worker(queue="emails", max_attempts=5, priority=1, tags=["mail"])
async def send_email(job: kathikon.Job) -> None:  # async def works the same way
    await asyncio.sleep(0)
    print("emailing", job.args["to"])


@app.register  # or app.register(Report) after the class
class Report(kathikon.Worker):
    queue = "default"
    max_attempts = 3

    def perform(self, job: kathikon.Job) -> None:
        print("report", job.args["name"])


# --8<-- [end:define]

# --8<-- [start:names]
print(resize.name)  # __main__.resize: the module and name of the function
print(send_email.queue)  # emails
print(sorted(app.workers))  # every registered name
# --8<-- [end:names]

# --8<-- [start:insert]
resize.insert({"image": "cat.png"})  # the handle's own insert
app.insert(send_email, {"to": "ann@example.com"}, priority=0)  # options override the worker's
app.insert(Report, {"name": "weekly"})  # a Worker class
app.insert("__main__.resize", {"image": "dog.png"})  # or its registered name
app.insert_all([resize.new({"image": f"{n}.png"}) for n in range(3)])  # one commit
print(app.drain())  # {'completed': 7}
# --8<-- [end:insert]


# --8<-- [start:outcomes]
@app.worker
def charge(job: kathikon.Job) -> Optional[kathikon.JobOutcome]:
    if job.args.get("refunded"):
        return kathikon.Cancel("order was refunded")  # → cancelled
    if job.args.get("card") == "expired":
        raise kathikon.Discard("card expired")  # raising works as well as returning
    if job.args.get("bank") == "busy":
        return kathikon.Snooze(60)  # → scheduled again in 60 s; the attempt is given back
    if job.args.get("amount", 0) < 0:
        raise ValueError("negative amount")  # → retryable (or discarded on the last attempt)
    return None  # → completed (any other return value is ignored)


ids = [
    charge.insert(args).id
    for args in (
        {"amount": 5},
        {"refunded": True},
        {"card": "expired"},
        {"bank": "busy"},
        {"amount": -1},
    )
]
print(app.drain())
for job_id in ids:
    job = app.get(job_id)
    last = job.errors[-1]["error"].splitlines()[-1] if job.errors else ""
    print(job.id, job.state, job.attempt, job.max_attempts, last)
# --8<-- [end:outcomes]

# --8<-- [start:read]
print(app.jobs(state="discarded"))  # filtered by state, queue and worker; oldest id first
print(app.jobs(worker=charge, limit=2))  # at most 2 (default 100)
app.close()
# --8<-- [end:read]

# Bad input is refused, naming the value, and nothing is stored.
app = kathikon.Kathikon(path=None)


@app.worker
def noop(job: kathikon.Job) -> None:
    pass


cases: list[tuple[object, str]] = [
    ({"when": object()}, "args['when'] is object"),
    ({1: "x"}, "non-string key 1"),
    ({"x": float("nan")}, "args['x'] is nan"),
]
for bad, fragment in cases:
    try:
        noop.insert(bad)  # type: ignore[arg-type]
    except kathikon.InvalidJobError as exc:
        assert fragment in str(exc), exc
    else:
        raise AssertionError(f"{bad} was accepted")
assert app.jobs() == []
# args come back through JSON: a tuple arrives as a list
assert noop.insert({"pair": (1, 2)}).args == {"pair": [1, 2]}
try:
    app.insert("nobody", {})
except kathikon.UnknownWorkerError:
    pass
else:
    raise AssertionError("an unknown worker name was accepted")
try:
    noop.insert({}, queue="emails")
except kathikon.UnknownQueueError:
    pass
else:
    raise AssertionError("an unknown queue was accepted")
# A sync function's timeout holds in worker processes only: start() without them refuses.
app.worker(name="slow_sync", timeout=5)(lambda job: None)
try:
    app.start()
except kathikon.ConfigurationError as exc:
    assert "only worker processes can enforce" in str(exc)
else:
    raise AssertionError("a sync worker's timeout would not have held")
# The handle stays callable as the plain function.
assert noop(noop.insert({})) is None
app.close()
