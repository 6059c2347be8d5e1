"""Batches (docs/guides/pipelines.md)."""

from __future__ import annotations

# --8<-- [start:batches]
import kathikon

app = kathikon.Kathikon(path=None, queues={"default": 4, "callbacks": 1})


@app.worker
def resize(job: kathikon.Job) -> None:
    if job.args["img"] == "broken.png":
        raise kathikon.Discard("not an image")


@app.worker(queue="callbacks")
def notify(job: kathikon.Job) -> None:  # an ordinary worker
    done = kathikon.BatchCallback.of(job)  # which batch, which event, the final counts
    assert done is not None
    print(f"album {job.args['album']}: {done.event}, counts {done.counts}")


images = ["a.png", "b.png", "broken.png"]
batch = app.insert_batch(
    [resize.new({"img": img}) for img in images],
    on_completed=notify,  # every job completed
    on_discarded=notify,  # all finished, at least one discarded
    on_finished=notify,  # all finished, whatever their state
    args={"album": 3},  # what each callback job gets as its args
)
print(app.batch(batch.id).pending, "to go")
app.insert_batch([resize.new({"img": "c.png"})], batch_id=batch.id)  # join it, while it is open
app.drain()
status = app.batch(batch.id)
print(status.finished, status.counts["completed"], status.counts["discarded"])
print(sorted(event for event, job_id in status.callbacks.items() if job_id is not None))
# --8<-- [end:batches]
app.close()
