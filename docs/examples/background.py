"""Running workers in the background (docs/index.md)."""

import time

import kathikon

# --8<-- [start:example]
app = kathikon.Kathikon(path="jobs.redb")


@app.worker
def resize(job: kathikon.Job) -> None:
    time.sleep(0.1)  # the work


app.start()  # worker threads: the "default" queue runs up to 10 jobs at once
jobs = [resize.insert({"image": n}) for n in range(20)]
# ... the rest of the program runs while the jobs do ...
time.sleep(1)
app.stop(timeout=30)  # stop claiming; wait up to 30 s for running jobs
app.close()
# --8<-- [end:example]

app = kathikon.Kathikon(path="jobs.redb")
states = [app.get(j.id).state.value for j in jobs]
assert states == ["completed"] * 20, states
app.close()
