"""``myapp.jobs``: an app and its workers, as ``kathikon worker myapp.jobs:app`` imports them."""

import os

import kathikon

# Where the store lives is the application's choice; this one reads an environment variable.
app = kathikon.Kathikon(
    path=os.environ.get("MYAPP_STORE", "jobs.redb"),
    queues={"default": 10, "emails": 5},
)


@app.worker(queue="emails", max_attempts=3)
def send_email(job: kathikon.Job) -> None:
    if job.args["to"].endswith(".invalid"):
        raise ValueError(f"cannot deliver to {job.args['to']}")
    print("sent to", job.args["to"], flush=True)


@app.worker
def cleanup(job: kathikon.Job) -> None:
    print("cleaned up", flush=True)
