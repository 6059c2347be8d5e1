"""Typing example: a batch of jobs with callbacks, its status, and a callback reading what it
was inserted for.

Type-checked by ``make typecheck`` (mypy --strict and pyright in strict mode) and run by
``tests/test_typing_examples.py``.
"""

from __future__ import annotations

import sys
from typing import Optional

import kathikon

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type

app = kathikon.Kathikon(None, {"default": 2})
events: list[str] = []


@app.worker
def resize(job: kathikon.Job) -> int:
    return int(job.args["img"])


@app.worker
def notify(job: kathikon.Job) -> None:
    callback = kathikon.BatchCallback.of(job)
    assert_type(callback, Optional[kathikon.BatchCallback])
    assert callback is not None
    assert_type(callback.counts, dict[str, int])
    events.append(callback.event)


batch = app.insert_batch(
    [resize.new({"img": i}) for i in range(3)], on_completed=notify, args={"album": 1}
)
assert_type(batch, kathikon.Batch)
assert_type(batch.id, str)
assert_type(batch.jobs, list[kathikon.Job])
assert_type(batch.jobs[0].batch_id, Optional[str])
more = app.insert_batch([resize.new({"img": 9})], batch_id=batch.id)
assert more.id == batch.id
status = app.batch(batch.id)
assert_type(status, kathikon.BatchStatus)
assert_type(status.counts, dict[str, int])
assert_type(status.callbacks, dict[str, Optional[int]])
assert_type(status.finished, bool)
try:
    app.batch("no-such-batch")
except kathikon.BatchNotFoundError as exc:
    assert isinstance(exc, LookupError)

if __name__ == "__main__":
    app.drain()
    assert app.batch(batch.id).finished and events == ["completed"], events
    app.close()
    print("ok")
