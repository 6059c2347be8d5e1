"""Imported only by the bench's worker processes: the module where they find their app.

``start(processes=N)`` spawns fresh interpreters that import the module that created the app;
for the bench that is this one, which creates a client app on the store named by
``KATHIKON_BENCH_STORE``. Nothing else imports it (``kathikon.bench.procs`` is imported by
the command line, so it cannot create an app at import).
"""

from __future__ import annotations

import os

from .procs import STORE_ENV, make_app

app = make_app(os.environ[STORE_ENV])
