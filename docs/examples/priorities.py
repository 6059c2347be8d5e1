"""Priorities (docs/guides/priorities.md)."""

# --8<-- [start:example]
from datetime import timedelta

import kathikon

app = kathikon.Kathikon(path=None)


@app.worker(priority=5)  # this worker's default; 0 (first) to 9 (last)
def thumbnail(job: kathikon.Job) -> None:
    print("thumbnail", job.args["n"], "priority", job.priority)


thumbnail.insert({"n": 1})  # priority 5, from the worker
thumbnail.insert({"n": 2}, priority=9)
thumbnail.insert({"n": 3}, priority=0)
thumbnail.insert({"n": 4}, priority=0)
# Same priority: the job due earliest first (here due an hour ago, so before n=3 and n=4).
thumbnail.insert({"n": 5}, priority=0, schedule_at=app.now() - timedelta(hours=1))
app.drain()
# --8<-- [end:example]

# --8<-- [start:invalid]
try:
    thumbnail.insert({"n": 6}, priority=10)
except kathikon.InvalidJobError as exc:
    print(exc)
# --8<-- [end:invalid]
app.close()

# A worker declared with a bad priority fails at decoration.
app = kathikon.Kathikon(path=None)
try:
    app.worker(priority=-1)(lambda job: None)
except kathikon.ConfigurationError:
    pass
else:
    raise AssertionError("priority=-1 was accepted")
app.close()
