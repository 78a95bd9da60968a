"""watch with a reference profile: a step change in lighting on the line raises one drift alarm and its clearance,
in order, through the outbox to a real Mosquitto broker and a JSONL file; warn mode only logs and shows it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from tests.test_sinks_mqtt import Broker, Subscriber, wait_until
from yolodefect.data.synth import render_part
from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.evaluation.profile import build_profile, write_profile
from yolodefect.inference.rules import build_reject_rules
from yolodefect.stream.drift import DriftMonitor, image_observation
from yolodefect.stream.events import Event, load_schema
from yolodefect.stream.options import WatchOptions
from yolodefect.stream.watch import watch

SIZE_WH = (96, 72)
NAMES = ["scratch"]
WINDOW = 20
NORMAL, DARK, BACK = 60, 60, 90  # parts: as the reference, then darker lighting (x0.7), then as before
TOPIC = "line1/drift"


class NothingFound:
    class_names = NAMES

    def __call__(self, image: np.ndarray) -> Detections:
        return Detections.empty()


def write_parts(folder: Path, count: int, seed: int, gain: float = 1.0, start: int = 0) -> list[Path]:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(start, start + count):
        grey, _ = render_part("steel", rng, SIZE_WH, [])
        path = folder / f"part{index:04d}.png"
        cv2.imwrite(str(path), np.clip(grey.astype(np.float64) * gain, 0, 255).astype(np.uint8))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    """(profile.json, the line's folder, its images in order)."""
    root = tmp_path_factory.mktemp("drift")
    reference = write_parts(root / "val", 200, seed=1)
    rules = build_reject_rules(thresholds=None, conf=0.5)
    profile = build_profile(reference, [Detections.empty()] * len(reference), NAMES, rules, split="val",
                            model="fake.pt", reject_rate=0.0)
    profile_path = write_profile(profile, root / "profile.json")
    folder = root / "line"
    images = (write_parts(folder, NORMAL, seed=2) + write_parts(folder, DARK, seed=3, gain=0.7, start=NORMAL)
              + write_parts(folder, BACK, seed=4, start=NORMAL + DARK))
    return profile_path, folder, images


def expected_changes(profile_path: Path, images: list[Path]) -> list[tuple[str, int]]:
    """What the monitor makes of the line's images on their own: (state, frame index) of each change."""
    from yolodefect.evaluation.profile import read_profile

    monitor = DriftMonitor(read_profile(profile_path), window=WINDOW)
    changes = []
    for index, path in enumerate(images):
        change = monitor.update(image_observation(cv2.imread(str(path)), 0.0, 0))
        if change is not None:
            changes.append((change.state, index))
    return changes


def test_drift_alarm_and_clearance_arrive_in_order_through_the_outbox_and_mosquitto(
        tmp_path: Path, line: tuple[Path, Path, list[Path]]) -> None:
    profile_path, folder, images = line
    expected = expected_changes(profile_path, images)
    assert [state for state, _ in expected] == ["raised", "cleared"]
    raised_at, cleared_at = (index for _, index in expected)
    assert NORMAL < raised_at <= NORMAL + WINDOW and NORMAL + DARK < cleared_at <= NORMAL + DARK + WINDOW + 3

    broker = Broker(tmp_path)
    broker.start()
    try:
        subscriber = Subscriber(broker.port, TOPIC)
        try:
            jsonl = tmp_path / "events.jsonl"
            options = WatchOptions(source=str(folder), profile=profile_path, drift_window=WINDOW,
                                   sinks=(f"mqtt://127.0.0.1:{broker.port}/{TOPIC}", str(jsonl)),
                                   outbox=tmp_path / "outbox.sqlite", flush_timeout_s=10.0)
            summary = watch(options, detector=NothingFound())
            assert summary.flushed and summary.undelivered == {}
            assert wait_until(lambda: len(subscriber.received) >= 2, 10)
            with subscriber.lock:
                received = list(subscriber.received)
        finally:
            subscriber.close()
    finally:
        broker.stop()

    written = [json.loads(text) for text in jsonl.read_text().splitlines()]
    assert received == written  # the same events, in the same order, on both sinks
    validator = jsonschema.Draft202012Validator(load_schema())
    for event in received:
        validator.validate(event)
    events = [Event.from_dict(e) for e in received]
    assert [(e.decision, e.alarm.state, e.frame_index) for e in events] == [
        ("drift", "raised", raised_at), ("drift", "cleared", cleared_at)]
    raised, cleared = events
    assert cleared.alarm.alarm_id == raised.event_id and raised.alarm.alarm_id is None
    brightness = raised.alarm.features["brightness"]
    assert brightness["window_median"] < brightness["reference_median"] and brightness["psi"] >= 0.25
    assert "brightness" in raised.message and raised.part_id is None and raised.defects == []
    assert set(cleared.alarm.features) == set(raised.alarm.features)
    assert summary.stats.drift_alarms == 1 and summary.stats.active_alarms == {}
    assert summary.stats.frames == len(images)


def test_warn_mode_logs_and_counts_but_sends_nothing(tmp_path: Path, line: tuple[Path, Path, list[Path]],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    profile_path, folder, images = line
    jsonl = tmp_path / "events.jsonl"
    seen_active = []
    options = WatchOptions(source=str(folder), profile=profile_path, drift="warn", drift_window=WINDOW,
                           sinks=(str(jsonl),), outbox=tmp_path / "outbox.sqlite", stats_interval_s=0.01,
                           fps_cap=400.0)
    with caplog.at_level(logging.WARNING, logger="yolodefect.stream.station"):
        summary = watch(options, detector=NothingFound(),
                        on_stats=lambda s: seen_active.append(dict(s.active_alarms)) if s.active_alarms else None)
    assert not jsonl.exists() or jsonl.read_text() == ""
    assert summary.stats.drift_alarms == 1 and summary.stats.events == 0
    assert any(record.getMessage().startswith("drift: the last 20 parts differ") for record in caplog.records)
    assert any("brightness" in alarms.get("drift", "") for alarms in seen_active)  # the panel showed it


def test_drift_off_or_no_profile_monitors_nothing(tmp_path: Path, line: tuple[Path, Path, list[Path]]) -> None:
    _, folder, _ = line
    jsonl = tmp_path / "events.jsonl"
    for extra in ({}, {"drift": "off"}):
        summary = watch(WatchOptions(source=str(folder), sinks=(str(jsonl),), outbox=tmp_path / "outbox.sqlite",
                                     drift_window=WINDOW, **extra), detector=NothingFound())
        assert summary.stats.drift_alarms == 0
    assert not jsonl.exists() or jsonl.read_text() == ""
    with pytest.raises(UsageError, match="drift=alarm needs the reference profile"):
        watch(WatchOptions(source=str(folder), drift="alarm", outbox=tmp_path / "outbox.sqlite"),
              detector=NothingFound())
