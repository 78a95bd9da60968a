"""Input faults at the station: every part that enters leaves with a decision, and the summary tells the truth.

Real faulty files: a real JPEG cut in half, a 0-byte .jpg, a missing path on stdin, a real MJPG AVI
with its end cut off. The model is a fake (what is tested is the station), except once through the
CLI with the shipped model.
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from yolodefect.cli import app
from yolodefect.detections import Detections
from yolodefect.render import render_watch_summary, watch_panel
from yolodefect.stream.options import WatchOptions
from yolodefect.stream.sources import (
    LiveSource,
    SourceOptions,
    UnreadableImageError,
    VideoFileSource,
    open_source,
    read_image,
)
from yolodefect.stream.stats import StatsBoard, WatchStats, WatchSummary
from yolodefect.stream.watch import watch

NAMES = ["scratch", "pit"]


class CountingDetector:
    """Finds nothing; counts its calls (an unreadable part must never reach the model)."""

    def __init__(self, delay_s: float = 0.0):
        self.calls = 0
        self.delay_s = delay_s
        self.first_start: float | None = None
        self.last_end: float | None = None

    def __call__(self, image: np.ndarray) -> Detections:
        if self.first_start is None:
            self.first_start = time.monotonic()
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        self.last_end = time.monotonic()
        return Detections.empty()


def part_image(level: int = 120) -> np.ndarray:
    image = np.full((96, 128, 3), level, np.uint8)
    cv2.circle(image, (64, 48), 30, (0, 180, 255), -1)
    return image


def write_parts(folder: Path) -> dict[str, Path]:
    """A good PNG, a 0-byte JPEG and a real JPEG cut in half (what a crashed camera upload leaves)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.png"
    assert cv2.imwrite(str(good), part_image())
    ok, data = cv2.imencode(".jpg", part_image(200))
    assert ok
    half = folder / "half.jpg"
    half.write_bytes(data.tobytes()[: len(data) // 2])
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    return {"good": good, "half": half, "empty": empty}


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def options_for(tmp_path: Path, source: str | Path, **overrides: Any) -> WatchOptions:
    values: dict[str, Any] = dict(source=str(source), sinks=(str(tmp_path / "events.jsonl"),),
                                  outbox=tmp_path / "outbox.sqlite", emit_pass=True)
    values.update(overrides)
    return WatchOptions(**values)


def assert_three_decisions(events: list[dict[str, Any]], parts: dict[str, Path]) -> None:
    assert [(e["part_id"], e["decision"]) for e in events] == [
        ("empty.jpg", "error"), ("good.png", "pass"), ("half.jpg", "error")]
    by_part = {e["part_id"]: e for e in events}
    assert by_part["empty.jpg"]["message"] == f"cannot decode {parts['empty']}: empty file (0 bytes)"
    assert by_part["half.jpg"]["message"].startswith(f"cannot decode {parts['half']}: truncated JPEG (")
    assert all(e["defects"] == [] for e in events)


# -- unreadable part images -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "glob"])
def test_every_part_image_gets_a_decision_even_when_it_cannot_be_decoded(tmp_path: Path, kind: str) -> None:
    parts = write_parts(tmp_path / "parts")
    source = tmp_path / "parts" if kind == "folder" else tmp_path / "parts" / "*"
    detector = CountingDetector()
    summary = watch(options_for(tmp_path, source, evidence_dir=tmp_path / "evidence"),
                    detector=detector, class_names=NAMES)
    events = read_events(tmp_path / "events.jsonl")
    assert_three_decisions(events, parts)
    assert detector.calls == 1  # only the readable part reached the model
    stats = summary.stats
    assert (stats.frames, stats.events, stats.errors, stats.passes, stats.unreadable_parts) == (3, 3, 2, 1, 2)
    assert stats.skipped_frames == 0 and stats.failed_frames == 0
    # The evidence of an unreadable part is a picture saying so, not a crash or nothing.
    for event in events:
        if event["decision"] == "error":
            assert Path(event["snapshot_paths"]["raw"]).is_file()


def test_stdin_paths_that_are_missing_or_broken_get_error_events(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    parts = write_parts(tmp_path / "parts")
    missing = tmp_path / "parts" / "gone.png"
    lines = [parts["good"], parts["half"], missing, parts["empty"]]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{p}\n" for p in lines)))
    summary = watch(options_for(tmp_path, "-"), detector=CountingDetector(), class_names=NAMES)
    events = read_events(tmp_path / "events.jsonl")
    assert [(e["part_id"], e["decision"]) for e in events] == [
        ("good.png", "pass"), ("half.jpg", "error"), ("gone.png", "error"), ("empty.jpg", "error")]
    assert events[2]["message"].startswith(f"cannot read {missing}: ")
    assert summary.stats.unreadable_parts == 3 and summary.stats.errors == 3


def test_hot_folder_gives_an_empty_or_cut_file_an_error_event(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    stop = threading.Event()
    result: list[WatchSummary] = []
    options = options_for(tmp_path, folder, follow=True, max_frames=3)
    runner = threading.Thread(target=lambda: result.append(
        watch(options, detector=CountingDetector(), class_names=NAMES, stop_event=stop)))
    runner.start()
    try:
        time.sleep(0.3)
        parts = write_parts(folder)  # arrive while the station runs; the empty one stays empty
        runner.join(timeout=15)
    finally:
        stop.set()
        runner.join(timeout=5)
    assert result and result[0].stopped_by == "max_frames"
    events = sorted(read_events(tmp_path / "events.jsonl"), key=lambda e: e["part_id"])
    assert_three_decisions(events, parts)


def test_fail_safe_off_stops_on_an_unreadable_part_naming_it(tmp_path: Path) -> None:
    parts = write_parts(tmp_path / "parts")
    parts["empty"].unlink()  # good.png first, then half.jpg
    detector = CountingDetector()
    with pytest.raises(UnreadableImageError, match=f"cannot decode {parts['half']}: truncated JPEG.*fail_safe=off"):
        watch(options_for(tmp_path, tmp_path / "parts", fail_safe="off"), detector=detector, class_names=NAMES)
    assert [e["part_id"] for e in read_events(tmp_path / "events.jsonl")] == ["good.png"]  # flushed before stopping
    assert detector.calls == 1


def test_jpeg_with_a_trailer_after_its_end_marker_is_read(tmp_path: Path) -> None:
    # Cameras append data or NUL padding after the end-of-image marker: that is not a cut file.
    ok, data = cv2.imencode(".jpg", part_image())
    assert ok
    path = tmp_path / "trailer.jpg"
    path.write_bytes(data.tobytes() + b"\x00" * 64 + b"vendor trailer")
    (frame,) = list(open_source(str(path)))
    assert frame.error is None and frame.size_wh == (128, 96)


def test_jpeg_cut_after_its_embedded_thumbnail_is_still_truncated(tmp_path: Path) -> None:
    # A thumbnail in an APP segment brings its own end marker: the cut main image must not pass for whole.
    thumbnail = cv2.imencode(".jpg", part_image()[::4, ::4])[1].tobytes()
    main = cv2.imencode(".jpg", part_image(200))[1].tobytes()
    segment = b"\xff\xef" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    whole = main[:2] + segment + main[2:]
    path = tmp_path / "thumb.jpg"
    path.write_bytes(whole)
    assert read_image(path).shape == (96, 128, 3)
    path.write_bytes(whole[: len(segment) + len(main) // 2])
    with pytest.raises(UnreadableImageError, match=r"truncated JPEG \("):
        read_image(path)


# -- truncated video --------------------------------------------------------------------------


def write_avi(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        image = np.zeros((48, 64, 3), np.uint8)
        image[:, : i % 64 + 1] = 200  # every frame different, so MJPG cannot share anything
        writer.write(image)
    writer.release()
    return path


def test_cut_video_is_reported_as_truncated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    video = write_avi(tmp_path / "line.avi", 60)
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])  # a copy interrupted halfway
    with caplog.at_level("WARNING"):
        summary = watch(options_for(tmp_path, video, mode="part", emit_pass=False), detector=CountingDetector(),
                        class_names=NAMES)
    stats = summary.stats
    assert 10 < stats.frames < 60
    assert stats.truncated is True
    assert stats.truncation == f"video {video} ended early at frame {stats.frames} of 60 (truncated file?)"
    assert stats.truncation in caplog.text
    assert stats.skipped_frames == 0  # the missing end is not "skipped frames"
    assert summary.to_dict()["truncated"] is True
    console = Console(record=True, width=200)
    render_watch_summary(summary, console)
    assert f"ended early at frame {stats.frames} of 60" in console.export_text()


def test_complete_video_is_not_truncated_and_looping_a_cut_one_warns_once(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    whole = write_avi(tmp_path / "whole.avi", 30)
    summary = watch(options_for(tmp_path, whole, mode="part", emit_pass=False), detector=CountingDetector(),
                    class_names=NAMES)
    assert summary.stats.frames == 30 and summary.stats.truncated is False and summary.stats.truncation is None

    cut = write_avi(tmp_path / "cut.avi", 30)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    source = VideoFileSource(cut, SourceOptions(loop=True))
    with caplog.at_level("WARNING"):
        frames = [f for _, f in zip(range(40), source)]
    assert len(frames) == 40
    assert caplog.text.count("ended early") == 1
    assert source.stats.snapshot()["truncated"] >= 2  # every pass counted


# -- fps over the frames' own time ------------------------------------------------------------


def test_final_fps_ignores_a_long_flush_at_shutdown(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(20):
        cv2.imwrite(str(folder / f"p{i:02d}.png"), part_image(i * 10))
    detector = CountingDetector(delay_s=0.01)
    # Port 9 refuses connections: shutdown waits the whole flush timeout, longer than the 3 s fps window.
    options = options_for(tmp_path, folder, flush_timeout_s=3.5,
                          sinks=(str(tmp_path / "events.jsonl"), "http://127.0.0.1:9/hook"))
    start = time.monotonic()
    summary = watch(options, detector=detector, class_names=NAMES)
    elapsed = time.monotonic() - start
    assert not summary.flushed and elapsed > 3.5
    model_rate = 20 / (detector.last_end - detector.first_start)
    # The station's own rate: a bit below the model's alone (reading, outbox), far above the run's average.
    assert 0.4 * model_rate < summary.stats.fps <= 1.05 * model_rate
    assert summary.stats.fps > 3 * 20 / elapsed


def test_stats_board_final_fps_is_frames_over_their_span() -> None:
    board = StatsBoard(WatchStats(source="s", mode="part", model={}), fps_window_s=0.2)
    for _ in range(5):
        time.sleep(0.02)
        board.frame_done(latency_ms=20.0)  # each frame took 20 ms from capture to decision
    time.sleep(0.3)  # the shutdown flush: outside the window, outside the frames' span
    assert board.snapshot(running=True).fps == 0.0  # live view: nothing recent
    final = board.snapshot(running=False).fps
    assert 5 / 0.3 < final <= 5 / 0.1  # 5 frames in 0.1 s (a little more when sleeps overshoot)


# -- live source open attempts ----------------------------------------------------------------


class NeverOpens:
    def isOpened(self) -> bool:
        return False

    def read(self) -> tuple[bool, np.ndarray | None]:
        return False, None

    def release(self) -> None:
        pass

    def get(self, prop_id: int) -> float:
        return 0.0


class Works(NeverOpens):
    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        time.sleep(0.005)
        return True, np.full((48, 64, 3), 90, np.uint8)


def test_a_stream_that_never_opens_counts_its_failures() -> None:
    stop = threading.Event()
    calls: list[int] = []

    class LastTry(NeverOpens):
        def release(self) -> None:
            stop.set()  # the operator gives up after the third failed open

    def factory(target: object) -> NeverOpens:
        calls.append(1)
        return LastTry() if len(calls) == 3 else NeverOpens()

    source = LiveSource("rtsp://cam", "rtsp://cam", SourceOptions(reconnect_initial_s=0.02, reconnect_max_s=0.05),
                        stop, factory)
    assert list(source) == []
    counts = source.stats.snapshot()
    assert (counts["open_attempts"], counts["open_failures"], counts["reconnects"]) == (3, 3, 0)


def test_an_open_that_stalls_counts_as_a_failure() -> None:
    release = threading.Event()
    calls: list[int] = []

    def factory(target: object) -> NeverOpens:
        calls.append(1)
        if len(calls) == 1:
            release.wait(10)  # an RTSP open hanging on a black-holed network
            return Works()
        return Works()

    source = LiveSource("rtsp://cam", "rtsp://cam", SourceOptions(stall_timeout_s=0.2, reconnect_initial_s=0.02),
                        capture_factory=factory)
    frames = [f for _, f in zip(range(3), source)]
    release.set()  # the abandoned open now returns "opened": it must not count, nor read
    time.sleep(0.1)
    assert len(frames) == 3
    counts = source.stats.snapshot()
    assert (counts["open_attempts"], counts["open_failures"], counts["reconnects"]) == (2, 1, 1)


def test_watch_summary_and_panel_show_open_attempts_and_failures(tmp_path: Path) -> None:
    cameras = [NeverOpens(), Works()]

    def factory(target: object) -> NeverOpens:
        return cameras.pop(0) if len(cameras) > 1 else cameras[0]

    options = WatchOptions(source="0", sinks=(str(tmp_path / "events.jsonl"),), outbox=tmp_path / "outbox.sqlite",
                           max_frames=5, mode="part")
    summary = watch(options, detector=CountingDetector(), class_names=NAMES, capture_factory=factory)
    stats = summary.stats
    assert (stats.open_attempts, stats.open_failures, stats.reconnects) == (2, 1, 1)
    console = Console(record=True, width=200)
    console.print(watch_panel(stats))
    assert "2 open attempts, 1 failed, 1 reconnects" in console.export_text()


# -- through the CLI ----------------------------------------------------------------------------


runner = CliRunner()


def test_cli_three_images_in_three_events_out(tmp_path: Path) -> None:
    # The shipped demonstration model (no --model): real model loading, real inference on the good part.
    parts = write_parts(tmp_path / "parts")
    events_file = tmp_path / "events.jsonl"
    result = runner.invoke(app, ["watch", "--source", str(tmp_path / "parts"), "--emit-pass",
                                 "--sink", str(events_file), "--outbox", str(tmp_path / "outbox.sqlite"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    events = read_events(events_file)
    assert [e["part_id"] for e in events] == ["empty.jpg", "good.png", "half.jpg"]
    assert [e["decision"] for e in events][::2] == ["error", "error"]
    assert events[1]["decision"] in ("pass", "reject")
    assert events[0]["message"] == f"cannot decode {parts['empty']}: empty file (0 bytes)"
    assert summary["unreadable_parts"] == 2 and summary["errors"] == 2 and summary["events"] == 3

    # fail-safe off: one red line naming the file, exit 1, no traceback.
    result = runner.invoke(app, ["watch", "--source", str(tmp_path / "parts"), "--fail-safe", "off",
                                 "--sink", str(tmp_path / "off.jsonl"), "--outbox", str(tmp_path / "off.sqlite")])
    assert result.exit_code == 1, result.output
    assert f"cannot decode {parts['empty']}: empty file (0 bytes)" in result.output
    assert "Traceback" not in result.output
