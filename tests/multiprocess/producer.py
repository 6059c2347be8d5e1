"""A producer process: opens the store (held by the worker, so it becomes a client), inserts
jobs one by one and in batches, and writes the id of every insert that returned to stdout."""

from __future__ import annotations

import sys

from mp_app import app, record

count = int(sys.argv[1])
# Seconds each job sleeps on every attempt (argv[2], default 0).
sleep = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
args = {"sleep": sleep, "sleep_all": True} if sleep else {}
assert app.role == "client", app.role
done = 0
while done < count:
    if done % 10 == 0 and count - done >= 5:
        jobs = app.insert_all(record.new({"n": done + i, **args}) for i in range(5))
        ids = [j.id for j in jobs]
    else:
        ids = [record.insert({"n": done, **args}).id]
    done += len(ids)
    print("\n".join(map(str, ids)), flush=True)
app.close()
