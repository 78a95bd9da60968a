"""`convert` when the source or the run goes wrong: clipped boxes, blank class masks, odd COCO
categories, NUL-padded JPEGs, OUT in the wrong place, and runs stopped by SIGTERM or SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from yolodefect.cli import app
from yolodefect.data.check import check_dataset
from yolodefect.data.convert import ConvertOptions, convert
from yolodefect.data.formats import coco
from yolodefect.data.formats.base import ReadOptions
from yolodefect.data.staging import MARKER_NAME, StagingOwner, Terminated, read_marker
from yolodefect.errors import FormatError, UsageError

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_png(path: Path, seed: int, size_wh: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size_wh[1], size_wh[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def mask_source(root: Path, count: int = 20) -> Path:
    """images/ + masks/ with one 10x8 blob per image, every image distinct."""
    (root / "masks").mkdir(parents=True)
    pixels = np.zeros((48, 64), np.uint8)
    pixels[10:18, 20:30] = 255
    for index in range(count):
        write_png(root / "images" / f"p{index:02d}.png", seed=index)
        cv2.imwrite(str(root / "masks" / f"p{index:02d}.png"), pixels)
    return root


def labels_by_stem(out: Path) -> dict[str, list[str]]:
    return {path.stem: path.read_text().splitlines() for path in out.glob("labels/*/*.txt")}


# --------------------------------------------------------------------------- clipped boxes


def coco_source(root: Path, boxes: dict[str, list[float]]) -> Path:
    """A COCO file whose image ``a.png`` (64x48) has ``boxes`` (name -> [x, y, w, h]), plus 9 clean images."""
    images, annotations = [], []
    names = ["a.png"] + [f"g{index}.png" for index in range(9)]
    for image_id, name in enumerate(names, start=1):
        write_png(root / "images" / name, seed=100 + image_id)
        images.append({"id": image_id, "file_name": name, "width": 64, "height": 48})
    for index, bbox in enumerate(boxes.values(), start=1):
        annotations.append({"id": index, "image_id": 1, "category_id": 1, "bbox": bbox, "iscrowd": 0})
    for image_id in range(2, len(names) + 1):
        annotations.append({"id": 100 + image_id, "image_id": image_id, "category_id": 1, "bbox": [5, 5, 10, 10],
                            "iscrowd": 0})
    doc = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "dent"}]}
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances.json").write_text(json.dumps(doc))
    return root


def test_coco_box_crossing_the_border_is_clipped_with_a_warning_naming_file_box_and_image(tmp_path):
    boxes = {"negative corner": [-6, -4, 20, 14], "sub-pixel overshoot": [40, 30, 24.3, 18]}
    src = coco_source(tmp_path / "src", boxes)
    result = convert(src, tmp_path / "out", ConvertOptions(format="coco"))

    assert labels_by_stem(tmp_path / "out")["a"] == [
        "0 0.109375 0.104167 0.218750 0.208333",  # (0, 0, 14, 10): clipped at the top-left corner
        "0 0.812500 0.812500 0.375000 0.375000",  # (40, 30, 64, 48): rounding overshoot, clipped quietly
    ]
    clipped = [note for note in result.warnings if note.kind == "clipped_boxes"]
    assert [(Path(note.path).name, note.message) for note in clipped] == [
        ("instances.json", "box dent (-6, -4, 14, 10) of a.png crosses the border of the 64x48 image: "
                           "clipped to (0, 0, 14, 10)"),
    ]
    report = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert report["warning_counts"] == {"clipped_boxes": 1}


def test_voc_box_far_outside_the_image_is_clipped_and_counted(tmp_path):
    src = tmp_path / "src"
    for index in range(10):
        write_png(src / f"i{index}.png", seed=index)
        xmax = 500 if index == 0 else 30  # the image is 64 wide
        (src / f"i{index}.xml").write_text(
            f"<annotation><size><width>64</width><height>48</height></size><object><name>pit</name>"
            f"<bndbox><xmin>10</xmin><ymin>5</ymin><xmax>{xmax}</xmax><ymax>20</ymax></bndbox></object></annotation>"
        )
    result = convert(src, tmp_path / "out", ConvertOptions(format="voc"))
    assert labels_by_stem(tmp_path / "out")["i0"] == ["0 0.578125 0.260417 0.843750 0.312500"]  # (10, 5, 64, 20)
    assert [(Path(note.path).name, note.message) for note in result.warnings if note.kind] == [
        ("i0.xml", "box pit (10, 5, 500, 20) crosses the border of the 64x48 image: clipped to (10, 5, 64, 20)"),
    ]
    assert json.loads((tmp_path / "out" / "conversion.json").read_text())["warning_counts"] == {"clipped_boxes": 1}


# --------------------------------------------------------------------------- blank class masks


def test_blank_mask_in_a_class_folder_is_a_counted_warning_naming_the_file(tmp_path):
    src = tmp_path / "src"
    for index in range(12):
        write_png(src / "images" / f"m{index:02d}.png", seed=index)
        pixels = np.zeros((48, 64), np.uint8)
        if index not in (3, 7):
            pixels[5:15, 5:25] = 255
        elif index == 7:
            pixels[5:15, 5:25] = 90  # drawn, but under the threshold
        (src / "masks" / "crack").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(src / "masks" / "crack" / f"m{index:02d}.png"), pixels)
    result = convert(src, tmp_path / "out", ConvertOptions(format="mask"))

    blank = [note for note in result.warnings if note.kind == "blank_masks"]
    assert [Path(note.path).relative_to(src).as_posix() for note in blank] == ["masks/crack/m03.png",
                                                                                "masks/crack/m07.png"]
    assert "no pixel above 127" in blank[0].message and "defect-free" in blank[0].message
    assert "brightest pixel is 90" in blank[1].message
    report = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert report["warning_counts"] == {"blank_masks": 2}
    assert labels_by_stem(tmp_path / "out")["m03"] == []  # still read as it is: the user decides


def test_blank_mask_in_the_one_class_layout_stays_a_quiet_defect_free_image(tmp_path):
    src = mask_source(tmp_path / "src", count=12)
    cv2.imwrite(str(src / "masks" / "p05.png"), np.zeros((48, 64), np.uint8))
    result = convert(src, tmp_path / "out", ConvertOptions(format="mask"))
    assert result.warning_counts == {} and labels_by_stem(tmp_path / "out")["p05"] == []


# --------------------------------------------------------------------------- COCO category names


@pytest.mark.parametrize(("category", "message"), [
    ({"id": 1, "name": 3}, '"name" is 3, expected the class name as a non-empty string'),
    ({"id": 1, "name": None}, '"name" is null, expected'),
    ({"id": 1, "name": "  "}, '"name" is "  ", expected'),
    ({"id": 1, "name": ["dent"]}, '"name" is ["dent"], expected'),
    ({"id": 1}, 'category has no "name"'),
])
def test_coco_category_name_error_says_what_the_name_is(tmp_path, category, message):
    write_png(tmp_path / "a.png", seed=1)
    doc = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": [category]}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError) as raised:
        coco.read(tmp_path / "c.json", ReadOptions())
    assert "(categories[0])" in str(raised.value) and message in str(raised.value)


# --------------------------------------------------------------------------- NUL-padded JPEGs


def test_nul_padded_jpeg_is_accepted_and_written_without_the_padding(tmp_path):
    src = mask_source(tmp_path / "src", count=12)
    padded = src / "images" / "p04.jpg"
    Image.open(src / "images" / "p04.png").convert("RGB").save(padded, quality=90)
    (src / "images" / "p04.png").unlink()
    whole = padded.read_bytes()
    padded.write_bytes(whole + b"\x00" * 300)

    result = convert(src, tmp_path / "out", ConvertOptions(format="mask"))  # link mode
    written = next((tmp_path / "out" / "images").glob("*/p04.jpg"))
    assert not written.is_symlink() and written.read_bytes() == whole
    assert padded.read_bytes() == whole + b"\x00" * 300, "the source is never modified"
    assert [(Path(n.path).name, n.kind) for n in result.warnings if n.kind] == [("p04.jpg", "jpeg_trailing_bytes")]
    assert "300 NUL bytes" in result.warnings[0].message
    report = check_dataset(tmp_path / "out")
    assert not [problem for problem in report.problems if "p04" in problem.path]


# --------------------------------------------------------------------------- where OUT may be


@pytest.mark.parametrize(("out", "message"), [
    (".", "is the current folder"),
    ("..", "a folder holding the current folder"),
    ("sub/..", "is the current folder"),
])
def test_out_holding_the_current_folder_is_refused_and_leaves_nothing(tmp_path, monkeypatch, out, message):
    src = mask_source(tmp_path / "src", count=12)
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "notes.txt").write_text("the user's file")
    monkeypatch.chdir(work)
    with pytest.raises(UsageError, match=message):
        convert(src, Path(out), ConvertOptions(format="mask", force=True))
    assert (work / "notes.txt").read_text() == "the user's file"
    leftovers = [path for path in tmp_path.rglob("*") if ".partial-" in path.name or ".replaced-" in path.name]
    assert leftovers == []


def test_cli_convert_into_the_current_folder_is_one_line_and_exit_2(tmp_path, monkeypatch):
    src = mask_source(tmp_path / "src", count=12)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    result = CliRunner().invoke(app, ["convert", str(src), ".", "--force"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "is the current folder" in lines[0] and "Traceback" not in result.output
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize("out", ["src", "."])
def test_out_that_is_the_source_or_holds_it_is_refused(tmp_path, out):
    src = mask_source(tmp_path / "src", count=12)
    target = tmp_path / out
    with pytest.raises(UsageError, match="overlaps the source"):
        convert(src, target, ConvertOptions(format="mask", force=True))
    assert len(list((src / "images").iterdir())) == 12


# --------------------------------------------------------------------------- stopped runs

# The child converts through the real CLI; one hook holds it after its first written image, so
# that the signal lands mid-write every time, however fast the machine.
CHILD = """
import pathlib, sys, time
import yolodefect.data.convert as convert_module
real_write_item, ready = convert_module.write_item, pathlib.Path(sys.argv[1])
def held_write_item(*args, **kwargs):
    real_write_item(*args, **kwargs)
    if not ready.exists():
        ready.write_text("writing")
        time.sleep(60)
convert_module.write_item = held_write_item
from yolodefect.cli import app
app(args=sys.argv[2:], prog_name="yolodefect")
"""


def start_held_convert(tmp_path: Path, src: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    ready = tmp_path / "ready"
    process = subprocess.Popen([sys.executable, "-c", CHILD, str(ready), "convert", str(src), str(out), "--copy"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the child never started writing: {process.communicate()}")
        time.sleep(0.02)
    return process, ready


def partials(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.partial-*"))


def test_sigterm_mid_write_removes_the_staging_folder_and_says_so(tmp_path):
    src = mask_source(tmp_path / "src")
    out = tmp_path / "out"
    process, _ = start_held_convert(tmp_path, src, out)
    assert len(partials(out)) == 1, "the child is mid-write: its staging folder exists"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == Terminated.exit_code == 143, stderr
    assert "terminated (SIGTERM)" in stderr
    assert "Traceback" not in stderr
    assert partials(out) == [] and not out.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ready", "src"]


def test_sigkill_leaves_a_marked_staging_folder_that_the_next_run_removes(tmp_path, caplog):
    src = mask_source(tmp_path / "src")
    out = tmp_path / "out"
    process, _ = start_held_convert(tmp_path, src, out)
    process.kill()
    process.wait(timeout=30)  # reaped: a zombie would still count as running
    [stale] = partials(out)
    owner = read_marker(stale)
    assert owner is not None and owner.pid == process.pid and owner.host == socket.gethostname()

    # Folders this run cannot prove stale: no marker, a live process (this one), another machine.
    unmarked = tmp_path / ".out.partial-nomarker"
    unmarked.mkdir()
    alive = tmp_path / ".out.partial-alive"
    alive.mkdir()
    (alive / MARKER_NAME).write_text(json.dumps(StagingOwner.current().__dict__))
    elsewhere = tmp_path / ".out.partial-elsewhere"
    elsewhere.mkdir()
    (elsewhere / MARKER_NAME).write_text(json.dumps({**StagingOwner.current().__dict__, "host": "another-host",
                                                     "pid": process.pid}))
    other_out = tmp_path / ".other.partial-deadbeef"
    other_out.mkdir()
    (other_out / MARKER_NAME).write_text((stale / MARKER_NAME).read_text())
    # An old OUT the killed run had set aside for deletion: garbage too.
    replaced = tmp_path / ".out.replaced-deadbeef"
    (replaced / "images").mkdir(parents=True)
    (replaced / MARKER_NAME).write_text((stale / MARKER_NAME).read_text())

    with caplog.at_level(logging.INFO, logger="yolodefect.data.staging"):
        convert(src, out, ConvertOptions(format="mask"))
    assert not stale.exists() and not replaced.exists()
    assert f"removed {stale}, left by a stopped run (pid {process.pid}" in caplog.text
    assert unmarked.is_dir() and alive.is_dir() and elsewhere.is_dir() and other_out.is_dir()
    assert (out / "data.yaml").is_file() and not (out / MARKER_NAME).exists()


def test_a_reused_pid_does_not_keep_a_stale_folder_forever(tmp_path, caplog):
    src = mask_source(tmp_path / "src", count=12)
    out = tmp_path / "out"
    stale = tmp_path / ".out.partial-0badc0de"
    stale.mkdir()
    me = StagingOwner.current()
    if me.process_start is None:
        pytest.skip("psutil cannot read this process's start time here")
    # This test's own pid, but started at another time: the process that wrote the marker is gone.
    (stale / MARKER_NAME).write_text(json.dumps({**me.__dict__, "process_start": me.process_start - 1}))
    with caplog.at_level(logging.INFO, logger="yolodefect.data.staging"):
        convert(src, out, ConvertOptions(format="mask"))
    assert not stale.exists() and f"pid {os.getpid()}" in caplog.text


def test_convert_restores_the_sigterm_handler_it_found(tmp_path):
    src = mask_source(tmp_path / "src", count=12)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    convert(src, tmp_path / "a", ConvertOptions(format="mask"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def own_handler(signum, frame):  # a program embedding the library keeps its own handling
        raise AssertionError("not called")

    previous = signal.signal(signal.SIGTERM, own_handler)
    try:
        convert(src, tmp_path / "b", ConvertOptions(format="mask"))
        assert signal.getsignal(signal.SIGTERM) is own_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
