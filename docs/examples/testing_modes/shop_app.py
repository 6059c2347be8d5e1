"""``shop_app``: the app is created when the module is imported, on the production store."""

import os

import kathikon

app = kathikon.Kathikon(
    os.environ.get("SHOP_STORE", "shop-jobs.redb"), queues={"default": 10, "emails": 5}
)
outbox: list[str] = []  # stands in for a mail client


@app.worker(queue="emails", max_attempts=3)
def send_welcome(job: kathikon.Job) -> None:
    outbox.append(job.args["to"])


@app.worker
def sign_up(job: kathikon.Job) -> None:
    send_welcome.insert({"to": job.args["email"]})


def register(email: str) -> kathikon.Job:
    """What a web view calls: create the account (not shown) and its jobs."""
    return sign_up.insert({"email": email})
