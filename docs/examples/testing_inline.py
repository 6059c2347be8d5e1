"""testing="inline": each insert runs its job at once (docs/testing.md)."""

import kathikon

# --8<-- [start:example]
app = kathikon.Kathikon("jobs.redb", testing="inline")  # or KATHIKON_TESTING=inline


@app.worker(max_attempts=3)
def charge(job: kathikon.Job) -> None:
    if job.args["cents"] <= 0:
        raise ValueError(f"cannot charge {job.args['cents']} cents")


print(charge.insert({"cents": 500}).state.value)  # ran at once, in this thread
failed = charge.insert({"cents": 0})
print(failed.state.value, failed.attempt)  # run once; the retry waits for drain_jobs
print(failed.errors[-1]["error"].splitlines()[-1])
print(charge.insert({"cents": 100}, schedule_in=3600).state.value)  # scheduled jobs run at once too
# --8<-- [end:example]

import os  # noqa: E402

assert not os.path.exists("jobs.redb")
app.close()
