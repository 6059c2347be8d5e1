"""Queue limits (docs/guides/limits.md): an API quota, one job per customer, fair tenants."""

from __future__ import annotations

# --8<-- [start:quota]
import threading
import time
from collections import Counter

import kathikon

app = kathikon.Kathikon(
    path="jobs.redb",
    queues={
        # At most 20 calls in any 2 seconds, over every process of the store.
        "api": {"concurrency": 10, "rate_limit": {"allowed": 20, "period": 2}},
        # One export per customer at a time, over every process of the store.
        "exports": {
            "concurrency": 4,
            "global_limit": {"allowed": 1, "partition": {"fields": ["args"], "keys": ["customer"]}},
        },
    },
)
called: list[float] = []


@app.worker(queue="api")
def call_api(job: kathikon.Job) -> None:
    called.append(time.monotonic())


app.insert_all([call_api.new({"n": n}) for n in range(30)])
app.start()
while len(called) < 20:
    time.sleep(0.01)
time.sleep(0.5)
print(len(called))  # 20: the rest wait until the first calls are 2 seconds old
# --8<-- [end:quota]

# --8<-- [start:customer]
running: Counter[str] = Counter()
most: Counter[str] = Counter()
order: list[str] = []
lock = threading.Lock()


@app.worker(queue="exports")
def export(job: kathikon.Job) -> None:
    customer = job.args["customer"]
    with lock:
        running[customer] += 1
        most[customer] = max(most[customer], running[customer])
        order.append(customer)
    time.sleep(0.02)
    with lock:
        running[customer] -= 1


jobs = [export.new({"customer": "big"}) for _ in range(20)]
jobs += [export.new({"customer": "small"}) for _ in range(2)]  # inserted last
app.insert_all(jobs)
while len(order) < 22:
    time.sleep(0.01)
print(dict(sorted(most.items())))  # never two of one customer at once
print(order.index("small") < 3)  # True: the small customer is served in the first turn
# --8<-- [end:customer]

# --8<-- [start:runtime]
settings = app.scale_queue("api", rate_limit={"allowed": 100, "period": 60})
print(settings.rate_limit)
print(app.check_queue("exports").global_limit)
app.scale_queue("api", rate_limit=None)  # no limit any more
app.close()
# --8<-- [end:runtime]
