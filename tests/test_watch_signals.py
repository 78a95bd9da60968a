"""Shutdown and failure: SIGTERM/SIGINT flush the outbox and exit 0; a failing model under fail_safe."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from yolodefect.detections import Detections
from yolodefect.stream.options import WatchOptions
from yolodefect.stream.watch import watch
from yolodefect.data.conveyor import write_conveyor_video
from tests.builders import write_video

NAMES = ["scratch", "pit"]



def write_images(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"p{i}.png"), np.full((32, 32), 10 * i, np.uint8))
    return folder


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def outbox_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def one_box(image: np.ndarray) -> Detections:
    return Detections(np.array([[2.0, 2.0, 20.0, 20.0]]), np.array([0.9]), np.array([1]))


# The station as the CLI runs it: its own process, signal handlers installed, a looping source.
STATION = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from yolodefect.detections import Detections
    from yolodefect.stream.options import WatchOptions
    from yolodefect.stream.watch import watch

    def detector(image):
        return Detections(np.array([[2.0, 2.0, 20.0, 20.0]]), np.array([0.9]), np.array([1]))

    video, events, outbox = sys.argv[1:4]
    options = WatchOptions(camera_faults=False, source=video, loop=True, mode="part", fps_cap=200, sinks=(events,), outbox=outbox)
    summary = watch(options, detector=detector, class_names=["scratch", "pit"], install_signal_handlers=True)
    print(json.dumps(summary.to_dict()))
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_flushes_the_outbox(tmp_path: Path, signum: int) -> None:
    script = tmp_path / "station.py"
    script.write_text(STATION)
    events_path, outbox = tmp_path / "events.jsonl", tmp_path / "outbox.sqlite"
    process = subprocess.Popen(
        [sys.executable, str(script), str(write_video(tmp_path / "loop.mp4", 30)), str(events_path), str(outbox)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while len(read_events(events_path)) < 20:  # running and delivering, around the video's loop point
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the station produced no events"
            time.sleep(0.05)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["stopped_by"] == "signal" and summary["flushed"] and summary["undelivered"] == {}
    events = read_events(events_path)
    # Every event the station made reached the file exactly once, and the outbox holds nothing.
    assert len(events) == summary["events"] == summary["rejects"] == summary["frames"]
    assert len({e["event_id"] for e in events}) == len(events)
    assert outbox_rows(outbox) == 0
    assert [e["frame_index"] for e in events] == list(range(len(events)))  # in order, none lost


class FlakyModel:
    """Raises on the frames in ``fail_on`` (counted from 0), finds one defect on the others."""

    def __init__(self, fail_on: set[int]):
        self.fail_on = fail_on
        self.calls = 0

    def __call__(self, image: np.ndarray) -> Detections:
        call, self.calls = self.calls, self.calls + 1
        if call in self.fail_on:
            raise RuntimeError("CUDA error: device lost")
        return one_box(image)


def options_for(tmp_path: Path, source: Path, **overrides: Any) -> WatchOptions:
    return WatchOptions(camera_faults=False, source=str(source), sinks=(str(tmp_path / "events.jsonl"),), outbox=tmp_path / "outbox.sqlite",
                        **overrides)


def test_failing_model_gives_error_events_and_the_run_goes_on(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "parts", 5)
    options = options_for(tmp_path, folder, fail_safe="reject", evidence_dir=tmp_path / "evidence")
    summary = watch(options, detector=FlakyModel({1, 2}), class_names=NAMES)
    events = read_events(tmp_path / "events.jsonl")
    assert [(e["part_id"], e["decision"]) for e in events] == [
        ("p0.png", "reject"), ("p1.png", "error"), ("p2.png", "error"), ("p3.png", "reject"), ("p4.png", "reject")]
    error = events[1]
    assert "RuntimeError: CUDA error: device lost" in error["message"] and error["defects"] == []
    assert Path(error["snapshot_paths"]["raw"]).is_file()  # the uninspected part's picture is kept
    assert summary.stats.failed_frames == 2 and summary.stats.errors == 2 and summary.stats.frames == 5


def test_failing_model_in_track_mode(tmp_path: Path) -> None:
    belt_frames = 5
    truth = write_conveyor_video(tmp_path / "line.mp4", parts=1, defective={0}, seed=1, frame_size=(160, 96),
                                 part_size=(64, 48), speed_px_per_frame=8, lead_in_frames=belt_frames + 3)
    # The model fails on an empty-belt frame and on a frame of the part's passage (both after the belt learning).
    failing = {belt_frames + 1, truth.parts[0].first_frame + 8}

    class FlakyOnTheLine:
        """Raises on the frames in ``failing``, else finds the part's defects (frame = belt frames + call)."""

        def __init__(self) -> None:
            self.frame_index = belt_frames

        def __call__(self, image: np.ndarray) -> Detections:
            frame, self.frame_index = self.frame_index, self.frame_index + 1
            if frame in failing:
                raise RuntimeError("CUDA error: device lost")
            visible = truth.visible_defects(frame)
            return Detections(np.array([v.xyxy for v in visible]).reshape(-1, 4), np.full(len(visible), 0.9),
                              np.array([v.class_id for v in visible], dtype=np.int64))

    options = options_for(tmp_path, truth.path, fail_safe="reject", min_frames=2, belt_frames=belt_frames)
    summary = watch(options, detector=FlakyOnTheLine(), class_names=list(truth.class_names))
    events = read_events(tmp_path / "events.jsonl")
    errors = [e for e in events if e["decision"] == "error"]
    assert [e["frame_index"] for e in errors] == sorted(failing) and all(e["part_id"] is None for e in errors)
    assert all("RuntimeError: CUDA error: device lost" in e["message"] for e in errors)
    # A failed frame costs the part one look, not its decision: the part is still rejected, once.
    assert [(e["decision"], e["part_id"]) for e in events if e["decision"] != "error"] == [("reject", 1)]
    assert summary.stats.frames == truth.frames and summary.stats.failed_frames == 2


def test_fail_safe_off_raises_after_flushing_what_was_made(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "parts", 4)
    with pytest.raises(RuntimeError, match="device lost"):
        watch(options_for(tmp_path, folder, fail_safe="off"), detector=FlakyModel({2}), class_names=NAMES)
    assert [e["part_id"] for e in read_events(tmp_path / "events.jsonl")] == ["p0.png", "p1.png"]
    assert outbox_rows(tmp_path / "outbox.sqlite") == 0


def test_stop_event_from_another_thread(tmp_path: Path) -> None:
    stop = threading.Event()
    options = options_for(tmp_path, write_video(tmp_path / "v.mp4", 10), loop=True, mode="part", fps_cap=100)
    threading.Timer(0.5, stop.set).start()
    summary = watch(options, detector=one_box, class_names=NAMES, stop_event=stop)
    assert summary.stopped_by == "stop" and summary.flushed
    assert len(read_events(tmp_path / "events.jsonl")) == summary.stats.events > 0


class OnOffCamera:
    """A camera that fails every read from line frame ``fail_from`` on (the cable is pulled), or never (None).

    What it shows follows the line, not the clock: the empty belt until the station starts inspecting
    (``line["started"]``, set by the detector: the belt is learned by then), then one grey part with a white
    defect moving in at 4 px per line frame (``line["frame"]`` counts them over all cameras). An outage
    stops the line's picture, not the part: after the reconnect the part is where it was."""

    SPEED_PX = 4
    SIZE_WH = (96, 48)
    PART_W = 32

    def __init__(self, line: dict[str, Any], fail_from: int | None):
        self.line = line
        self.fail_from = fail_from

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        time.sleep(0.005)
        if self.fail_from is not None and self.line["frame"] >= self.fail_from:
            return False, None
        width, height = self.SIZE_WH
        image = np.full((height, width, 3), 90, np.uint8)
        if self.line["started"]:
            right = self.SPEED_PX * self.line["frame"]
            image[10:38, max(0, right - self.PART_W):max(0, min(width, right))] = 200
            centre = right - self.PART_W // 2
            image[20:28, max(0, centre - 4):max(0, min(width, centre + 4))] = 255
            self.line["frame"] += 1
        return True, image

    def release(self) -> None:
        pass

    def get(self, prop_id: int) -> float:
        return 0.0


def test_camera_outage_does_not_stop_the_station(tmp_path: Path) -> None:
    line: dict[str, Any] = {"started": False, "frame": 0}
    # The cable is pulled at line frame 6: the part is 24 px into the view, before the decision line.
    cameras = [OnOffCamera(line, fail_from=6), OnOffCamera(line, fail_from=None)]
    opened = []

    def factory(target: object) -> OnOffCamera:
        opened.append(target)
        return cameras.pop(0) if len(cameras) > 1 else cameras[0]

    def white_defect(image: np.ndarray) -> Detections:
        line["started"] = True
        ys, xs = np.nonzero(image[:, :, 0] > 240)
        if len(xs) == 0:
            return Detections.empty()
        return Detections(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float32),
                          np.array([0.9]), np.array([1]))

    # 5 belt frames, then at least 40 line frames: the part (32 px) has crossed the 96 px view by line frame 32.
    options = WatchOptions(camera_faults=False, source="0", sinks=(str(tmp_path / "events.jsonl"),), outbox=tmp_path / "outbox.sqlite",
                           max_frames=45, min_frames=2, belt_frames=5)
    summary = watch(options, detector=white_defect, class_names=NAMES, capture_factory=factory)
    assert summary.stopped_by == "max_frames" and summary.stats.frames == 45
    assert summary.stats.reconnects == 1 and opened == [0, 0]
    assert summary.stats.mode == "track" and summary.stats.source == "camera:0"
    # The part is in view across the outage: it keeps its track and gets its one decision.
    events = read_events(tmp_path / "events.jsonl")
    assert [(e["decision"], e["part_id"]) for e in events] == [("reject", 1)]
    assert line["frame"] > 32  # the part did cross the view


def test_nan_boxes_are_dropped_not_fatal(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "parts", 2)

    def broken(image: np.ndarray) -> Detections:
        return Detections(np.array([[np.nan, 0, 5, 5], [1, 1, 9, 9]]), np.array([0.9, 0.9]), np.array([0, 0]))

    summary = watch(options_for(tmp_path, folder, fail_safe="off", evidence_dir=tmp_path / "ev"),
                    detector=broken, class_names=NAMES)
    events = read_events(tmp_path / "events.jsonl")
    assert [len(e["defects"]) for e in events] == [1, 1] and summary.stats.errors == 0


def test_show_without_a_display_runs_headless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    folder = write_images(tmp_path / "parts", 2)
    with caplog.at_level("WARNING"):
        summary = watch(options_for(tmp_path, folder, show=True), detector=one_box, class_names=NAMES)
    assert summary.stats.frames == 2
    assert "running headless" in caplog.text
