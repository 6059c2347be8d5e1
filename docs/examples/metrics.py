"""Metrics history (docs/guides/observability.md)."""

from __future__ import annotations

# --8<-- [start:metrics]
from datetime import timedelta

import kathikon

app = kathikon.Kathikon(path=None, clock="manual")  # a clock that moves only when told
app.advance_clock(60 - app.now().timestamp() % 60)  # to a minute's start: the jobs share it


@app.worker(name="resize")
def resize(job: kathikon.Job) -> None:
    app.advance_clock(job.args["seconds"])  # "takes" that long on the store's clock


for seconds in (0.1, 0.2, 0.3, 0.4, 2.0):
    app.insert("resize", {"seconds": seconds})
    app.drain()

for point in app.metrics(since=timedelta(hours=1)):
    print(point.queue, point.completed, point.failed, point.p50, point.p95)
# --8<-- [end:metrics]
[point] = app.metrics()
assert point.completed == 5 and point.p50 is not None and point.p95 is not None
assert abs(point.p50 - 0.3) <= 0.3 / 16 and abs(point.p95 - 2.0) <= 2.0 / 16
app.close()
