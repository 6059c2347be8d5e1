"""Job progress and the processes list (docs/guides/observability.md)."""

from __future__ import annotations

# --8<-- [start:progress]
import kathikon

app = kathikon.Kathikon(path=None)


@app.worker
def resize(job: kathikon.Job) -> None:
    images = job.args["images"]
    for i, name in enumerate(images):
        job.progress(i / len(images), f"resizing {name}")  # cheap: call it as often as you like
    job.progress(1.0, "done")


job = resize.insert({"images": ["a.png", "b.png", "c.png"]})
app.drain()
progress = app.progress(job)  # kathikon.Progress, or None if the job never reported
assert progress is not None
print(progress.fraction, progress.note, progress.attempt)

for process in app.processes():  # kathikon.ProcessInfo: this app alone owns its store
    print(process.role, process.jobs, process.queues)
# --8<-- [end:progress]
app.close()
