"""Several cameras in one station: one model shared, each camera with its own source, parts, counters and sinks.

The fake model recognises frames by content (a hash of the decoded frame -> the defects the generator put on
it), so one shared detector answers for both videos whichever camera thread calls it, as a real model would.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from yolodefect.data.conveyor import ConveyorTruth, write_conveyor_video
from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.stream.options import WatchOptions, camera_options, load_station_config
from yolodefect.stream.watch import watch

BELT_FRAMES = WatchOptions().belt_frames
LEFT_DEFECTIVE, RIGHT_DEFECTIVE = {1}, {0, 2}


class FrameContentDetector:
    """The defects of each generated frame, looked up by the frame's content (thread-safe, order-free)."""

    def __init__(self, *truths: ConveyorTruth):
        self.class_names = list(truths[0].class_names)
        self.by_frame: dict[str, Detections] = {}
        self.calls_by_thread: dict[str, int] = {}
        for truth in truths:
            capture = cv2.VideoCapture(str(truth.path))
            index = 0
            while True:
                ok, image = capture.read()
                if not ok:
                    break
                visible = truth.visible_defects(index)
                found = (Detections(np.array([v.xyxy for v in visible]), np.full(len(visible), 0.9),
                                    np.array([v.class_id for v in visible])) if visible else Detections.empty())
                key = hashlib.sha1(image.tobytes()).hexdigest()
                assert key not in self.by_frame or not visible, "two videos share a frame with defects"
                self.by_frame.setdefault(key, found)
                index += 1
            capture.release()

    def __call__(self, image: np.ndarray) -> Detections:
        name = threading.current_thread().name
        self.calls_by_thread[name] = self.calls_by_thread.get(name, 0) + 1
        return self.by_frame[hashlib.sha1(image.tobytes()).hexdigest()]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> tuple[ConveyorTruth, ConveyorTruth]:
    folder = tmp_path_factory.mktemp("cameras")
    left = write_conveyor_video(folder / "left.mp4", parts=4, defective=LEFT_DEFECTIVE, seed=3,
                                lead_in_frames=BELT_FRAMES + 5)
    right = write_conveyor_video(folder / "right.mp4", parts=4, defective=RIGHT_DEFECTIVE, seed=5,
                                 lead_in_frames=BELT_FRAMES + 5)
    return left, right


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def parts_of(truth: ConveyorTruth, events: list[dict[str, Any]]) -> list[int]:
    """The generator's part index of each event, by where its part box lies on its frame."""
    found = []
    for event in events:
        x_centre = (event["part_bbox_xyxy"][0] + event["part_bbox_xyxy"][2]) / 2
        in_view = truth.parts_in_view(event["frame_index"])
        boxes = [truth.part_box(i, event["frame_index"]) for i in in_view]
        found.append(in_view[int(np.argmin([abs((b[0] + b[2]) / 2 - x_centre) for b in boxes]))])
    return found


def test_two_cameras_each_get_exactly_their_own_parts_events(videos, tmp_path: Path) -> None:
    left, right = videos
    detector = FrameContentDetector(left, right)
    options = WatchOptions(cameras=({"name": "left", "source": str(left.path)},
                                    {"name": "right", "source": str(right.path)}),
                           sinks=(str(tmp_path / "events.jsonl"),), outbox=tmp_path / "outbox.sqlite",
                           evidence_dir=tmp_path / "evidence", emit_pass=True)
    summary = watch(options, detector=detector)

    events = read_events(tmp_path / "events.jsonl")
    by_camera = {name: [e for e in events if e["source"] == name] for name in ("left", "right")}
    assert len(events) == len(by_camera["left"]) + len(by_camera["right"]) == 8  # one event per part, no other source
    for name, truth, defective in (("left", left, LEFT_DEFECTIVE), ("right", right, RIGHT_DEFECTIVE)):
        camera_events = by_camera[name]
        assert sorted(parts_of(truth, camera_events)) == [0, 1, 2, 3]  # every part of this camera, once
        rejected = [p for p, e in zip(parts_of(truth, camera_events), camera_events) if e["decision"] == "reject"]
        assert sorted(rejected) == sorted(defective)
    # Each camera ran on its own thread, through the one shared model.
    assert set(detector.calls_by_thread) == {"camera-left", "camera-right"}
    assert {c.stats.camera: (c.stats.rejects, c.stats.passes, c.stats.frames) for c in summary.cameras} == {
        "left": (1, 3, left.frames), "right": (2, 2, right.frames)}
    assert (summary.stats.rejects, summary.stats.passes, summary.stats.frames) == (3, 5, left.frames + right.frames)
    assert summary.stopped_by == "end" and summary.flushed
    assert summary.to_dict()["cameras"]["left"]["rejects"] == 1


def test_each_camera_sends_to_its_own_sinks(videos, tmp_path: Path) -> None:
    left, right = videos
    shared = tmp_path / "all.jsonl"
    options = WatchOptions(cameras=(
        {"name": "left", "source": str(left.path), "sinks": [str(tmp_path / "left.jsonl"), str(shared)]},
        {"name": "right", "source": str(right.path), "sinks": [str(tmp_path / "right.jsonl"), str(shared)]},
    ), outbox=tmp_path / "outbox.sqlite")
    watch(options, detector=FrameContentDetector(left, right))

    assert {e["source"] for e in read_events(tmp_path / "left.jsonl")} == {"left"}
    assert {e["source"] for e in read_events(tmp_path / "right.jsonl")} == {"right"}
    assert len(read_events(tmp_path / "left.jsonl")) == 1 and len(read_events(tmp_path / "right.jsonl")) == 2
    # The file both cameras name is written by one writer and gets every event once.
    everything = read_events(shared)
    assert sorted(e["source"] for e in everything) == ["left", "right", "right"]
    assert len({e["event_id"] for e in everything}) == 3


def test_camera_entries_are_checked(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="'model', which the whole station shares"):
        WatchOptions(cameras=({"source": "a.mp4", "model": "other.pt"},))
    with pytest.raises(UsageError, match="used twice"):
        WatchOptions(cameras=({"source": "x/a.mp4"}, {"source": "y/a.mp4"}))  # both default to the name 'a'
    with pytest.raises(UsageError, match="has no source"):
        WatchOptions(cameras=({"name": "top"},))
    with pytest.raises(UsageError, match="unknown option 'tresholds' in cameras\\[0\\]; did you mean 'thresholds'"):
        WatchOptions(cameras=({"source": "a.mp4", "tresholds": "t.yaml"},))
    with pytest.raises(UsageError, match="either source .* or cameras"):
        camera_options(WatchOptions(source="a.mp4", cameras=({"source": "b.mp4"},)))
    assert [name for name, _ in camera_options(WatchOptions(cameras=({"source": "0"}, {"source": "rtsp://h/s"})))] == [
        "cam0", "cam1"]


def test_station_file_cameras_resolve_paths_and_keep_their_own_settings(tmp_path: Path) -> None:
    config = tmp_path / "station.yaml"
    config.write_text(
        "conf: 0.4\n"
        "cameras:\n"
        "  - {name: top, source: top.mp4, conf: 0.7, sinks: [top.jsonl]}\n"
        "  - {source: side.mp4, roi: [[0, 0], [10, 0], [10, 10]]}\n")
    cameras = dict(camera_options(load_station_config(config)))
    assert list(cameras) == ["top", "side"]
    assert cameras["top"].source == str(tmp_path / "top.mp4") and cameras["top"].conf == 0.7
    assert cameras["top"].sinks == (str(tmp_path / "top.jsonl"),)
    assert cameras["side"].conf == 0.4 and cameras["side"].roi == ((0, 0), (10, 0), (10, 10))
    assert cameras["side"].camera == "side"


def test_the_cli_runs_one_station_for_repeated_sources(videos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from yolodefect.cli import app
    from yolodefect.stream.events import ModelIdentity

    left, right = videos
    detector = FrameContentDetector(left, right)
    detector.model_info = ModelIdentity(name="fake.pt", sha256="f" * 64, precision="fp32")
    (tmp_path / "fake.pt").write_bytes(b"not used: the model is replaced")
    loaded = []
    monkeypatch.setattr("yolodefect.stream.watch.make_detector", lambda *args: loaded.append(args) or detector)
    result = CliRunner().invoke(app, ["watch", "--source", str(left.path), "--source", str(right.path), "--model",
                                      str(tmp_path / "fake.pt"), "--sink", str(tmp_path / "events.jsonl"),
                                      "--outbox", str(tmp_path / "outbox.sqlite"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {name: camera["rejects"] for name, camera in summary["cameras"].items()} == {"left": 1, "right": 2}
    assert summary["rejects"] == 3 and len(loaded) == 1  # one station, one model for both cameras
    assert sorted(e["source"] for e in read_events(tmp_path / "events.jsonl")) == ["left", "right", "right"]
