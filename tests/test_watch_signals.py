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
    options = WatchOptions(source=video, loop=True, mode="part", fps_cap=200, sinks=(events,), outbox=outbox)
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
    return WatchOptions(source=str(source), sinks=(str(tmp_path / "events.jsonl"),), outbox=tmp_path / "outbox.sqlite",
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
    video = write_video(tmp_path / "v.mp4", 12)
    options = options_for(tmp_path, video, fail_safe="reject", min_frames=2)
    summary = watch(options, detector=FlakyModel({0, 5}), class_names=NAMES)
    events = read_events(tmp_path / "events.jsonl")
    errors = [e for e in events if e["decision"] == "error"]
    assert [e["frame_index"] for e in errors] == [0, 5] and all(e["part_id"] is None for e in errors)
    assert [e["decision"] for e in events if e["decision"] != "error"] == ["reject"]  # one track, once
    assert summary.stats.frames == 12


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
    """A camera that delivers ``frames`` frames, then fails every read (the cable is pulled)."""

    def __init__(self, frames: int | None):
        self.remaining = frames

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        time.sleep(0.005)
        if self.remaining is not None:
            if self.remaining <= 0:
                return False, None
            self.remaining -= 1
        return True, np.full((48, 64, 3), 90, np.uint8)

    def release(self) -> None:
        pass

    def get(self, prop_id: int) -> float:
        return 0.0


def test_camera_outage_does_not_stop_the_station(tmp_path: Path) -> None:
    cameras = [OnOffCamera(10), OnOffCamera(None)]
    opened = []

    def factory(target: object) -> OnOffCamera:
        opened.append(target)
        return cameras.pop(0) if len(cameras) > 1 else cameras[0]

    options = WatchOptions(source="0", sinks=(str(tmp_path / "events.jsonl"),), outbox=tmp_path / "outbox.sqlite",
                           max_frames=40, min_frames=2, part_merge_px=100)
    summary = watch(options, detector=one_box, class_names=NAMES, capture_factory=factory)
    assert summary.stopped_by == "max_frames" and summary.stats.frames == 40
    assert summary.stats.reconnects == 1 and opened == [0, 0]
    assert summary.stats.mode == "track" and summary.stats.source == "camera:0"
    # The defect never leaves the view: the tracker keeps its id across the short outage, or a new
    # track starts after it; either way no more than one reject per track.
    events = read_events(tmp_path / "events.jsonl")
    assert 1 <= len(events) <= 2 and len({e["part_id"] for e in events}) == len(events)


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
