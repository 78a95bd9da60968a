"""What every sink is: a named destination that either takes an event or raises."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from yolodefect.errors import YoloDefectError


class SinkError(YoloDefectError):
    """Delivering to a sink failed; the dispatcher logs it and retries with backoff."""


class SinkConfigError(YoloDefectError):
    """A sink is configured wrongly (bad URL, missing extra); retrying cannot help, so fail at startup."""


@runtime_checkable
class Sink(Protocol):
    """A delivery destination.

    ``name`` keys the sink's queue in the outbox, so it must be stable across restarts.
    ``send`` returns only once the destination has accepted the event (durably, where the
    protocol can say so) and raises on any failure; it must time out rather than hang.
    """

    name: str

    def send(self, event: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def event_json(event: Mapping[str, Any]) -> str:
    """Compact one-line JSON of an event dict, the payload every sink writes."""
    return json.dumps(dict(event), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def missing_extra(package: str, extra: str) -> SinkConfigError:
    return SinkConfigError(f"this sink needs the '{package}' package: pip install yolodefect[{extra}]")
