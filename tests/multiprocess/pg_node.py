"""One node: pg_app's app in a process of its own, on the test's database.

``pg_node.py [--insert N] [--idle]``: runs the app's workers (unless ``--idle``: a web node,
which inserts and may lead but runs no job), notes ``ready`` in the side file, inserts N jobs of
``pg_app.record`` one by one (their ids on one stdout line, then ``inserted`` in the side file),
and keeps running until SIGTERM, when it stops its workers and closes the app.
"""

from __future__ import annotations

import argparse
import signal
import threading

from pg_app import app, note, record

parser = argparse.ArgumentParser()
parser.add_argument("--insert", type=int, default=0)
parser.add_argument("--idle", action="store_true")
options = parser.parse_args()

assert app.role == "node", app.role
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
if not options.idle:
    app.start()
note("ready")
if options.insert:
    ids = [record.insert({"n": n}).id for n in range(options.insert)]
    print(" ".join(map(str, ids)), flush=True)
    note("inserted", len(ids))
while not stop.wait(0.2):
    pass
if not options.idle:
    app.stop(timeout=10)
app.close()
