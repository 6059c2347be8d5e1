"""The ``dashboard`` workload: the server time to render the dashboard's pages on a store of
10,000, then 100,000, then 1,000,000 jobs (at scale 1) in 10 queues, in process through
Starlette's TestClient (the HTTP round trip without a socket): the overview, the job list's
first page unfiltered, and one queue's jobs in a failure state (1 job of that queue in 100,
spread over the whole store). Each page is rendered ``RENDERS`` times after one warm-up; the
table shows the median.

The store grows in place from one size to the next: the jobs are scheduled a day out (so no
worker runs them), and the failing ones are run by ``drain`` as they are inserted, so each is
discarded with a traceback, as a real failure is.
"""

from __future__ import annotations

import time
from typing import Any

import kathikon

from .workloads import Result, fresh_app, percentiles

SIZES = (10_000, 100_000, 1_000_000)
QUEUES = [f"q{n}" for n in range(10)]
#: Every this many-th job of queue q0 fails (and is discarded).
FAIL_EVERY = 100
BATCH = 10_000
RENDERS = 10
DAY = 86_400.0

#: The pages timed, by the name the table shows: each the URL of today's dashboard.
PAGES = {
    "overview": "/",
    "job list, first page": "/jobs",
    "job list, a queue's failed jobs": f"/jobs?queue={QUEUES[0]}&state=discarded",
}


def _render_ms(client: Any, url: str) -> dict[str, float]:
    assert client.get(url).status_code == 200, url  # warm-up, and a check it renders
    samples = []
    for _ in range(RENDERS):
        start = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, url
    return percentiles(samples)


def workload(scale: float) -> list[Result]:
    try:
        from starlette.testclient import TestClient

        from ..web import asgi_app
    except ImportError as e:
        raise RuntimeError(
            f'the dashboard workload needs the [web] extra and httpx: pip install "kathikon[web]" '
            f"httpx ({e})"
        ) from None
    sizes = sorted({max(1_000, int(n * scale)) for n in SIZES})
    results = []
    with fresh_app(queues=dict.fromkeys(QUEUES, 1), durability="none") as app:

        @app.worker(queue=QUEUES[0])
        def noop(job: kathikon.Job) -> None:
            pass

        @app.worker(queue=QUEUES[0], max_attempts=1)
        def fail(job: kathikon.Job) -> None:
            raise RuntimeError(f"job {job.id} failed")

        client = TestClient(asgi_app(app, read_only=True, refresh=None))
        stored = 0
        for size in sizes:
            while stored < size:
                specs = []
                for i in range(stored, min(size, stored + BATCH)):
                    queue = QUEUES[i % len(QUEUES)]
                    if queue == QUEUES[0] and i // len(QUEUES) % FAIL_EVERY == 0:
                        specs.append(fail.new({"n": i}))
                    else:
                        specs.append(noop.new({"n": i}, queue=queue, schedule_in=DAY))
                app.insert_all(specs)
                app.drain(QUEUES[0])
                stored += len(specs)
            failed = app.count(queue=QUEUES[0], state="discarded")
            for name, url in PAGES.items():
                results.append(
                    Result(
                        f"render {name} @{size:,}",
                        size,
                        durability="none",
                        latency_ms=_render_ms(client, url),
                        extra={"failed_in_queue": failed},
                    )
                )
        client.close()
    return results
