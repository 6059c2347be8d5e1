"""A producer that inserts until a stop file appears: jobs of mp_app.record numbered from
argv[2], one at a time and five at a time, writing "id n" for every job whose insert
returned (one line each, flushed) to stdout. Logs at INFO on stderr, so a takeover of the
store by this process is seen there."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mp_app import app, record

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
stop = Path(sys.argv[1])
n = int(sys.argv[2])
while not stop.exists():
    if n % 10 == 0:
        jobs = app.insert_all(record.new({"n": n + i}) for i in range(5))
    else:
        jobs = [record.insert({"n": n})]
    print("\n".join(f"{job.id} {job.args['n']}" for job in jobs), flush=True)
    n += len(jobs)
app.close()
