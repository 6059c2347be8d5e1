"""Retries and backoff (docs/guides/retries.md)."""

from __future__ import annotations

from typing import Optional

import kathikon

# --8<-- [start:default]
# clock="manual": time moves only when told, so the delays below are exact to read.
app = kathikon.Kathikon(path=None, clock="manual")


@app.worker(max_attempts=3)
def flaky(job: kathikon.Job) -> None:
    raise ConnectionError(f"attempt {job.attempt} failed")


job = flaky.insert({})
while True:
    app.drain()  # run what is due now
    job = app.get(job.id)
    if job.state != "retryable":
        break
    delay = (job.scheduled_at - app.now()).total_seconds()
    print(f"attempt {job.attempt} failed; retry in {delay:.1f} s")
    app.advance_clock(delay)  # let the backoff pass

print(job.state, job.attempt, job.max_attempts)  # discarded 3 3
for error in job.errors:  # one entry per failed attempt, with its traceback
    print(error["attempt"], error["error"].splitlines()[-1])
# --8<-- [end:default]
app.close()

# --8<-- [start:custom]
app = kathikon.Kathikon(path=None, clock="manual")


@app.worker(max_attempts=5, backoff=lambda job: 10.0 * job.attempt)  # 10 s, 20 s, 30 s, ...
def linear(job: kathikon.Job) -> None:
    raise ConnectionError("down")


class Webhook(kathikon.Worker):
    max_attempts = 5

    def perform(self, job: kathikon.Job) -> None:
        raise ConnectionError("down")

    def backoff(self, job: kathikon.Job) -> Optional[float]:
        if job.args.get("urgent"):
            return 0.5
        return None  # None: the default exponential backoff


app.register(Webhook)
jobs = [linear.insert({}), app.insert(Webhook, {"urgent": True}), app.insert(Webhook, {})]
app.drain()
for job in jobs:
    job = app.get(job.id)
    print(job.worker, (job.scheduled_at - app.now()).total_seconds())
# --8<-- [end:custom]

# --8<-- [start:retry]
job = app.get(jobs[0].id)
app.cancel(job.id)  # give up on it by hand: cancelled
print(app.retry(job.id).state)  # run it again now: available
# --8<-- [end:retry]
app.close()

# The default backoff: 15 s + 2^attempt s, ±10 %.
app = kathikon.Kathikon(path=None, clock="manual")


@app.worker(max_attempts=8)
def fail(job: kathikon.Job) -> None:
    raise RuntimeError("no")


for _ in range(20):
    fail.insert({})
for attempt in range(1, 8):
    app.drain(with_scheduled=True)
    for job in app.jobs(state="retryable"):
        assert job.attempt == attempt
        delay = (job.scheduled_at - app.now()).total_seconds()
        base = 15 + 2**attempt
        assert 0.9 * base - 1e-6 <= delay <= 1.1 * base + 1e-6, (attempt, delay)
app.drain(with_scheduled=True)
assert [j.state.value for j in app.jobs()] == ["discarded"] * 20

# A job that used up its attempts gets one more from retry().
job = app.jobs()[0]
assert (job.attempt, job.max_attempts) == (8, 8)
job = app.retry(job.id)
assert (job.state.value, job.max_attempts) == ("available", 9)
# retry() of an available job returns it unchanged.
assert app.retry(job.id).state == "available"
app.close()

# A backoff that raises falls back to the default.
app = kathikon.Kathikon(path=None, clock="manual")


def broken(job: kathikon.Job) -> float:
    raise ZeroDivisionError


@app.worker(backoff=broken)
def fails(job: kathikon.Job) -> None:
    raise RuntimeError


job = fails.insert({})
app.drain()
delay = (app.get(job.id).scheduled_at - app.now()).total_seconds()
assert 15.3 <= delay <= 18.7, delay
app.close()

# Snooze gives the attempt back by raising max_attempts: attempts never decrease.
app = kathikon.Kathikon(path=None, clock="manual")


@app.worker(max_attempts=1)
def snoozy(job: kathikon.Job) -> Optional[kathikon.Snooze]:
    return kathikon.Snooze(5) if job.attempt < 3 else None


job = snoozy.insert({})
app.drain(with_scheduled=True)
job = app.get(job.id)
assert (job.state.value, job.attempt, job.max_attempts) == ("completed", 3, 3), job
app.close()
