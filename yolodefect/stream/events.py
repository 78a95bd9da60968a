"""The inspection event: one record per inspected part, the unit every sink delivers.

The dict form (``Event.to_dict``) is the wire format. It is described by ``event.schema.json`` beside
this module; consumers de-duplicate on ``event_id`` because delivery is at-least-once.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from typing import Any, Literal, cast, get_args

from yolodefect.errors import YoloDefectError
from yolodefect.inference.model_file import ModelFile

# Version 2 (issue #17) added the alarm events ("drift", "camera_fault") with their ``alarm`` record, and the
# ``thresholds`` a part was decided with. Version 1 events (an outbox written before the upgrade) still read.
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)

Decision = Literal["reject", "pass", "error", "drift", "camera_fault"]
DECISIONS: tuple[str, ...] = get_args(Decision)
PART_DECISIONS: tuple[str, ...] = ("reject", "pass", "error")  # the rest are station alarms, not parts
ALARM_DECISIONS: tuple[str, ...] = ("drift", "camera_fault")
AlarmState = Literal["raised", "cleared"]

# UTC only: line events are compared across stations and PLCs, so a local offset would be a bug waiting.
_UTC_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class EventError(YoloDefectError):
    """An event record is malformed; the message names the field and what it must be."""


def utc_now_iso() -> str:
    """Current time as ISO 8601 UTC with millisecond precision and a ``Z`` suffix."""
    return to_utc_iso(datetime.now(timezone.utc))


def to_utc_iso(moment: datetime) -> str:
    """Format an aware datetime as ISO 8601 UTC (``...Z``)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        # A naive time could be local or UTC; guessing would silently shift events by hours.
        raise EventError(
            f"timestamp {moment.isoformat()} has no time zone; pass an aware datetime "
            "(e.g. datetime.now(timezone.utc))"
        )
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_utc(name: str, value: object) -> str:
    if not isinstance(value, str) or not _UTC_TIMESTAMP.match(value):
        raise EventError(
            f"{name}={value!r} is not an ISO 8601 UTC timestamp; expected e.g. '2024-05-01T12:00:00.000Z'"
        )
    return value


@dataclass(frozen=True)
class Defect:
    """One detected defect on the part."""

    class_name: str
    confidence: float
    bbox_xyxy: tuple[float, float, float, float]
    # Class 'anomaly' (watch --anomaly): the anomaly model's raw score, of which ``confidence`` is the mapping
    # to (0, 1). None (absent from the dict) for a detector's defect.
    anomaly_score: float | None = None

    def __post_init__(self) -> None:
        if not self.class_name:
            raise EventError("defect class_name is empty; use the model's class name")
        if not (0.0 <= float(self.confidence) <= 1.0):
            raise EventError(f"defect confidence {self.confidence} is outside [0, 1]")
        if len(self.bbox_xyxy) != 4 or not all(math.isfinite(float(v)) for v in self.bbox_xyxy):
            raise EventError(f"defect bbox_xyxy {self.bbox_xyxy!r} must be 4 finite numbers (x1, y1, x2, y2)")
        if self.anomaly_score is not None and not (math.isfinite(float(self.anomaly_score)) and self.anomaly_score >= 0):
            raise EventError(f"defect anomaly_score {self.anomaly_score} must be a finite number >= 0")

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.class_name,
            "confidence": float(self.confidence),
            "bbox_xyxy": [float(v) for v in self.bbox_xyxy],
            **({"anomaly_score": float(self.anomaly_score)} if self.anomaly_score is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Defect:
        try:
            x1, y1, x2, y2 = (float(v) for v in data["bbox_xyxy"])
            score = data.get("anomaly_score")
            return cls(class_name=str(data["class"]), confidence=float(data["confidence"]), bbox_xyxy=(x1, y1, x2, y2),
                       anomaly_score=None if score is None else float(score))
        except (KeyError, TypeError, ValueError) as exc:
            raise EventError(f"defect {data!r} is malformed ({exc}); expected class, confidence, bbox_xyxy[4]") from exc


@dataclass(frozen=True)
class ModelIdentity:
    """Which model made the decision, so a reject can be traced back to exact weights (the event's ``model``)."""

    name: str
    sha256: str
    precision: str

    def __post_init__(self) -> None:
        if not _SHA256.match(self.sha256):
            raise EventError(f"model sha256 {self.sha256!r} is not 64 lowercase hex digits; hash the weights file")
        if not self.name or not self.precision:
            raise EventError("model name and precision must be non-empty (e.g. 'best.pt', 'fp16')")

    @classmethod
    def of(cls, model: ModelFile) -> ModelIdentity:
        """The identity of a model file: the one place it is taken from the file."""
        return cls(name=model.name, sha256=model.sha256, precision=model.precision)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "precision": self.precision}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelIdentity:
        try:
            return cls(name=str(data["name"]), sha256=str(data["sha256"]), precision=str(data["precision"]))
        except (KeyError, TypeError) as exc:
            raise EventError(f"model {data!r} is malformed; expected name, sha256, precision") from exc


@dataclass(frozen=True)
class Alarm:
    """A station alarm (events with decision ``drift`` or ``camera_fault``): raised, then cleared by a second event.

    ``features`` says what moved and how far, by feature name (for drift: the test's numbers, e.g. ``psi``,
    ``p_value``, ``reference_median``, ``window_median``; for a camera fault: the frame measure that tripped it).
    """

    state: AlarmState
    reason: str
    features: dict[str, dict[str, float]] = field(default_factory=dict)
    alarm_id: str | None = None  # the raising event's id, on the clearing event: pairs the two

    def __post_init__(self) -> None:
        if self.state not in ("raised", "cleared"):
            raise EventError(f"alarm state {self.state!r} must be 'raised' or 'cleared'")
        if not self.reason:
            raise EventError("an alarm needs a reason saying what moved or failed")

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason,
                "features": {name: {k: float(v) for k, v in values.items()} for name, values in self.features.items()},
                **({"alarm_id": self.alarm_id} if self.alarm_id else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alarm:
        try:
            return cls(state=cast(AlarmState, data["state"]), reason=str(data["reason"]),
                       features={str(n): {str(k): float(v) for k, v in values.items()}
                                 for n, values in (data.get("features") or {}).items()},
                       alarm_id=data.get("alarm_id"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EventError(f"alarm {data!r} is malformed ({exc}); expected state, reason, features") from exc


@dataclass(frozen=True)
class Event:
    """One inspection result. Build it with :func:`new_event`, which fills the id and emission time."""

    event_id: str
    decision: Decision
    source: str
    frame_index: int
    captured_at: str
    emitted_at: str
    latency_ms: float
    part_id: str | int | None
    defects: list[Defect]
    image_size_wh: tuple[int, int]
    model: ModelIdentity
    snapshot_paths: dict[str, str] = field(default_factory=dict)
    message: str | None = None
    # On a moving line: the part's box on the event's frame (frame pixels); None where a frame is a part.
    part_bbox_xyxy: tuple[float, float, float, float] | None = None
    # The anomaly model the station ran beside the detector (watch --anomaly); None when it ran none.
    anomaly_model: ModelIdentity | None = None
    # The per-class confidence thresholds the part was decided with (schema 2); None where not recorded.
    thresholds: dict[str, float] | None = None
    # Decisions "drift" and "camera_fault" only: what the alarm is about, raised or cleared.
    alarm: Alarm | None = None

    def __post_init__(self) -> None:
        try:
            uuid.UUID(self.event_id)
        except (ValueError, AttributeError, TypeError) as exc:
            raise EventError(f"event_id {self.event_id!r} is not a UUID; let new_event() generate it") from exc
        if self.decision not in DECISIONS:
            raise EventError(f"decision {self.decision!r} must be one of {', '.join(DECISIONS)}")
        _check_utc("captured_at", self.captured_at)
        _check_utc("emitted_at", self.emitted_at)
        if self.frame_index < 0:
            raise EventError(f"frame_index {self.frame_index} must be >= 0")
        if not math.isfinite(self.latency_ms) or self.latency_ms < 0:
            raise EventError(f"latency_ms {self.latency_ms} must be a finite number >= 0")
        if isinstance(self.part_id, bool) or not isinstance(self.part_id, (str, int, type(None))):
            raise EventError(f"part_id {self.part_id!r} must be a string, an integer or None")
        if len(self.image_size_wh) != 2 or min(self.image_size_wh) <= 0:
            raise EventError(f"image_size_wh {self.image_size_wh!r} must be two positive integers (width, height)")
        if self.part_bbox_xyxy is not None and (
                len(self.part_bbox_xyxy) != 4 or not all(math.isfinite(float(v)) for v in self.part_bbox_xyxy)):
            raise EventError(f"part_bbox_xyxy {self.part_bbox_xyxy!r} must be 4 finite numbers (x1, y1, x2, y2)")
        if self.decision == "error" and not self.message:
            # An error event without a reason cannot be acted on at the line.
            raise EventError("an 'error' event needs a message saying what failed")
        if (self.decision in ALARM_DECISIONS) != (self.alarm is not None):
            raise EventError(f"decision {self.decision!r} " + ("needs an alarm record" if self.alarm is None
                                                              else "cannot carry an alarm record"))
        if self.thresholds is not None and not all(
                isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0 for v in self.thresholds.values()):
            raise EventError(f"thresholds {self.thresholds!r} must map class names to confidences in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "event_id": self.event_id,
            "decision": self.decision,
            "source": self.source,
            "frame_index": int(self.frame_index),
            "captured_at": self.captured_at,
            "emitted_at": self.emitted_at,
            "latency_ms": float(self.latency_ms),
            "part_id": self.part_id,
            "defects": [d.to_dict() for d in self.defects],
            "image_size": [int(self.image_size_wh[0]), int(self.image_size_wh[1])],
            "model": self.model.to_dict(),
            "snapshot_paths": dict(self.snapshot_paths),
            "message": self.message,
            **({"part_bbox_xyxy": [float(v) for v in self.part_bbox_xyxy]} if self.part_bbox_xyxy is not None else {}),
            **({"anomaly_model": self.anomaly_model.to_dict()} if self.anomaly_model is not None else {}),
            **({"thresholds": {k: float(v) for k, v in self.thresholds.items()}} if self.thresholds is not None else {}),
            **({"alarm": self.alarm.to_dict()} if self.alarm is not None else {}),
        }

    def to_json(self) -> str:
        """Compact one-line JSON (suits JSONL files and MQTT payloads)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        version = data.get("schema_version", SCHEMA_VERSION)
        if version not in READABLE_SCHEMA_VERSIONS:
            raise EventError(
                f"event schema_version {version!r} is not supported (this yolodefect reads "
                f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}); upgrade yolodefect"
            )
        try:
            width, height = (int(v) for v in data["image_size"])
            return cls(
                event_id=str(data["event_id"]),
                decision=cast(Decision, data["decision"]),
                source=str(data["source"]),
                frame_index=int(data["frame_index"]),
                captured_at=data["captured_at"],
                emitted_at=data["emitted_at"],
                latency_ms=float(data["latency_ms"]),
                part_id=data.get("part_id"),
                defects=[Defect.from_dict(d) for d in data.get("defects") or []],
                image_size_wh=(width, height),
                model=ModelIdentity.from_dict(data["model"]),
                snapshot_paths={str(k): str(v) for k, v in (data.get("snapshot_paths") or {}).items()},
                message=data.get("message"),
                part_bbox_xyxy=tuple(float(v) for v in data["part_bbox_xyxy"]) if data.get("part_bbox_xyxy") else None,
                anomaly_model=ModelIdentity.from_dict(data["anomaly_model"]) if data.get("anomaly_model") else None,
                thresholds={str(k): float(v) for k, v in data["thresholds"].items()} if data.get("thresholds") else None,
                alarm=Alarm.from_dict(data["alarm"]) if data.get("alarm") else None,
            )
        except KeyError as exc:
            raise EventError(f"event is missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise EventError(f"event {data.get('event_id', '?')} is malformed: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EventError(f"event is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise EventError("event JSON must be an object")
        return cls.from_dict(data)


def new_event(
    *,
    decision: Decision,
    source: str,
    frame_index: int,
    captured_at: datetime | str,
    latency_ms: float,
    image_size_wh: tuple[int, int],
    model: ModelIdentity,
    defects: Sequence[Defect] = (),
    part_id: str | int | None = None,
    snapshot_paths: Mapping[str, str] | None = None,
    message: str | None = None,
    part_bbox_xyxy: tuple[float, float, float, float] | None = None,
    anomaly_model: ModelIdentity | None = None,
    thresholds: Mapping[str, float] | None = None,
    alarm: Alarm | None = None,
) -> Event:
    """Create an event with a fresh uuid4 ``event_id`` and ``emitted_at`` set to now (UTC)."""
    captured = to_utc_iso(captured_at) if isinstance(captured_at, datetime) else captured_at
    return Event(
        event_id=str(uuid.uuid4()),
        decision=decision,
        source=source,
        frame_index=frame_index,
        captured_at=captured,
        emitted_at=utc_now_iso(),
        latency_ms=float(latency_ms),
        part_id=part_id,
        defects=list(defects),
        image_size_wh=(int(image_size_wh[0]), int(image_size_wh[1])),
        model=model,
        snapshot_paths=dict(snapshot_paths or {}),
        message=message,
        part_bbox_xyxy=part_bbox_xyxy,
        anomaly_model=anomaly_model,
        thresholds=None if thresholds is None else {str(k): float(v) for k, v in thresholds.items()},
        alarm=alarm,
    )


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``Event.to_dict()``, shipped as package data."""
    text = resources.files(__package__).joinpath("event.schema.json").read_text(encoding="utf-8")
    return cast(dict[str, Any], json.loads(text))
