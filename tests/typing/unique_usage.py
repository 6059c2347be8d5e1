"""Typing example: unique jobs, declared on a worker and per insert, with replace.

Type-checked by ``make typecheck`` (mypy --strict and pyright in strict mode) and run by
``tests/test_typing_examples.py``.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import kathikon
from kathikon import JobState, Unique

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type

app = kathikon.Kathikon(None, {"default": 1}, clock="manual")


@app.worker(unique=Unique(period=timedelta(minutes=5), keys=("user_id",)))
def sync_user(job: kathikon.Job) -> None:
    pass


class Digest(kathikon.Worker):
    unique = Unique(period=None, fields=("worker",), states=Unique.INCOMPLETE | {"completed"})

    def perform(self, job: kathikon.Job) -> None:
        pass


app.register(Digest)

first = sync_user.insert({"user_id": 7})
again = sync_user.insert({"user_id": 7, "page": 2})
assert_type(again.conflict, bool)
assert again.conflict and again.id == first.id
plain = sync_user.insert({"user_id": 7}, unique=False)
assert not plain.conflict
later = app.insert(Digest, {"day": 1}, schedule_in=60, replace=("scheduled_at", "args"))
moved = app.insert(Digest, {"day": 2}, schedule_in=90, replace=("scheduled_at", "args"))
assert moved.id == later.id and moved.state is JobState.SCHEDULED
spec = sync_user.new({"user_id": 8}, unique=Unique(period=30))
assert [j.conflict for j in app.insert_all([spec, spec])] == [False, True]
app.close()
