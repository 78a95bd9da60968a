"""Event records: round trip, wire field names, schema validation, UTC timestamps."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from yolodefect.errors import YoloDefectError
from yolodefect.stream.events import Defect, Event, EventError, ModelIdentity, load_schema, utc_now_iso
from tests.builders import make_event_record

jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (dev dependency) to validate events")

MODEL = ModelIdentity(name="best.pt", sha256="ab" * 32, precision="fp16")


def full_event(decision: str = "reject", **overrides: Any) -> Event:
    """A station event with every optional field filled, so the schema and the JSON form are exercised whole."""
    fields: dict[str, Any] = dict(
        source="rtsp://cam1",
        latency_ms=18.25,
        image_size_wh=(1280, 720),
        model=MODEL,
        defects=[Defect("scratch", 0.91, (10.0, 20.0, 110.5, 220.0)), Defect("dent", 0.5, (0, 0, 5, 5))]
        if decision == "reject"
        else [],
        part_id="P-0001",
        snapshot_paths={"raw": "/snap/42.jpg", "annotated": "/snap/42_ann.jpg"},
        message="camera timeout" if decision == "error" else None,
    )
    fields.update(overrides)
    return make_event_record(42, decision, **fields)


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_wire_field_names() -> None:
    data = full_event().to_dict()
    assert set(data) == {
        "schema_version", "event_id", "decision", "source", "frame_index", "captured_at", "emitted_at",
        "latency_ms", "part_id", "defects", "image_size", "model", "snapshot_paths", "message",
    }
    assert data["defects"][0] == {"class": "scratch", "confidence": 0.91, "bbox_xyxy": [10.0, 20.0, 110.5, 220.0]}
    assert data["image_size"] == [1280, 720]
    assert data["model"] == {"name": "best.pt", "sha256": "ab" * 32, "precision": "fp16"}
    assert data["schema_version"] == 2


@pytest.mark.parametrize("decision", ["reject", "pass", "error"])
def test_round_trip_dict_and_json(decision: str) -> None:
    event = full_event(decision)
    assert Event.from_dict(event.to_dict()) == event
    assert Event.from_json(event.to_json()) == event
    # JSON is one line: JSONL files and MQTT payloads depend on it.
    assert "\n" not in event.to_json()
    assert json.loads(event.to_json()) == event.to_dict()


def test_new_event_fills_id_and_emitted_at() -> None:
    a, b = full_event(), full_event()
    assert uuid.UUID(a.event_id).version == 4
    assert a.event_id != b.event_id
    emitted = datetime.fromisoformat(a.emitted_at.replace("Z", "+00:00"))
    assert emitted.utcoffset() == timedelta(0)
    assert abs((datetime.now(timezone.utc) - emitted).total_seconds()) < 5


def test_captured_at_is_converted_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    event = full_event(captured_at=datetime(2024, 5, 1, 14, 0, 0, 123000, tzinfo=plus_two))
    assert event.captured_at == "2024-05-01T12:00:00.123Z"
    assert utc_now_iso().endswith("Z")


def test_naive_or_non_utc_timestamps_are_refused() -> None:
    with pytest.raises(EventError, match="time zone"):
        full_event(captured_at=datetime(2024, 5, 1, 12, 0, 0))
    with pytest.raises(EventError, match="UTC"):
        full_event(captured_at="2024-05-01T14:00:00+02:00")
    # +00:00 is UTC too
    assert full_event(captured_at="2024-05-01T12:00:00+00:00").captured_at.endswith("+00:00")


@pytest.mark.parametrize("decision", ["reject", "pass", "error"])
def test_emitted_events_validate_against_schema(validator: Any, decision: str) -> None:
    validator.validate(full_event(decision).to_dict())
    validator.validate(full_event(decision, part_id=7).to_dict())
    validator.validate(full_event(decision, part_id=None, snapshot_paths={}).to_dict())


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("event_id"),
        lambda d: d.update(decision="maybe"),
        lambda d: d.update(emitted_at="2024-05-01T14:00:00+02:00"),
        lambda d: d.update(image_size=[640]),
        lambda d: d.update(extra_field=1),
        lambda d: d["defects"][0].update(confidence=1.5),
        lambda d: d["model"].update(sha256="not-a-hash"),
        lambda d: d.update(decision="error", message=None),
    ],
)
def test_schema_rejects_malformed_events(validator: Any, mutate: Any) -> None:
    data = full_event().to_dict()
    mutate(data)
    assert not validator.is_valid(data)


def test_from_dict_names_the_missing_field() -> None:
    data = full_event().to_dict()
    del data["source"]
    with pytest.raises(EventError, match="'source'"):
        Event.from_dict(data)
    with pytest.raises(YoloDefectError, match="schema_version"):
        Event.from_dict({**full_event().to_dict(), "schema_version": 99})


def test_invalid_values_raise_actionable_errors() -> None:
    with pytest.raises(EventError, match="message"):
        full_event("error", message=None)
    with pytest.raises(EventError, match="decision"):
        full_event(decision="maybe")
    with pytest.raises(EventError, match="sha256"):
        ModelIdentity("m.pt", "abc", "fp32")
    with pytest.raises(EventError, match="confidence"):
        Defect("scratch", 1.2, (0, 0, 1, 1))


def alarm_event(decision: str = "drift", state: str = "raised", **overrides: Any) -> Event:
    from yolodefect.stream.events import Alarm

    alarm = Alarm(state=state, reason="brightness moved away from the reference profile",
                  features={"brightness": {"psi": 1.8, "p_value": 1e-9, "reference_median": 121.0,
                                           "window_median": 84.0}},
                  alarm_id=None if state == "raised" else str(uuid.uuid4()))
    fields: dict[str, Any] = dict(source="cam0", latency_ms=0.0, image_size_wh=(640, 360), model=MODEL,
                                  message="drift raised: brightness", alarm=alarm)
    fields.update(overrides)
    return make_event_record(7, decision, **fields)


@pytest.mark.parametrize("decision,state", [("drift", "raised"), ("drift", "cleared"), ("camera_fault", "raised")])
def test_alarm_events_round_trip_and_validate(validator: Any, decision: str, state: str) -> None:
    event = alarm_event(decision, state)
    data = json.loads(event.to_json())
    validator.validate(data)
    assert data["schema_version"] == 2 and data["alarm"]["state"] == state
    assert data["alarm"]["features"]["brightness"]["window_median"] == 84.0
    assert Event.from_json(event.to_json()) == event


def test_an_alarm_decision_needs_its_alarm_and_a_part_decision_has_none(validator: Any) -> None:
    with pytest.raises(EventError, match="needs an alarm record"):
        alarm_event(alarm=None)
    with pytest.raises(EventError, match="cannot carry an alarm record"):
        alarm_event("reject")
    data = full_event().to_dict()
    data["alarm"] = {"state": "raised", "reason": "x", "features": {}}
    assert not validator.is_valid(data)
    data = alarm_event().to_dict()
    del data["alarm"]
    assert not validator.is_valid(data)


def test_thresholds_recorded_and_version_1_events_still_read(validator: Any) -> None:
    event = full_event(thresholds={"scratch": 0.25, "dent": 0.4})
    data = event.to_dict()
    validator.validate(data)
    assert data["thresholds"] == {"scratch": 0.25, "dent": 0.4}
    old = full_event().to_dict()
    old["schema_version"] = 1  # an outbox written by the previous release
    validator.validate(old)
    assert Event.from_dict(old).thresholds is None
    with pytest.raises(EventError, match="schema_version 3"):
        Event.from_dict({**old, "schema_version": 3})
