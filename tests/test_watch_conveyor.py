"""The station end to end on a synthetic conveyor video, with a fake detector that sees the ground truth.

The fake stands in for a perfect model so that what is tested is the pipeline: reading every frame,
learning the empty belt from the first frames, finding and tracking the parts, one decision per part,
evidence, the durable outbox and the JSONL sink. Running a real model on the video is a separate,
slower test; the part finder's hard cases (small gaps, texture, flicker) are in test_stream_line.py.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from yolodefect.data.synth import render_part
from yolodefect.detections import Detections, box_iou
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
BELT_FRAMES = WatchOptions().belt_frames  # the station learns the belt from these first frames of the video


class GroundTruthDetector:
    """Returns the boxes of the defects visible on each frame.

    Frames arrive in order (files drop nothing), and the station passes none of the ``first_frame`` frames it
    learns the empty belt from to the detector, so the n-th call is frame ``first_frame + n``.
    """

    def __init__(self, truth: ConveyorTruth, confidence: float = 0.9, first_frame: int = BELT_FRAMES):
        self.truth = truth
        self.confidence = confidence
        self.class_names = list(truth.class_names)
        self.frame_index = first_frame

    def __call__(self, image: np.ndarray) -> Detections:
        assert image.shape == (self.truth.frame_size[1], self.truth.frame_size[0], 3)
        visible = self.truth.visible_defects(self.frame_index)
        self.frame_index += 1
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
    # seed 3 puts two defects on parts 1 and 6: they must still give one event each. The lead-in of empty
    # belt is longer than the station's belt learning, so no part is in view while it learns.
    return write_conveyor_video(folder / "line.mp4", parts=8, defective=DEFECTIVE, seed=3,
                                lead_in_frames=BELT_FRAMES + 5)


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def part_of(truth: ConveyorTruth, event: dict[str, Any]) -> int:
    """Which part the event's part box is, from the known part positions on the event's frame (IoU >= 0.9)."""
    frame = event["frame_index"]
    in_view = truth.parts_in_view(frame)
    boxes = np.array([truth.part_box(index, frame) for index in in_view], dtype=np.float32).reshape(-1, 4)
    iou = box_iou(np.array([event["part_bbox_xyxy"]], dtype=np.float32), boxes)[0]
    assert len(iou) and iou.max() >= 0.9, f"part box {event['part_bbox_xyxy']} on frame {frame} is no part: {boxes}"
    return in_view[int(iou.argmax())]


def inside(box: list[float], outer: list[float]) -> bool:
    return outer[0] <= box[0] and outer[1] <= box[1] and box[2] <= outer[2] and box[3] <= outer[3]


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
    assert conveyor.parts_in_view(BELT_FRAMES + 4) == []  # the belt is empty while the station learns it
    for part in conveyor.parts:  # every defect is fully in view at some frame
        for box in part.defects:
            assert any(part.index == v.part_index and v.class_name == box.class_name
                       for f in range(part.first_frame, part.last_frame + 1) for v in conveyor.visible_defects(f, 1.0))


def test_each_defective_part_rejected_exactly_once(conveyor: ConveyorTruth, tmp_path: Path) -> None:
    seen: list[WatchStats] = []
    options = options_for(tmp_path, conveyor.path, min_frames=3, stats_interval_s=0.05)
    summary = watch(options, detector=GroundTruthDetector(conveyor), on_stats=seen.append)

    events = read_events(tmp_path / "events.jsonl")
    assert [e["decision"] for e in events] == ["reject"] * 3
    assert [part_of(conveyor, e) for e in events] == sorted(DEFECTIVE)
    # Part ids count the parts in the order they were decided, good ones included: part i is id i + 1.
    assert [e["part_id"] for e in events] == [index + 1 for index in sorted(DEFECTIVE)]
    assert len({e["event_id"] for e in events}) == 3

    stats = summary.stats
    assert summary.stopped_by == "end" and summary.flushed and summary.undelivered == {}
    assert (stats.frames, stats.belt_frames, stats.rejects, stats.passes, stats.errors, stats.events, stats.parts) == (
        conveyor.frames, BELT_FRAMES, 3, len(conveyor.parts) - 3, 0, 3, len(conveyor.parts))
    assert stats.dropped_frames == 0 and stats.mode == "track"
    assert stats.off_part_detections == 0 and stats.open_parts == 0
    assert outbox_rows(tmp_path / "outbox.sqlite") == 0  # everything delivered, nothing left behind
    assert seen and seen[-1].running is False and seen[-1].rejects == 3

    validator = None
    if jsonschema is not None:
        validator = jsonschema.Draft202012Validator(load_schema(), format_checker=jsonschema.FormatChecker())
    for event in events:
        Event.from_dict(event)
        if validator is not None:
            validator.validate(event)
        part = conveyor.parts[part_of(conveyor, event)]
        assert event["source"] == str(conveyor.path)
        assert event["image_size"] == list(conveyor.frame_size)
        assert event["latency_ms"] >= 0
        assert event["model"]["precision"] == "unknown"  # a fake detector has no weights
        # Every defect of the part, each on the part's box, and nothing else.
        assert sorted(d["class"] for d in event["defects"]) == sorted(box.class_name for box in part.defects)
        assert all(inside(d["bbox_xyxy"], event["part_bbox_xyxy"]) for d in event["defects"])
        assert set(event["snapshot_paths"]) == {"raw", "annotated"}
        for kind, path in event["snapshot_paths"].items():
            assert Path(path).name == f"{event['event_id']}_{kind}.jpg"
            assert Path(path).parent.parent == tmp_path / "evidence"
            image = cv2.imread(path)
            assert image is not None and image.shape == (conveyor.frame_size[1], conveyor.frame_size[0], 3)


def test_with_pass_events_every_part_gets_exactly_one_event(conveyor: ConveyorTruth, tmp_path: Path) -> None:
    summary = watch(options_for(tmp_path, conveyor.path, evidence_dir=None, emit_pass=True),
                    detector=GroundTruthDetector(conveyor))
    events = read_events(tmp_path / "events.jsonl")
    assert [part_of(conveyor, e) for e in events] == [part.index for part in conveyor.parts]
    assert [e["part_id"] for e in events] == [part.index + 1 for part in conveyor.parts]
    assert [e["decision"] for e in events] == ["reject" if p.defective else "pass" for p in conveyor.parts]
    assert all(e["defects"] == [] for e in events if e["decision"] == "pass")
    assert summary.stats.events == summary.stats.parts == len(conveyor.parts) and summary.stats.errors == 0
    assert all(e["snapshot_paths"] == {} for e in events)


def test_annotated_video_and_max_frames(conveyor: ConveyorTruth, tmp_path: Path) -> None:
    options = options_for(tmp_path, conveyor.path, save=tmp_path / "annotated.mp4", max_frames=60, evidence_dir=None)
    summary = watch(options, detector=GroundTruthDetector(conveyor))
    assert summary.stopped_by == "max_frames" and summary.stats.frames == 60
    assert summary.stats.belt_frames == BELT_FRAMES
    capture = cv2.VideoCapture(str(tmp_path / "annotated.mp4"))
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == 60  # every frame of the source, the belt-learning ones included (frame for frame with it)


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
    options = options_for(tmp_path, conveyor.path, evidence_dir=None, flush_timeout_s=0.5,
                          sinks=(str(tmp_path / "events.jsonl"), "http://127.0.0.1:9/hook"))
    start = time.monotonic()
    summary = watch(options, detector=GroundTruthDetector(conveyor))
    assert time.monotonic() - start < 20
    events = read_events(tmp_path / "events.jsonl")  # the healthy sink got everything
    assert [part_of(conveyor, e) for e in events] == sorted(DEFECTIVE)
    assert not summary.flushed
    assert summary.undelivered == {"webhook:http://127.0.0.1:9/hook": 3}  # kept for the next run
    assert outbox_rows(tmp_path / "outbox.sqlite") == 3


class LockstepCamera:
    """A live camera twice as fast as the station, deterministically.

    While the station learns the belt (no detector calls) it runs free and shows the empty belt. From the
    first detector call on (``locked``), each call lets it grab exactly two more frames, so the station sees
    every other frame (the one in between is dropped). Counted in those lockstep frames, two grey parts, each
    with one white 8 px defect at its centre, cross the 320 px view at 12 px per frame, with a gap between them.
    """

    SIZE_WH = (320, 64)
    SPEED_PX = 12
    PART_WH = (80, 40)
    STARTS = (0, 44)  # lockstep frame at which each part's right edge is at the entry edge

    def __init__(self) -> None:
        self.locked = False
        self.reads = 0  # frames delivered (the source's frame index of the next one)
        self.lockstep_reads = 0
        self.first_locked: int | None = None  # frame index of lockstep frame 0
        self.permits = threading.Semaphore(0)

    @classmethod
    def in_view(cls, part: int) -> range:
        """The lockstep frames showing some of ``part``."""
        start = cls.STARTS[part]
        return range(start + 1, start + (cls.SIZE_WH[0] + cls.PART_WH[0]) // cls.SPEED_PX + 1)

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        width, height = self.SIZE_WH
        image = np.full((height, width, 3), 40, np.uint8)
        if not self.locked:
            time.sleep(0.002)
        else:
            self.permits.acquire(timeout=1.0)  # a timeout so the reader can leave at shutdown
            if self.first_locked is None:
                self.first_locked = self.reads
            step = self.lockstep_reads
            self.lockstep_reads += 1
            part_w, part_h = self.PART_WH
            top = (height - part_h) // 2
            for start in self.STARTS:
                right = self.SPEED_PX * (step - start)
                image[top:top + part_h, max(0, right - part_w):max(0, min(width, right))] = 140
                centre = right - part_w // 2
                image[28:36, max(0, centre - 4):max(0, min(width, centre + 4))] = 255
        self.reads += 1
        return True, image

    def release(self) -> None:
        pass

    def get(self, prop_id: int) -> float:
        return 0.0


def test_camera_faster_than_the_station_still_rejects_each_part_once(tmp_path: Path) -> None:
    """Dropped frames double how far a part moves between two updates of the part tracker (24 px for an 80 px part)."""
    camera = LockstepCamera()

    def white_square(image: np.ndarray) -> Detections:
        camera.locked = True
        wanted = camera.lockstep_reads + 2
        camera.permits.release(2)
        deadline = time.monotonic() + 2.0
        while camera.lockstep_reads < wanted and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.02)  # the reader puts the frame it grabbed last into the latest-frame slot
        ys, xs = np.nonzero(image[:, :, 0] > 200)
        if len(xs) == 0:
            return Detections.empty()
        return Detections(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float32),
                          np.array([0.9]), np.array([0]))

    # After the belt: about 45 station frames = 90 lockstep frames, both parts through and gone.
    options = WatchOptions(source="0", sinks=(str(tmp_path / "events.jsonl"),), outbox=tmp_path / "outbox.sqlite",
                           max_frames=BELT_FRAMES + 45, min_frames=3)
    summary = watch(options, detector=white_square, class_names=["scratch"], capture_factory=lambda target: camera)
    assert summary.stats.frames == BELT_FRAMES + 45 and summary.stats.dropped_frames >= 40
    events_file = tmp_path / "events.jsonl"
    events = read_events(events_file) if events_file.exists() else []  # no file: both parts escaped
    assert [(e["decision"], e["part_id"]) for e in events] == [("reject", 1), ("reject", 2)]
    assert camera.first_locked is not None
    for part, event in enumerate(events):
        assert event["frame_index"] - camera.first_locked in LockstepCamera.in_view(part)
        assert len(event["defects"]) == 1 and inside(event["defects"][0]["bbox_xyxy"], event["part_bbox_xyxy"])


def test_a_still_image_profile_beside_the_thresholds_is_not_used_on_a_moving_line(
        conveyor: ConveyorTruth, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """eval's profile.json describes still images; a line's part crops differ from them (framing, sharpness), so
    found beside the thresholds it would alarm on a stable line: the station leaves drift off there and says why,
    and runs it when asked explicitly."""
    from yolodefect.evaluation.profile import build_profile, write_profile
    from yolodefect.inference.rules import build_reject_rules
    from yolodefect.inference.thresholds_file import Thresholds, write_thresholds_yaml

    names = list(conveyor.class_names)
    bright = []
    for index in range(60):  # a reference nothing on this line looks like: white, flat stills
        path = tmp_path / f"still{index}.png"
        cv2.imwrite(str(path), np.full((64, 64, 3), 250 - index % 3, np.uint8))
        bright.append(path)
    profile = build_profile(bright, [Detections.empty()] * len(bright), names, build_reject_rules(thresholds=None, conf=0.5),
                            split="val", model="fake.pt", reject_rate=0.0)
    write_profile(profile, tmp_path / "profile.json")
    thresholds = write_thresholds_yaml(tmp_path / "thresholds.yaml", Thresholds(
        conf={name: 0.5 for name in names}, target_recall=None, target_reached=True, recall=None, escape_rate=None,
        false_reject_rate=None, reject_classes=names))
    caplog.set_level(logging.INFO, logger="yolodefect")
    watch(options_for(tmp_path, conveyor.path, evidence_dir=None, thresholds=thresholds),
          detector=GroundTruthDetector(conveyor))
    assert "drift monitor off on this moving line" in caplog.text
    assert all(e["decision"] in ("reject", "pass", "error") for e in read_events(tmp_path / "events.jsonl"))

    caplog.clear()
    asked = tmp_path / "asked"
    asked.mkdir()
    watch(options_for(asked, conveyor.path, evidence_dir=None, thresholds=thresholds, drift="alarm", drift_window=10),
          detector=GroundTruthDetector(conveyor))
    assert "drift monitor (alarm)" in caplog.text


def test_image_mode_counts_the_passes_it_does_not_emit(tmp_path: Path) -> None:
    """Without --emit-pass a good part sends no event, but the summary still counts it as passed (it said 0)."""
    folder = tmp_path / "parts"
    folder.mkdir()
    for index in range(5):
        cv2.imwrite(str(folder / f"part_{index}.png"), np.full((32, 32, 3), 100 + index, np.uint8))

    class RejectsTheFirst:
        class_names = ["scratch"]
        calls = 0

        def __call__(self, image: np.ndarray) -> Detections:
            self.calls += 1
            if self.calls == 1:
                return Detections(np.array([[2.0, 2.0, 10.0, 10.0]]), np.array([0.9]), np.array([0]))
            return Detections.empty()

    summary = watch(options_for(tmp_path, folder, evidence_dir=None), detector=RejectsTheFirst())
    assert (summary.stats.rejects, summary.stats.passes, summary.stats.parts, summary.stats.events) == (1, 4, 5, 1)
