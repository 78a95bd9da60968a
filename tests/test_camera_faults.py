"""Camera faults on a real video file: black, saturated and frozen frames each raise their alarm at once, and a
few good frames clear it; events pair the clearing with the raising one. Image folders never look frozen."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.builders import read_video, write_video
from yolodefect.detections import Detections
from yolodefect.stream.camera_faults import CameraFaultMonitor
from yolodefect.stream.events import Event
from yolodefect.stream.options import WatchOptions
from yolodefect.stream.watch import watch

FPS = 30.0
SIZE_WH = (96, 64)
BLACK = range(30, 40)
SATURATED = range(60, 70)
FROZEN = range(90, 160)  # 70 identical frames: 2.3 s at 30 fps
FRAMES = 200
# Raised on the first bad frame (frozen: once the picture has been still for 2 s of video), cleared on the
# 5th good frame after the fault.
EXPECTED = [("black", "raised", 30), ("black", "cleared", 44), ("saturated", "raised", 60),
            ("saturated", "cleared", 74), ("frozen", "raised", 150), ("frozen", "cleared", 164)]


def moving(index: int) -> np.ndarray:
    """A good frame: mid-grey with a bright bar that moves 3 px per frame."""
    width, height = SIZE_WH
    image = np.full((height, width, 3), 110, np.uint8)
    x = (3 * index) % width
    image[:, x:x + 12] = 200
    return image


def draw(index: int) -> np.ndarray:
    if index in BLACK:
        return np.zeros((SIZE_WH[1], SIZE_WH[0], 3), np.uint8)
    if index in SATURATED:
        return np.full((SIZE_WH[1], SIZE_WH[0], 3), 255, np.uint8)
    if index in FROZEN:
        return moving(FROZEN.start)
    return moving(index)


@pytest.fixture(scope="module")
def faulty_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("faults") / "camera.mp4", FRAMES, size_wh=SIZE_WH, fps=FPS, draw=draw)



def test_each_fault_is_raised_at_once_and_cleared_after_good_frames(faulty_video: Path) -> None:
    monitor = CameraFaultMonitor()
    seen = []
    for index, image in enumerate(read_video(faulty_video)):
        for change in monitor.update(image, index / FPS):
            seen.append((change.kind, change.state, index))
    assert seen == EXPECTED


def test_a_shrunken_copy_from_the_part_finder_gives_the_same_alarms(faulty_video: Path) -> None:
    """On a moving line the station hands the monitor the part finder's working-scale copy of the frame (read once
    after the model call, not twice): the same faults on the same frames."""
    from yolodefect.stream.part_finder import BeltModel

    frames = list(read_video(faulty_video))
    belt = BeltModel.learn(frames[:2])
    monitor = CameraFaultMonitor()
    seen = []
    for index, image in enumerate(frames):
        for change in monitor.update(image, index / FPS, belt.shrink(image)):
            seen.append((change.kind, change.state, index))
    assert belt.shrink(frames[0]).shape[:2] == (SIZE_WH[1] // belt.scale, SIZE_WH[0] // belt.scale)
    assert seen == EXPECTED


def test_frozen_is_judged_on_the_frames_own_clock() -> None:
    """Seconds, not frames: the same still picture at 5 fps is frozen after 10 frames, at 50 fps after 100."""
    image = moving(0)
    for fps, expected in ((5.0, 10), (50.0, 100)):
        monitor = CameraFaultMonitor(frozen_s=2.0)
        raised = [i for i in range(200) if monitor.update(image, i / fps)]
        assert raised[:1] == [expected]


def test_sensor_noise_on_a_moving_line_is_not_frozen_but_a_stuck_frame_is() -> None:
    rng = np.random.default_rng(0)
    monitor = CameraFaultMonitor(frozen_s=1.0)
    noisy = [np.clip(moving(i).astype(int) + rng.normal(0, 3, (SIZE_WH[1], SIZE_WH[0], 3)), 0, 255).astype(np.uint8)
             for i in range(60)]
    assert [c for i, frame in enumerate(noisy) for c in monitor.update(frame, i / 30)] == []
    stuck = [c.kind for i in range(60, 120) for c in monitor.update(noisy[-1], i / 30)]
    assert stuck == ["frozen"]


def test_image_mode_never_calls_identical_photos_frozen() -> None:
    monitor = CameraFaultMonitor(check_frozen=False)
    assert [c for i in range(50) for c in monitor.update(moving(0), float(i))] == []
    assert [c.kind for c in monitor.update(np.zeros((64, 96, 3), np.uint8), 51.0)] == ["black"]  # the rest still holds


class NothingFound:
    class_names = ["scratch"]

    def __call__(self, image: np.ndarray) -> Detections:
        return Detections.empty()


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_watch_sends_paired_camera_fault_events_in_order(tmp_path: Path, faulty_video: Path) -> None:
    events = tmp_path / "events.jsonl"
    options = WatchOptions(source=str(faulty_video), mode="part", sinks=(str(events),),
                           outbox=tmp_path / "outbox.sqlite", flush_timeout_s=5.0)
    summary = watch(options, detector=NothingFound())
    sent = [Event.from_dict(e) for e in read_events(events)]  # valid events of the schema
    assert [(e.decision, e.alarm.reason, e.alarm.state, e.frame_index) for e in sent] == [
        ("camera_fault", kind, state, frame) for kind, state, frame in EXPECTED]
    raised = {e.alarm.reason: e.event_id for e in sent if e.alarm.state == "raised"}
    assert {e.alarm.reason: e.alarm.alarm_id for e in sent if e.alarm.state == "cleared"} == raised
    assert all(e.part_id is None and not e.defects for e in sent)
    frozen = next(e for e in sent if e.alarm.reason == "frozen")
    assert frozen.alarm.features["frozen"]["seconds"] == pytest.approx(2.0)
    assert "frozen picture for 2.0 s" in frozen.message
    assert summary.stats.camera_faults == 3 and summary.stats.active_alarms == {}
    assert summary.stats.frames == FRAMES  # every frame still inspected


def test_watch_on_a_moving_line_sends_the_same_camera_fault_events(tmp_path: Path, faulty_video: Path) -> None:
    """Track mode: the belt is learned from the first 30 frames and the camera check shares the part finder's copy of
    each frame from then on; the alarms are raised and cleared on the same frames as in part mode."""
    events = tmp_path / "events.jsonl"
    options = WatchOptions(source=str(faulty_video), mode="track", belt_frames=30, sinks=(str(events),),
                           outbox=tmp_path / "outbox.sqlite", flush_timeout_s=5.0)
    watch(options, detector=NothingFound())
    sent = [Event.from_dict(e) for e in read_events(events)]
    assert [(e.alarm.reason, e.alarm.state, e.frame_index) for e in sent if e.decision == "camera_fault"] == EXPECTED


def test_camera_faults_off_sends_nothing(tmp_path: Path, faulty_video: Path) -> None:
    events = tmp_path / "events.jsonl"
    options = WatchOptions(source=str(faulty_video), mode="part", sinks=(str(events),), camera_faults=False,
                           outbox=tmp_path / "outbox.sqlite", flush_timeout_s=5.0)
    summary = watch(options, detector=NothingFound())
    assert not events.exists() or read_events(events) == []
    assert summary.stats.camera_faults == 0


def test_an_image_folder_of_identical_photos_raises_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(12):
        cv2.imwrite(str(folder / f"part{i:02d}.png"), moving(0))
    events = tmp_path / "events.jsonl"
    # 12 photos at 10 per second: 1.1 s of the same picture, longer than frozen_s.
    options = WatchOptions(source=str(folder), sinks=(str(events),), outbox=tmp_path / "outbox.sqlite",
                           fps_cap=10.0, frozen_s=0.5, flush_timeout_s=5.0)
    summary = watch(options, detector=NothingFound())
    assert summary.stats.frames == 12
    assert not events.exists() or read_events(events) == []
