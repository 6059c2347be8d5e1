"""An owner process that runs no jobs: it opens the store, says so, and waits to be killed."""

from __future__ import annotations

import time

from mp_app import app

assert app.role == "owner", app.role
print("owner ready", flush=True)
while True:
    time.sleep(1)
