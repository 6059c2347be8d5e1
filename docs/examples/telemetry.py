"""Telemetry (docs/guides/telemetry.md)."""

from __future__ import annotations

import io
import logging
import re

# --8<-- [start:attach]
from collections.abc import Mapping
from typing import Any

import kathikon
from kathikon import telemetry

app = kathikon.Kathikon(path=None)


@app.worker(max_attempts=2)
def flaky(job: kathikon.Job) -> None:
    if job.attempt == 1:
        raise TimeoutError("upstream timed out")


def handler(
    event: tuple[str, ...], measurements: Mapping[str, Any], meta: Mapping[str, Any]
) -> None:
    job = meta.get("job")
    print(".".join(event[1:]), sorted(measurements), job and (job.id, job.state.value))


telemetry.attach(
    "my-handler",  # an id, to detach it by
    [("kathikon", "job", name) for name in ("insert", "start", "stop", "retry", "discard")],
    handler,
)
flaky.insert({})
app.drain(with_scheduled=True)  # run the retry at once too
telemetry.detach("my-handler")
# --8<-- [end:attach]
app.close()

# --8<-- [start:logger]
logging.basicConfig(level=logging.INFO)  # logging is the standard library's
telemetry.attach_default_logger()  # logfmt; format="json" for JSON lines
# --8<-- [end:logger]
telemetry.detach("kathikon-default-logger")

# The default logger's lines, as the page shows them (numbers vary).
stream = io.StringIO()
log = logging.getLogger("docs-example")
log.addHandler(logging.StreamHandler(stream))
log.setLevel(logging.INFO)
log.propagate = False
telemetry.attach_default_logger(logger=log)
app = kathikon.Kathikon(path=None)


@app.worker
def resize(job: kathikon.Job) -> None:
    pass


resize.insert({"image": "cat.png"})
app.drain()
app.close()
telemetry.detach("kathikon-default-logger")
lines = stream.getvalue().splitlines()
number = r"[0-9.e-]+"
patterns = [
    r'event=job\.insert jobs="\[\{\\"id\\": 1, \\"worker\\": \\"__main__\.resize\\", '
    r'\\"queue\\": \\"default\\", \\"attempt\\": 0, \\"state\\": \\"available\\"\}\]" '
    rf"conflict=false count=1 duration={number}",
    r"event=job\.start job\.id=1 job\.worker=__main__\.resize job\.queue=default "
    rf"job\.attempt=1 job\.state=executing queue_time={number}",
    r"event=job\.stop job\.id=1 job\.worker=__main__\.resize job\.queue=default "
    rf"job\.attempt=1 job\.state=executing outcome=complete error=null registered=true "
    rf"duration={number} "
    rf"queue_time={number}",
]
assert len(lines) == len(patterns), lines
for line, pattern in zip(lines, patterns):
    assert re.fullmatch(pattern, line), (line, pattern)

# Every event the docstring's table lists is one telemetry knows, and the reverse.
doc = telemetry.__doc__ or ""
listed = {
    tuple(part.strip('" ') for part in m.split(","))
    for m in re.findall(r'``\(("kathikon"[^)]*)\)``', doc)
}
assert listed == set(telemetry.EVENTS), listed ^ set(telemetry.EVENTS)

# An unknown event or a taken id is refused.
try:
    telemetry.attach("x", [("kathikon", "job", "nope")], handler)
except kathikon.ConfigurationError:
    pass
else:
    raise AssertionError("an unknown event was accepted")
