"""Job results (docs/guides/pipelines.md)."""

from __future__ import annotations

# --8<-- [start:results]
import threading

import kathikon

app = kathikon.Kathikon(path=None, max_result_bytes=64 * 1024)  # default: 1 MiB


@app.worker
def total(job: kathikon.Job) -> dict[str, int]:
    return {"sum": sum(job.args["numbers"])}  # kept as the job's result (JSON)


@app.worker(max_attempts=1)
def broken(job: kathikon.Job) -> None:
    raise ValueError("no such account")


@app.worker(store_result=False)  # returns a value, keeps none
def ping(job: kathikon.Job) -> str:
    return "pong"


job = total.insert({"numbers": [1, 2, 3]})
threading.Timer(0.1, app.drain).start()  # the jobs run elsewhere: another thread, here
print(app.result(job.id, timeout=30))  # waits for the job to finish, woken when it does
print(app.get(job.id).result)  # also on the job itself

pinged = ping.insert()
app.drain()
print(app.result(pinged.id))  # None: nothing kept

failed = broken.insert()
app.drain()
try:
    app.result(failed.id)
except kathikon.JobFailedError as error:
    print(error.job.state, error.job.errors[-1]["error"].splitlines()[-1])

later = total.insert({"numbers": [4]}, schedule_in=3600)
try:
    app.result(later.id, timeout=0.2)
except kathikon.ResultTimeoutError as error:  # also a TimeoutError
    print("not yet:", error.job.state)
# --8<-- [end:results]
app.close()
