"""The quick start (docs/index.md)."""

# --8<-- [start:example]
import kathikon

app = kathikon.Kathikon(path="jobs.redb", queues={"default": 10, "emails": 5})


@app.worker(queue="emails", max_attempts=5)
def send_email(job: kathikon.Job) -> None:
    print("sending to", job.args["to"])


job = send_email.insert({"to": "ann@example.com"})  # on disk when it returns
print(job.state)  # available

print(app.drain())  # run what is due, in this thread: {'completed': 1}
print(app.get(job.id).state)  # completed
app.close()
# --8<-- [end:example]

# What the page says it prints.
app = kathikon.Kathikon(path="jobs.redb", queues={"default": 10, "emails": 5})
stored = app.get(job.id)
assert stored.state == "completed" and stored.attempt == 1, stored
assert job.state is kathikon.JobState.AVAILABLE
assert str(job.state) == "available"
app.close()
