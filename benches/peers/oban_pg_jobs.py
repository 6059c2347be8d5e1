"""oban's worker for the peer benchmarks (imported by the adapter and by ``oban start``)."""

from typing import Any

import peermark
from oban import Job, worker


@worker(queue="default")
class Noop:
    async def process(self, job: Job) -> Any:
        peermark.record(job.args["seq"], job.args["t_ref"])
