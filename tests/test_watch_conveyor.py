"""The station end to end on a synthetic conveyor video, with a fake detector that sees the ground truth.

The fake stands in for a perfect model so that what is tested is the pipeline: reading every frame,
tracking (Ultralytics' ByteTrack), debouncing, one reject per defective part, evidence, the durable
outbox and the JSONL sink. Running a real model on the video is a separate, slower test.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from yolodefect.data.synth import render_part
from yolodefect.detections import Detections
from yolodefect.data.conveyor import ConveyorTruth, write_conveyor_video
from yolodefect.stream.events import Event, load_schema
from yolodefect.stream.options import WatchOptions
from yolodefect.stream.stats import WatchStats
from yolodefect.stream.watch import watch

try:
    import jsonschema
except ImportError:  # a dev dependency; Event.from_dict still checks every field without it
    jsonschema = None

DEFECTIVE = {1, 4, 6}


class GroundTruthDetector:
    """Returns the boxes of the defects visible on each frame (frames arrive in order: files drop nothing)."""

    def __init__(self, truth: ConveyorTruth, confidence: float = 0.9):
        self.truth = truth
        self.confidence = confidence
        self.class_names = list(truth.class_names)
        self.calls = 0

    def __call__(self, image: np.ndarray) -> Detections:
        assert image.shape == (self.truth.frame_size[1], self.truth.frame_size[0], 3)
        visible = self.truth.visible_defects(self.calls)
        self.calls += 1
        if not visible:
            return Detections.empty()
        return Detections(
            xyxy=np.array([v.xyxy for v in visible]),
            confidence=np.full(len(visible), self.confidence),
            class_id=np.array([v.class_id for v in visible]),
        )


@pytest.fixture(scope="module")
def conveyor(tmp_path_factory: pytest.TempPathFactory) -> ConveyorTruth:
    folder = tmp_path_factory.mktemp("conveyor")
    # seed 3 puts two defects on parts 1 and 6: they must still give one event each.
    return write_conveyor_video(folder / "line.mp4", parts=8, defective=DEFECTIVE, seed=3)


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def part_at(truth: ConveyorTruth, event: dict[str, Any]) -> int:
    """Which part the event's first defect lies on, from the known part positions."""
    x1, _, x2, _ = event["defects"][0]["bbox_xyxy"]
    centre = (x1 + x2) / 2
    for part in truth.parts:
        left = truth.part_left(part.index, event["frame_index"])
        if left <= centre <= left + truth.part_size[0]:
            return part.index
    raise AssertionError(f"event at x={centre} on frame {event['frame_index']} is on no part")


def outbox_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def options_for(tmp_path: Path, source: Path | str, **overrides: Any) -> WatchOptions:
    values: dict[str, Any] = dict(source=str(source), sinks=(str(tmp_path / "events.jsonl"),),
                                  outbox=tmp_path / "outbox.sqlite", evidence_dir=tmp_path / "evidence")
    values.update(overrides)
    return WatchOptions(**values)


def test_conveyor_video_reads_back(conveyor: ConveyorTruth) -> None:
    capture = cv2.VideoCapture(str(conveyor.path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count == conveyor.frames
    assert conveyor.defective_parts == DEFECTIVE
    assert sorted(len(p.defects) for p in conveyor.parts if p.defective) == [1, 2, 2]
    for part in conveyor.parts:  # every defect is fully in view at some frame
        for box in part.defects:
            assert any(part.index == v.part_index and v.class_name == box.class_name
                       for f in range(part.first_frame, part.last_frame + 1) for v in conveyor.visible_defects(f, 1.0))


def test_each_defective_part_rejected_exactly_once(conveyor: ConveyorTruth, tmp_path: Path) -> None:
    seen: list[WatchStats] = []
    options = options_for(tmp_path, conveyor.path, part_merge_px=150, min_frames=3, stats_interval_s=0.05)
    summary = watch(options, detector=GroundTruthDetector(conveyor), on_stats=seen.append)

    events = read_events(tmp_path / "events.jsonl")
    assert [e["decision"] for e in events] == ["reject"] * 3
    assert sorted(part_at(conveyor, e) for e in events) == sorted(DEFECTIVE)
    assert len({e["event_id"] for e in events}) == 3
    assert len({e["part_id"] for e in events}) == 3

    stats = summary.stats
    assert summary.stopped_by == "end" and summary.flushed and summary.undelivered == {}
    assert (stats.frames, stats.rejects, stats.passes, stats.errors, stats.events) == (conveyor.frames, 3, 0, 0, 3)
    assert stats.dropped_frames == 0 and stats.mode == "track"
    assert outbox_rows(tmp_path / "outbox.sqlite") == 0  # everything delivered, nothing left behind
    assert seen and seen[-1].running is False and seen[-1].rejects == 3

    validator = None
    if jsonschema is not None:
        validator = jsonschema.Draft202012Validator(load_schema(), format_checker=jsonschema.FormatChecker())
    for event in events:
        Event.from_dict(event)
        if validator is not None:
            validator.validate(event)
        assert event["source"] == str(conveyor.path)
        assert event["image_size"] == list(conveyor.frame_size)
        assert event["latency_ms"] >= 0
        assert event["model"]["precision"] == "unknown"  # a fake detector has no weights
        assert {d["class"] for d in event["defects"]} <= set(conveyor.class_names)
        assert set(event["snapshot_paths"]) == {"raw", "annotated"}
        for kind, path in event["snapshot_paths"].items():
            assert Path(path).name == f"{event['event_id']}_{kind}.jpg"
            assert Path(path).parent.parent == tmp_path / "evidence"
            image = cv2.imread(path)
            assert image is not None and image.shape == (conveyor.frame_size[1], conveyor.frame_size[0], 3)


def test_without_part_merging_each_defect_track_rejects_once(conveyor: ConveyorTruth, tmp_path: Path) -> None:
    summary = watch(options_for(tmp_path, conveyor.path, evidence_dir=None), detector=GroundTruthDetector(conveyor))
    events = read_events(tmp_path / "events.jsonl")
    defects = sum(len(p.defects) for p in conveyor.parts)
    assert summary.stats.rejects == len(events) == defects
    assert sorted({part_at(conveyor, e) for e in events}) == sorted(DEFECTIVE)
    assert all(e["snapshot_paths"] == {} for e in events)


def test_annotated_video_and_max_frames(conveyor: ConveyorTruth, tmp_path: Path) -> None:
    options = options_for(tmp_path, conveyor.path, save=tmp_path / "annotated.mp4", max_frames=60, evidence_dir=None)
    summary = watch(options, detector=GroundTruthDetector(conveyor))
    assert summary.stopped_by == "max_frames" and summary.stats.frames == 60
    capture = cv2.VideoCapture(str(tmp_path / "annotated.mp4"))
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == 60


def write_parts(folder: Path, defective: set[int], count: int) -> dict[bytes, list]:
    """Part photos; returns image bytes -> ground-truth boxes, so a fake can look its answer up."""
    folder.mkdir()
    lookup: dict[bytes, list] = {}
    for index in range(count):
        classes = ["pit"] if index in defective else []
        gray, boxes = render_part("steel", np.random.default_rng([7, index]), (96, 64), classes)
        cv2.imwrite(str(folder / f"part_{index:03d}.png"), gray)
        lookup[cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR).tobytes()] = boxes
    return lookup


def test_part_mode_on_image_folder_with_pass_events(tmp_path: Path) -> None:
    lookup = write_parts(tmp_path / "parts", {0, 3}, 5)
    names = ["scratch", "pit", "inclusion", "patch"]

    def fake(image: np.ndarray) -> Detections:
        boxes = lookup[image.tobytes()]
        if not boxes:
            return Detections.empty()
        return Detections(np.array([b.xyxy for b in boxes]), np.full(len(boxes), 0.8),
                          np.array([names.index(b.class_name) for b in boxes]))

    summary = watch(options_for(tmp_path, tmp_path / "parts", emit_pass=True), detector=fake, class_names=names)
    events = read_events(tmp_path / "events.jsonl")
    assert [(e["part_id"], e["decision"]) for e in events] == [
        ("part_000.png", "reject"), ("part_001.png", "pass"), ("part_002.png", "pass"),
        ("part_003.png", "reject"), ("part_004.png", "pass")]
    assert summary.stats.mode == "part" and summary.stats.parts == 5
    assert all(e["snapshot_paths"] == {} for e in events if e["decision"] == "pass")
    assert all(set(e["snapshot_paths"]) == {"raw", "annotated"} for e in events if e["decision"] == "reject")


def test_late_decisions_become_error_events(tmp_path: Path) -> None:
    lookup = write_parts(tmp_path / "parts", {1}, 3)

    def slow(image: np.ndarray) -> Detections:
        time.sleep(0.03)
        boxes = lookup[image.tobytes()]
        return Detections(np.array([b.xyxy for b in boxes]), np.full(len(boxes), 0.9), np.ones(len(boxes))) \
            if boxes else Detections.empty()

    options = options_for(tmp_path, tmp_path / "parts", max_latency_ms=5, evidence_dir=None)
    summary = watch(options, detector=slow, class_names=["scratch", "pit"])
    events = read_events(tmp_path / "events.jsonl")
    # Every part gets one event, and none of them claims an inspection that came too late.
    assert [e["decision"] for e in events] == ["error"] * 3
    assert [e["part_id"] for e in events] == ["part_000.png", "part_001.png", "part_002.png"]
    assert "would have been reject" in events[1]["message"] and len(events[1]["defects"]) == 1
    assert "would have been pass" in events[0]["message"]
    assert summary.stats.late_frames == 3 and summary.stats.errors == 3


def test_down_sink_does_not_block_detection(conveyor: ConveyorTruth, tmp_path: Path) -> None:
    # Port 9 (discard) refuses connections: the webhook fails every attempt.
    options = options_for(tmp_path, conveyor.path, part_merge_px=150, evidence_dir=None, flush_timeout_s=0.5,
                          sinks=(str(tmp_path / "events.jsonl"), "http://127.0.0.1:9/hook"))
    start = time.monotonic()
    summary = watch(options, detector=GroundTruthDetector(conveyor))
    assert time.monotonic() - start < 20
    assert len(read_events(tmp_path / "events.jsonl")) == 3  # the healthy sink got everything
    assert not summary.flushed
    assert summary.undelivered == {"webhook:http://127.0.0.1:9/hook": 3}  # kept for the next run
    assert outbox_rows(tmp_path / "outbox.sqlite") == 3


class LockstepCamera:
    """A live camera twice as fast as the station, deterministically: each detector call lets it grab
    exactly two more frames, so the station sees every other frame (the one in between is dropped).

    One white 8 px defect crosses the 320 px view at 16 px per camera frame, then a gap, then another.
    """

    SPEED_PX = 16
    PASSES = ((0, 20), (30, 50))  # camera frames during which a defect is in view

    def __init__(self) -> None:
        self.grabbed = 0
        self.permits = threading.Semaphore(1)

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        self.permits.acquire(timeout=1.0)  # a timeout so the reader can leave at shutdown
        image = np.zeros((64, 320, 3), np.uint8)
        for start, end in self.PASSES:
            if start <= self.grabbed < end:
                x = self.SPEED_PX * (self.grabbed - start)
                image[28:36, x:x + 8] = 255
        self.grabbed += 1
        return True, image

    def release(self) -> None:
        pass

    def get(self, prop_id: int) -> float:
        return 0.0


def test_camera_faster_than_the_station_still_rejects_each_defect_once(tmp_path: Path) -> None:
    """Dropped frames double how far a defect moves between two tracker updates (32 px for an 8 px box)."""
    camera = LockstepCamera()

    def white_square(image: np.ndarray) -> Detections:
        wanted = camera.grabbed + 2
        camera.permits.release(2)
        deadline = time.monotonic() + 2.0
        while camera.grabbed < wanted and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.02)  # the reader puts the frame it grabbed last into the latest-frame slot
        ys, xs = np.nonzero(image[:, :, 0] > 127)
        if len(xs) == 0:
            return Detections.empty()
        return Detections(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float32),
                          np.array([0.9]), np.array([0]))

    options = WatchOptions(source="0", sinks=(str(tmp_path / "events.jsonl"),), outbox=tmp_path / "outbox.sqlite",
                           max_frames=30, min_frames=3)
    summary = watch(options, detector=white_square, class_names=["scratch"], capture_factory=lambda target: camera)
    assert summary.stats.frames == 30 and summary.stats.dropped_frames >= 25
    events_file = tmp_path / "events.jsonl"
    events = read_events(events_file) if events_file.exists() else []  # no file: both defects escaped
    assert [e["decision"] for e in events] == ["reject", "reject"]
    first_pass_end = LockstepCamera.PASSES[0][1]
    assert events[0]["frame_index"] < first_pass_end <= LockstepCamera.PASSES[1][0] <= events[1]["frame_index"]
