"""Typing example: telemetry handlers, as user code writes them.

Type-checked by ``make typecheck`` (mypy --strict and pyright in strict mode) and run by
``tests/test_typing_examples.py``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import kathikon
from kathikon import telemetry

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type

durations: list[float] = []


def on_stop(
    event: tuple[str, ...], measurements: Mapping[str, Any], metadata: Mapping[str, Any]
) -> None:
    job = metadata["job"]
    assert isinstance(job, kathikon.Job)
    durations.append(float(measurements["duration"]))


def returns_something(
    event: tuple[str, ...], measurements: Mapping[str, object], metadata: Mapping[str, object]
) -> bool:
    """A handler's return value is ignored, and object-typed parameters accept anything."""
    return bool(measurements)


telemetry.attach("durations", [("kathikon", "job", "stop")], on_stop)
telemetry.attach("inserts", (("kathikon", "job", "insert"),), returns_something)
telemetry.attach(
    "everything",
    telemetry.EVENTS,
    lambda event, measurements, metadata: print(".".join(event), dict(measurements)),
)
telemetry.attach_default_logger(logging.DEBUG, format="json", handler_id="log")
telemetry.attach_default_logger(logger=logging.getLogger("mine"), handler_id="log2")

assert_type(telemetry.EVENTS, tuple[tuple[str, ...], ...])
assert_type(telemetry.list_handlers(), dict[str, list[tuple[str, ...]]])

if __name__ == "__main__":
    app = kathikon.Kathikon(None)

    @app.worker
    def noop(job: kathikon.Job) -> None:
        pass

    noop.insert()
    app.drain()
    app.close()
    assert len(durations) == 1, durations

for handler_id in ("durations", "inserts", "everything", "log", "log2"):
    assert_type(telemetry.detach(handler_id), bool)
