"""The web dashboard mounted in an existing ASGI application (docs/guides/dashboard.md)."""

from __future__ import annotations

# --8<-- [start:mount]
import hmac

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

import kathikon
from kathikon.web import asgi_app

app = kathikon.Kathikon("jobs.redb", queues={"default": 10, "emails": 5})


def staff_only(request: Request) -> bool:
    """Let in requests whose X-Staff-Key header holds the key (use your own session check)."""
    return hmac.compare_digest(request.headers.get("x-staff-key", ""), "key-from-your-vault")


# With FastAPI it is the same call: fastapi_app.mount("/jobs", asgi_app(...)).
site = Starlette(routes=[Mount("/jobs", asgi_app(app, auth=staff_only))])
# --8<-- [end:mount]

from starlette.testclient import TestClient  # noqa: E402

client = TestClient(site)
assert client.get("/jobs/").status_code == 403  # the auth check refused it
client.headers["x-staff-key"] = "key-from-your-vault"
page = client.get("/jobs/queues")
assert page.status_code == 200 and "emails" in page.text
# With auth configured, actions are allowed: a POST with the page's CSRF token pauses a queue.
token = client.cookies["kathikon_csrf"]
client.post("/jobs/queues/pause", data={"queue": "emails", "csrf": token})
assert app.check_queue("emails").paused
app.close()
