"""Frame sources: every frame of files, latest frame of live cameras, reconnects, hot folders, bad files."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolodefect.errors import UsageError
from yolodefect.stream.sources import (
    Frame,
    ImageFilesSource,
    LatestSlot,
    LiveSource,
    SourceOptions,
    StdinPathsSource,
    VideoFileSource,
    WatchedFolderSource,
    open_source,
)
from tests.builders import write_video

SIZE_WH = (64, 48)


def level_image(level: int) -> np.ndarray:
    return np.full((SIZE_WH[1], SIZE_WH[0], 3), level, dtype=np.uint8)


def numbered_image(number: int) -> np.ndarray:
    """Six 10 px wide black/white bars spelling ``number`` in binary: survives lossy video coding."""
    image = level_image(0)
    for bit in range(6):
        if number >> bit & 1:
            image[:, bit * 10:(bit + 1) * 10] = 255
    return image


def read_number(image: np.ndarray) -> int:
    return sum(1 << bit for bit in range(6) if image[:, bit * 10 + 3:bit * 10 + 7].mean() > 127)



def write_image(path: Path, level: int) -> Path:
    assert cv2.imwrite(str(path), level_image(level))
    return path


def collect(source, limit: int | None = None, timeout_s: float = 10.0) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout_s
    for frame in source:
        frames.append(frame)
        if (limit is not None and len(frames) >= limit) or time.monotonic() > deadline:
            break
    return frames


# -- files: every frame ---------------------------------------------------------------------


def test_video_file_every_frame_in_order(tmp_path: Path) -> None:
    source = open_source(str(write_video(tmp_path / "v.mp4", 40, draw=numbered_image)))
    assert isinstance(source, VideoFileSource) and not source.live and not source.per_part
    frames = collect(source)
    assert [f.index for f in frames] == list(range(40))
    assert [read_number(f.image) for f in frames] == list(range(40))  # the right pictures, in order
    assert frames[0].image.shape == (48, 64, 3) and frames[0].captured_at.tzinfo is not None
    assert source.stats.snapshot() == {"frames": 40, "dropped": 0, "skipped": 0, "reconnects": 0, "open_attempts": 0,
                                       "open_failures": 0, "truncated": 0, "truncation": None}


def test_video_file_is_decoded_on_the_consumers_thread_and_drops_nothing(tmp_path: Path) -> None:
    # A read-ahead thread would take a core from the model's thread pool (see file_sources).
    source = open_source(str(write_video(tmp_path / "v.mp4", 24, draw=numbered_image)))
    numbers, readers = [], set()
    for frame in source:
        readers |= {t.name for t in threading.enumerate() if t.name.startswith("read-")}
        time.sleep(0.01)  # a slow consumer: nothing may be skipped
        numbers.append(read_number(frame.image))
    assert numbers == list(range(24))
    assert readers == set()


def test_stdin_slow_consumer_drops_nothing(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{i:02d}.png", i * 10) for i in range(12)]
    stream = io.StringIO("".join(f"{p}\n" for p in paths))
    source = StdinPathsSource(SourceOptions(queue_size=2), stream=stream)
    hints = []
    for frame in source:
        time.sleep(0.01)  # slower than the reader thread: it must wait on the full queue, not drop
        hints.append(frame.part_hint)
    assert hints == [p.name for p in paths]


def test_video_file_loop(tmp_path: Path) -> None:
    source = open_source(str(write_video(tmp_path / "v.mp4", 10, draw=numbered_image)), SourceOptions(loop=True))
    frames = collect(source, limit=25)
    assert [f.index for f in frames] == list(range(25))
    assert [read_number(f.image) for f in frames] == [i % 10 for i in range(25)]


def test_fps_cap_paces_frames(tmp_path: Path) -> None:
    source = open_source(str(write_video(tmp_path / "v.mp4", 10, draw=numbered_image)), SourceOptions(fps_cap=50))
    start = time.monotonic()
    assert len(collect(source)) == 10
    assert time.monotonic() - start >= 0.15  # 9 gaps of 20 ms, with slack for timer resolution


def test_image_folder_sorted_one_part_per_file_corrupt_carries_its_error(tmp_path: Path) -> None:
    for name, level in (("b.png", 40), ("a.png", 20), ("c.jpg", 60)):
        write_image(tmp_path / name, level)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "notes.txt").write_text("ignored")
    source = open_source(str(tmp_path))
    assert isinstance(source, ImageFilesSource) and source.per_part
    frames = collect(source)
    # The corrupt file is a part too: it must reach the station, which gives it an error decision.
    assert [f.part_hint for f in frames] == ["a.png", "b.png", "broken.png", "c.jpg"]
    assert [f.error is not None for f in frames] == [False, False, True, False]
    assert frames[2].error.startswith(f"cannot decode {tmp_path / 'broken.png'}: ")
    assert source.stats.snapshot()["skipped"] == 0
    assert frames[0].image.shape == (48, 64, 3)


def test_glob_and_single_image(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / f"part_{i}.png", 10 * i)
    write_image(tmp_path / "other.png", 99)
    assert [f.part_hint for f in collect(open_source(str(tmp_path / "part_*.png")))] == [
        "part_0.png", "part_1.png", "part_2.png"]
    assert [f.part_hint for f in collect(open_source(str(tmp_path / "other.png")))] == ["other.png"]


def test_grayscale_and_alpha_images_become_bgr(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "g.png"), np.full((10, 12), 77, np.uint8))
    cv2.imwrite(str(tmp_path / "h.png"), np.full((10, 12, 4), 77, np.uint8))
    frames = collect(open_source(str(tmp_path)))
    assert [f.image.shape for f in frames] == [(10, 12, 3), (10, 12, 3)]


def test_stdin_paths(tmp_path: Path) -> None:
    a, b = write_image(tmp_path / "a.png", 10), write_image(tmp_path / "b.png", 20)
    stream = io.StringIO(f"{a}\n\n{tmp_path / 'missing.png'}\n{b}\n")
    source = StdinPathsSource(SourceOptions(), stream=stream)
    frames = collect(source)
    assert [f.part_hint for f in frames] == ["a.png", "missing.png", "b.png"]
    assert [f.error is not None for f in frames] == [False, True, False]
    assert frames[1].error.startswith(f"cannot read {tmp_path / 'missing.png'}: ")


@pytest.mark.parametrize("spec", ["does/not/exist.mp4", "nothing_matches_*.png"])
def test_unknown_source_is_a_usage_error(spec: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="camera index"if "*" not in spec else "no image"):
        open_source(str(tmp_path / spec))


def test_empty_folder_and_wrong_file_type(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="--follow"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(UsageError, match="neither a video"):
        open_source(str(tmp_path / "x.txt"))


class ScriptedVideo:
    """A video capture whose container claims ``total`` frames and whose frame ``bad`` cannot be decoded."""

    def __init__(self, total: int, bad: set[int]):
        self.total, self.bad, self.position = total, bad, 0

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        number, self.position = self.position, self.position + 1
        if number >= self.total or number in self.bad:
            return False, None
        return True, numbered_image(number)

    def release(self) -> None:
        pass

    def get(self, prop_id: int) -> float:
        return float(self.total) if prop_id == cv2.CAP_PROP_FRAME_COUNT else 0.0


def test_undecodable_video_frame_is_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    path.write_bytes(b"")
    source = VideoFileSource(path, SourceOptions(), capture_factory=lambda _: ScriptedVideo(12, {4, 5}))
    frames = collect(source)
    assert [read_number(f.image) for f in frames] == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]
    assert source.stats.snapshot()["skipped"] == 2


# -- hot folder -----------------------------------------------------------------------------


def test_watched_folder_processes_each_new_file_once_after_it_is_complete(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    write_image(folder / "existing.png", 10)  # there before start: processed too
    options = SourceOptions(follow=True, poll_interval_s=0.02, settle_s=0.4)
    source = open_source(str(folder), options)
    assert isinstance(source, WatchedFolderSource)
    got: list[Frame] = []
    consumer = threading.Thread(target=lambda: got.extend(collect(source, limit=5, timeout_s=8)))
    consumer.start()
    time.sleep(0.3)
    write_image(folder / "p1.png", 30)
    # A file written in two steps: it must not be read half-written.
    ok, data = cv2.imencode(".png", level_image(50))
    data = data.tobytes()
    partial = folder / "p2.png"
    partial.write_bytes(data[: len(data) // 2])
    time.sleep(0.05)
    with open(partial, "ab") as handle:
        handle.write(data[len(data) // 2:])
    time.sleep(0.5)
    (folder / "corrupt.png").write_bytes(b"garbage")
    write_image(folder / "p3.png", 70)
    (folder / "ignored.txt").write_text("not an image")
    consumer.join(timeout=10)
    source.stop()
    assert not consumer.is_alive()
    assert [f.part_hint for f in got] == ["existing.png", "p1.png", "p2.png", "corrupt.png", "p3.png"]
    assert [f.error is not None for f in got] == [False, False, False, True, False]
    assert float(got[2].image.mean()) == pytest.approx(50, abs=1)


# -- live sources -----------------------------------------------------------------------------


class FakeCamera:
    """A capture with a script: open or not, how many frames before failing, how long reads take."""

    def __init__(self, opened: bool = True, frames: int | None = None, read_s: float = 0.0,
                 block: threading.Event | None = None, start_level: int = 0):
        self.opened = opened
        self.remaining = frames
        self.read_s = read_s
        self.block = block
        self.level = start_level
        self.released = False

    def isOpened(self) -> bool:
        return self.opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.block is not None:
            self.block.wait(30)  # a stalled RTSP read
            return False, None
        if self.read_s:
            time.sleep(self.read_s)
        if self.remaining is not None:
            if self.remaining <= 0:
                return False, None
            self.remaining -= 1
        self.level = (self.level + 1) % 256
        return True, np.full((SIZE_WH[1], SIZE_WH[0]), self.level, np.uint8)  # mono camera

    def release(self) -> None:
        self.released = True

    def get(self, prop_id: int) -> float:
        return 0.0


class ScriptedFactory:
    """Hands out the scripted captures in order (the last one repeats), recording when each was opened."""

    def __init__(self, *captures: FakeCamera):
        self.captures = list(captures)
        self.opened_at: list[float] = []
        self.targets: list[object] = []

    def __call__(self, target: object) -> FakeCamera:
        self.targets.append(target)
        self.opened_at.append(time.monotonic())
        return self.captures.pop(0) if len(self.captures) > 1 else self.captures[0]


def test_camera_fails_then_recovers_with_backoff() -> None:
    factory = ScriptedFactory(
        FakeCamera(opened=False), FakeCamera(opened=False), FakeCamera(opened=False),  # unplugged
        FakeCamera(frames=5, read_s=0.002),  # works, then the cable drops
        FakeCamera(opened=False),
        FakeCamera(read_s=0.002),  # back for good
    )
    options = SourceOptions(reconnect_initial_s=0.05, reconnect_max_s=0.4)
    source = open_source(0, options, capture_factory=factory)
    assert isinstance(source, LiveSource) and source.live and source.kind == "camera"
    frames = collect(source, limit=30, timeout_s=10)
    assert len(frames) == 30
    assert frames[0].image.shape == (48, 64, 3)  # mono converted to BGR
    assert factory.targets[0] == 0
    assert source.stats.snapshot()["reconnects"] == 2
    gaps = np.diff(factory.opened_at[:4])
    # Exponential backoff: waits of 0.05, 0.1, 0.2 s, each times a jitter in [0.5, 1].
    assert gaps[0] >= 0.024 and gaps[1] >= 0.049 and gaps[2] >= 0.099
    assert gaps[2] > gaps[0] and gaps[2] < 1.0
    assert [f.index for f in frames] == sorted(f.index for f in frames)


def test_stalled_capture_is_abandoned_and_reopened() -> None:
    release = threading.Event()
    factory = ScriptedFactory(FakeCamera(block=release), FakeCamera(read_s=0.002))
    source = LiveSource("rtsp://cam", "rtsp://cam", SourceOptions(stall_timeout_s=0.3), capture_factory=factory)
    start = time.monotonic()
    frames = collect(source, limit=5, timeout_s=10)
    release.set()
    assert len(frames) == 5
    assert 0.25 <= time.monotonic() - start < 5
    assert len(factory.opened_at) == 2


def test_latest_frame_policy_drops_when_consumer_is_slow() -> None:
    camera = FakeCamera(read_s=0.002)
    source = open_source(0, capture_factory=ScriptedFactory(camera))
    indices = []
    for frame in source:
        time.sleep(0.05)  # a slow model
        indices.append(frame.index)
        if len(indices) == 6:
            break
    dropped = source.stats.snapshot()["dropped"]
    assert dropped > 0
    # Frames in between were replaced, not queued: the consumer sees far fewer than were captured.
    assert indices[-1] - indices[0] > 2 * (len(indices) - 1)
    assert source.stats.snapshot()["frames"] == 6


def test_latest_slot_holds_one_item_and_counts_drops() -> None:
    drops = []
    slot = LatestSlot(on_drop=lambda: drops.append(1))
    for i in range(100):
        slot.put(i)
    assert slot.get(0.01) == 99
    assert slot.get(0.01) is None
    assert slot.dropped == 99 == len(drops)


def test_stop_event_ends_a_live_source_promptly() -> None:
    stop = threading.Event()
    source = open_source("rtsp://cam", stop_event=stop,
                         capture_factory=ScriptedFactory(FakeCamera(opened=False)))
    threading.Timer(0.2, stop.set).start()
    start = time.monotonic()
    assert collect(source, timeout_s=5) == []
    assert time.monotonic() - start < 2


def test_a_stream_password_never_becomes_the_source_name() -> None:
    # The source name is logged, shown in the panel and carried by every event to every sink.
    factory = ScriptedFactory(FakeCamera(frames=3, read_s=0.002))
    url = "rtsp://admin:s3cret-pw@127.0.0.1:8554/line1"
    source = open_source(url, SourceOptions(), capture_factory=factory)
    frames = collect(source, limit=2, timeout_s=10)
    assert factory.targets[0] == url  # the camera is still opened with its credentials
    assert "s3cret-pw" not in source.name and "admin" not in source.name
    assert frames and all("s3cret-pw" not in frame.source for frame in frames)
