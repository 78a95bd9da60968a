"""No output of `watch` is ever written into its source: refused before anything is opened.

Each case builds a real, readable source (an mp4, PNGs, a folder, a glob, symlinks to them) and an
output that is, or lies in, that source. Without the check every case would run and write (append
events to the video, create the outbox or evidence among the images); with it, not one byte or
mtime under the test folder changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from yolodefect.cli import app
from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.stream.events import Event
from yolodefect.stream.options import DEFAULT_OUTBOX, WatchOptions, check_outputs_outside_source
from yolodefect.stream.watch import watch
from tests.builders import write_video

NAMES = ["scratch"]


def one_defect(image: np.ndarray) -> Detections:
    """Every frame has a defect, so a run writes events, evidence and video from the first frame."""
    return Detections(np.array([[2.0, 2.0, 20.0, 20.0]]), np.array([0.9]), np.array([0]))



def write_images(folder: Path, count: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        assert cv2.imwrite(str(folder / f"part_{i}.png"), np.full((64, 64, 3), 60 + 60 * i, np.uint8))
    return folder


def tree_state(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root`` (symlinks not followed) with its bytes and mtime: any write shows up."""
    state: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            content = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else None
            state[str(path.relative_to(root))] = (info.st_mtime_ns, info.st_size, content)
    return state


# Each case: (tmp_path) -> WatchOptions keyword arguments, relative to tmp_path (the test chdirs there),
# and the two paths the error must name.
Case = Callable[[Path], tuple[dict[str, Any], str, str]]


def sink_is_the_video(tmp: Path) -> tuple[dict[str, Any], str, str]:
    write_video(tmp / "v.mp4", 4)
    return dict(source="v.mp4", sinks=("v.mp4",)), "--sink v.mp4", "v.mp4"


def sink_is_a_symlink_to_the_video(tmp: Path) -> tuple[dict[str, Any], str, str]:
    write_video(tmp / "v.mp4", 4)
    (tmp / "events.jsonl").symlink_to(tmp / "v.mp4")
    return dict(source="v.mp4", sinks=("events.jsonl",)), "--sink events.jsonl", "v.mp4"


def file_url_sink_is_the_video(tmp: Path) -> tuple[dict[str, Any], str, str]:
    write_video(tmp / "v.mp4", 4)
    url = f"file://{tmp / 'v.mp4'}"
    return dict(source="v.mp4", sinks=(url,)), f"--sink {url}", "v.mp4"


def save_is_the_video_behind_a_source_symlink(tmp: Path) -> tuple[dict[str, Any], str, str]:
    write_video(tmp / "v.mp4", 4)
    (tmp / "camera.mp4").symlink_to(tmp / "v.mp4")
    return dict(source="camera.mp4", save="v.mp4"), "--save v.mp4", "camera.mp4"


def outbox_is_the_source_image(tmp: Path) -> tuple[dict[str, Any], str, str]:
    write_images(tmp / "parts", 1)
    return dict(source="parts/part_0.png", outbox="parts/part_0.png"), "--outbox parts/part_0.png", "parts/part_0.png"


def evidence_inside_the_watched_folder(tmp: Path) -> tuple[dict[str, Any], str, str]:
    write_images(tmp / "hot")
    return (dict(source="hot", follow=True, max_frames=2, evidence_dir="hot/evidence"),
            "--evidence hot/evidence", "hot")


def sink_inside_the_folder(tmp: Path) -> tuple[dict[str, Any], str, str]:
    write_images(tmp / "parts")
    return dict(source="parts", sinks=("parts/events.jsonl",)), "--sink parts/events.jsonl", "parts"


def outbox_in_the_folder_through_a_symlinked_folder(tmp: Path) -> tuple[dict[str, Any], str, str]:
    write_images(tmp / "parts")
    (tmp / "spool").symlink_to(tmp / "parts", target_is_directory=True)
    return dict(source="parts", outbox="spool/outbox.sqlite"), "--outbox spool/outbox.sqlite", "parts"


def default_outbox_in_the_folder_being_watched(tmp: Path) -> tuple[dict[str, Any], str, str]:
    write_images(tmp)  # `yolodefect watch --source .` from the image folder itself
    return (dict(source=".", outbox=DEFAULT_OUTBOX, sinks=(str(tmp.parent / f"{tmp.name}.jsonl"),)),
            f"--outbox {DEFAULT_OUTBOX} (the default)", ".")


def folder_inside_the_evidence_folder(tmp: Path) -> tuple[dict[str, Any], str, str]:
    write_images(tmp / "station" / "parts")
    return dict(source="station/parts", evidence_dir="station"), "--evidence station", "station/parts"


def sink_matched_by_the_glob(tmp: Path) -> tuple[dict[str, Any], str, str]:
    write_images(tmp / "parts")
    return dict(source="parts/*.png", sinks=("parts/new.png",)), "--sink parts/new.png", "parts/*.png"


def save_is_a_file_the_glob_matched(tmp: Path) -> tuple[dict[str, Any], str, str]:
    write_images(tmp / "parts")
    return dict(source="parts/*.png", save="parts/part_1.png"), "--save parts/part_1.png", "parts/part_1.png"


def evidence_under_a_recursive_glob(tmp: Path) -> tuple[dict[str, Any], str, str]:
    (tmp / "parts" / "old").mkdir(parents=True)
    assert cv2.imwrite(str(tmp / "parts" / "old" / "part.jpg"), np.full((64, 64, 3), 128, np.uint8))
    return dict(source="parts/**/*.jpg", evidence_dir="parts/evidence"), "--evidence parts/evidence", "parts/**/*.jpg"


REFUSED: list[Case] = [
    sink_is_the_video, sink_is_a_symlink_to_the_video, file_url_sink_is_the_video,
    save_is_the_video_behind_a_source_symlink, outbox_is_the_source_image, evidence_inside_the_watched_folder,
    sink_inside_the_folder, outbox_in_the_folder_through_a_symlinked_folder, default_outbox_in_the_folder_being_watched,
    folder_inside_the_evidence_folder,
    sink_matched_by_the_glob, save_is_a_file_the_glob_matched, evidence_under_a_recursive_glob,
]


@pytest.mark.parametrize("case", REFUSED, ids=[case.__name__ for case in REFUSED])
def test_an_output_into_the_source_is_refused_before_anything_is_written(case: Case, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    kwargs, output, source = case(tmp_path)
    kwargs.setdefault("outbox", "outbox.sqlite")
    before = tree_state(tmp_path)
    with pytest.raises(UsageError) as refused:
        watch(WatchOptions(**kwargs), detector=one_defect, class_names=NAMES)
    message = str(refused.value)
    assert output in message and f" {source}" in message
    assert tree_state(tmp_path) == before  # not a byte, not an mtime: no outbox, no evidence, no events


def test_outputs_beside_the_source_run_and_write_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check refuses only real overlaps: outputs next to a folder, a glob and a video all work."""
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "parts")
    write_video(tmp_path / "v.mp4", 4)
    # A glob's folder is not its source: only what the pattern matches is.
    glob_run = WatchOptions(source="parts/*.png", sinks=("parts/events.jsonl",), outbox="parts/outbox.sqlite",
                            evidence_dir="parts/evidence")
    folder_run = WatchOptions(source="parts", sinks=("events.jsonl",), outbox="outbox.sqlite", evidence_dir="evidence")
    video_run = WatchOptions(source="v.mp4", mode="part", sinks=("v.jsonl",), outbox="v.sqlite", camera_faults=False,
                             save="v.annotated.mp4", max_frames=2)
    for options, events in ((glob_run, "parts/events.jsonl"), (folder_run, "events.jsonl"), (video_run, "v.jsonl")):
        check_outputs_outside_source(options)
        summary = watch(options, detector=one_defect, class_names=NAMES)
        lines = [Event.from_json(line) for line in (tmp_path / events).read_text().splitlines()]
        assert summary.flushed and len(lines) == summary.stats.events == 2
    assert sorted(p.name for p in (tmp_path / "parts").glob("*.png")) == ["part_0.png", "part_1.png"]


def test_live_and_stdin_sources_have_no_path_to_protect() -> None:
    for source in ("0", "rtsp://cam/stream", "-"):
        check_outputs_outside_source(WatchOptions(source=source, sinks=(source,), outbox=Path(source)))


def test_cli_refuses_a_sink_into_the_source_video_with_exit_2(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", 4)
    before = tree_state(tmp_path)
    result = CliRunner().invoke(app, ["watch", "--source", str(video), "--sink", str(video),
                                      "--outbox", str(tmp_path / "outbox.sqlite")])
    assert result.exit_code == 2, result.output
    assert f"--sink {video} is the source file {video}" in result.output
    assert "Traceback" not in result.output
    assert tree_state(tmp_path) == before
