"""Unique jobs (docs/guides/unique.md)."""

from __future__ import annotations

# --8<-- [start:unique]
import kathikon

app = kathikon.Kathikon(path=None, clock="manual")  # a clock that moves only when told


@app.worker(
    unique=kathikon.Unique(
        period=300,  # seconds; None: for as long as the job exists
        fields=("worker", "args"),
        keys=("user_id",),  # compare only this key of args
        states=kathikon.Unique.INCOMPLETE,
    )
)
def sync_user(job: kathikon.Job) -> None:
    print("syncing user", job.args["user_id"], "page", job.args["page"])


job = sync_user.insert({"user_id": 7, "page": 1})
again = sync_user.insert({"user_id": 7, "page": 2})  # same user within 5 minutes
print(again.id == job.id, again.conflict, again.args)
other = sync_user.insert({"user_id": 8, "page": 1})  # another user: a job of its own
print(other.conflict)
print(app.drain())
print(sync_user.insert({"user_id": 7, "page": 3}).conflict)  # completed: not INCOMPLETE
# --8<-- [end:unique]
app.close()

# --8<-- [start:period]
app = kathikon.Kathikon(path=None, clock="manual")


@app.worker(unique=kathikon.Unique(period=60))  # the default fields: worker, queue, args
def digest(job: kathikon.Job) -> None:
    pass


first = digest.insert({"day": "mon"})
app.advance_clock(59)
print(digest.insert({"day": "mon"}).id == first.id)  # within the period: the same job
app.advance_clock(1)
print(digest.insert({"day": "mon"}).id == first.id)  # the period is over: a new job
print(digest.insert({"day": "mon"}, unique=False).conflict)  # this insert is not unique
# --8<-- [end:period]
app.close()

# --8<-- [start:debounce]
app = kathikon.Kathikon(path=None, clock="manual")


@app.worker(unique=kathikon.Unique(period=None, states=kathikon.Unique.INCOMPLETE))
def reindex(job: kathikon.Job) -> None:
    print("reindexing", job.args["doc"], "at +%ds" % (app.now() - start).total_seconds())


start = app.now()
for _ in range(3):  # a burst of edits, 4 s apart
    job = reindex.insert({"doc": 42}, schedule_in=10, replace=("scheduled_at",))
    app.advance_clock(4)
    app.drain()  # never due yet: each insert moved it 10 s on
print(job.conflict, job.scheduled_at - start)  # the one job, due 10 s after the last edit
app.advance_clock(6)
print(app.drain())
# --8<-- [end:debounce]
app.close()

# --8<-- [start:replace]
app = kathikon.Kathikon(path=None, queues={"default": 1, "bulk": 1})


@app.worker(unique=kathikon.Unique(period=None, fields=("worker",)))
def export(job: kathikon.Job) -> None:
    pass


export.insert({"rows": 10})
job = export.insert({"rows": 500}, queue="bulk", replace=("args", "queue"))
print(job.conflict, job.args, job.queue)  # the waiting job now has the new args and queue
# --8<-- [end:replace]
app.close()
