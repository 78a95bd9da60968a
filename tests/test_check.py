"""`check`: each problem found in a dataset built to have it, statistics, imgsz advice, JSON."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yolodefect.data.check import CheckReport, check_dataset, suggest_imgsz
from yolodefect.errors import UsageError

NAMES = ["scratch", "dent"]

# (split, stem) -> label text; every class in every split, every image distinct.
CLEAN = {
    ("train", "t0"): "0 0.5 0.5 0.25 0.25\n1 0.3 0.3 0.2 0.2\n",
    ("train", "t1"): "0 0.5 0.5 0.25 0.25\n0 0.2 0.2 0.1 0.1\n",
    ("train", "t2"): "0 0.5 0.5 0.5 0.5\n0 0.6 0.6 0.1 0.1\n0 0.7 0.7 0.1 0.1\n",
    ("train", "t3"): "",
    ("val", "v0"): "0 0.5 0.5 0.25 0.25\n",
    ("val", "v1"): "1 0.5 0.5 0.25 0.25\n",
}


def write_image(path: Path, shade: int, size_wh: tuple[int, int] = (64, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size_wh, (shade, 255 - shade, 40)).save(path)
    return path


def make_dataset(
    root: Path,
    labels: dict[tuple[str, str], str | None],
    *,
    size_wh: tuple[int, int] = (256, 256),
    suffix: str = ".png",
) -> Path:
    for index, ((split, stem), text) in enumerate(labels.items()):
        write_image(root / "images" / split / f"{stem}{suffix}", shade=index * 7 % 256, size_wh=size_wh)
        if text is not None:
            label = root / "labels" / split / f"{stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(text, encoding="utf-8")
    splits = sorted({split for split, _ in labels})
    lines = [f"path: {root}"] + [f"{split}: images/{split}" for split in splits]
    lines += ["names:"] + [f"  {index}: {name}" for index, name in enumerate(NAMES)]
    (root / "data.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def set_label(root: Path, split: str, stem: str, text: str) -> None:
    (root / "labels" / split / f"{stem}.txt").write_text(text, encoding="utf-8")


def truncate_jpeg(root: Path) -> None:
    path = root / "images" / "train" / "t0.png"
    jpeg = path.with_suffix(".jpg")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(jpeg, quality=90)
    path.unlink()
    jpeg.write_bytes(jpeg.read_bytes()[:-40])


def empty_split(root: Path) -> None:
    (root / "images" / "test").mkdir(parents=True)
    with (root / "data.yaml").open("a", encoding="utf-8") as handle:
        handle.write("test: images/test\n")


# Each case: how to break the clean dataset, then the (level, path ending, message part, line)
# that check must report.
Mutation = Callable[[Path], None]
PROBLEM_CASES: dict[str, tuple[Mutation, str, str, str, int | None]] = {
    "unreadable image": (
        lambda root: (root / "images" / "train" / "t1.png").write_bytes(b"not an image at all"),
        "error", "images/train/t1.png", "unreadable image", None,
    ),
    "truncated jpeg": (truncate_jpeg, "error", "images/train/t0.jpg", "truncated JPEG", None),
    "tiny image": (
        lambda root: write_image(root / "images" / "train" / "t3.png", 200, size_wh=(8, 40)),
        "error", "images/train/t3.png", "under 10 px", None,
    ),
    "coordinate out of range": (
        lambda root: set_label(root, "train", "t0", "0 0.5 0.5 0.25 0.25\n1 1.2 0.3 0.2 0.2\n"),
        "error", "labels/train/t0.txt", "outside [0, 1]", 2,
    ),
    "negative coordinate": (
        lambda root: set_label(root, "train", "t0", "0 -0.05 0.5 0.25 0.25\n"),
        "error", "labels/train/t0.txt", "outside [0, 1]", 1,
    ),
    "zero-size box": (
        lambda root: set_label(root, "train", "t1", "0 0.5 0.5 0.25 0.25\n0 0.5 0.5 0 0.1\n"),
        "error", "labels/train/t1.txt", "zero or negative box size", 2,
    ),
    "class id out of range": (
        lambda root: set_label(root, "val", "v0", "\n2 0.5 0.5 0.25 0.25\n"),
        "error", "labels/val/v0.txt", "class id 2 is out of range", 2,
    ),
    "class id not integer": (
        lambda root: set_label(root, "val", "v0", "0.5 0.5 0.5 0.25 0.25\n"),
        "error", "labels/val/v0.txt", "not an integer", 1,
    ),
    "non-numeric row": (
        lambda root: set_label(root, "train", "t2", "0 0.5 0.5 0.5 0.5\n0 0.6 0.6 0.1 0.1\nscratch 0.7 0.7 0.1 0.1\n"),
        "error", "labels/train/t2.txt", "not numbers", 3,
    ),
    "wrong column count": (
        lambda root: set_label(root, "train", "t2", "0 0.5 0.5 0.5 0.5 0.1\n"),
        "error", "labels/train/t2.txt", "6 numbers", 1,
    ),
    "boxes mixed with polygons": (
        lambda root: set_label(root, "train", "t2", "0 0.5 0.5 0.5 0.5\n0 0.1 0.1 0.5 0.1 0.5 0.5\n"),
        "error", "labels/train/t2.txt", "mixes box rows", None,
    ),
    "duplicate label row": (
        lambda root: set_label(root, "train", "t1", "0 0.5 0.5 0.25 0.25\n0 0.5 0.5 0.25 0.25\n"),
        "warning", "labels/train/t1.txt", "repeats line 1", 2,
    ),
    "label without image": (
        lambda root: set_label(root, "train", "ghost", "0 0.5 0.5 0.1 0.1\n"),
        "warning", "labels/train/ghost.txt", "without an image", None,
    ),
    "image without label": (
        lambda root: (root / "labels" / "train" / "t3.txt").unlink(),
        "warning", "images/train/t3.png", "unlabelled", None,
    ),
    "duplicate within split": (
        lambda root: shutil.copy(root / "images" / "train" / "t0.png", root / "images" / "train" / "t9.png"),
        "warning", "images/train/t9.png", "duplicate of", None,
    ),
    "duplicate across splits": (
        lambda root: shutil.copy(root / "images" / "train" / "t1.png", root / "images" / "val" / "v9.png"),
        "error", "images/val/v9.png", "leakage", None,
    ),
    "split without images": (empty_split, "error", "images/test", "no images", None),
    "class absent from a split": (
        lambda root: set_label(root, "val", "v1", "0 0.5 0.5 0.25 0.25\n"),
        "warning", "images/val", "'dent' has no instances in val", None,
    ),
    "class absent from train": (
        lambda root: set_label(root, "train", "t0", "0 0.5 0.5 0.25 0.25\n"),
        "error", "images/train", "'dent' has no instances in train", None,
    ),
    "two splits share a folder": (
        lambda root: (root / "data.yaml").write_text(
            f"path: {root}\ntrain: images/train\nval: images/train\nnames: [scratch, dent]\n", encoding="utf-8"
        ),
        "error", "images/train", "uses the same folder as train", None,
    ),
    "no val split": (
        lambda root: (root / "data.yaml").write_text(
            f"path: {root}\ntrain: images/train\nnames: [scratch, dent]\n", encoding="utf-8"
        ),
        "error", "data.yaml", "no val split", None,
    ),
}


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds", CLEAN)


def test_clean_dataset_has_no_problems(clean: Path) -> None:
    report = check_dataset(clean / "data.yaml")
    assert report.problems == []
    assert not report.has_errors


@pytest.mark.parametrize("case", list(PROBLEM_CASES))
def test_check_finds_problem(clean: Path, case: str) -> None:
    mutate, level, path_end, fragment, line = PROBLEM_CASES[case]
    mutate(clean)
    report = check_dataset(clean)
    found = [
        problem
        for problem in report.problems
        if problem.path.endswith(path_end) and fragment in problem.message
    ]
    assert found, f"expected {level} {fragment!r} on {path_end}, got:\n" + "\n".join(map(str, report.problems))
    assert found[0].level == level
    assert found[0].line == line
    assert report.has_errors == any(problem.level == "error" for problem in report.problems)


def test_statistics_of_the_clean_dataset(clean: Path) -> None:
    report = check_dataset(clean)
    train, val = report.splits["train"], report.splits["val"]
    assert (train.images, train.instances, train.background_images) == (4, 7, 1)
    assert train.class_instances == {"scratch": 6, "dent": 1}
    assert (val.images, val.instances, val.background_images) == (2, 2, 0)
    assert report.imbalance_ratio == pytest.approx(6.0)
    assert report.background_share == pytest.approx(1 / 6)
    assert report.box_sizes is not None and report.box_sizes.count == 9
    assert report.box_sizes.native_long_side == 256
    # sqrt(w*h) of the 0.5 x 0.5 box, on a 256 px image.
    assert report.box_sizes.relative_side["max"] == pytest.approx(0.5)
    assert report.box_sizes.pixel_side["max"] == pytest.approx(128.0)
    # The 0.1 boxes are 25.6 px at native size: no small-object advice, imgsz capped at native.
    assert report.imgsz is not None and report.imgsz.suggested_imgsz == 256


def test_imbalance_is_infinite_when_a_class_is_missing_and_json_stays_valid(clean: Path) -> None:
    set_label(clean, "train", "t0", "0 0.5 0.5 0.25 0.25\n")
    report = check_dataset(clean)
    assert math.isinf(report.imbalance_ratio)
    assert report.to_dict()["imbalance_ratio"] is None


def test_to_dict_is_json_serialisable(clean: Path) -> None:
    set_label(clean, "train", "t0", "0 0.5 0.5 0.25 0.25\n1 2 0.3 0.2 0.2\n")
    data = json.loads(json.dumps(check_dataset(clean).to_dict(), allow_nan=False))
    assert data["errors"] >= 1
    assert data["splits"]["train"]["class_instances"]["scratch"] == 6
    assert {"level", "path", "message", "line"} <= set(data["problems"][0])


def test_tiny_boxes_warn_and_suggest_tiling(tmp_path: Path) -> None:
    # 4 px boxes on 640 px images: 4 px at imgsz 640 (native), so tiles of 640 * 4 / 12 -> 192 px.
    labels = {("train", f"t{i}"): f"{i % 2} 0.5 0.5 {4 / 640} {4 / 640}\n" for i in range(4)}
    labels |= {("val", f"v{i}"): f"{i % 2} 0.5 0.5 {4 / 640} {4 / 640}\n" for i in range(2)}
    report = check_dataset(make_dataset(tmp_path / "ds", labels, size_wh=(640, 640)))
    assert report.imgsz is not None
    assert report.imgsz.suggested_imgsz == 640
    assert report.imgsz.small_objects
    assert report.imgsz.tile == 192
    warnings = [problem for problem in report.warnings if "small objects" in problem.message]
    assert len(warnings) == 1 and "--tile 192" in warnings[0].message


def test_small_boxes_on_large_images_suggest_a_larger_imgsz(tmp_path: Path) -> None:
    # 16 px boxes on 1024 px images: 10 px at the default 640, 12 px first reached at 768.
    labels = {("train", f"t{i}"): f"{i % 2} 0.5 0.5 {16 / 1024} {16 / 1024}\n" for i in range(4)}
    labels |= {("val", f"v{i}"): f"{i % 2} 0.5 0.5 {16 / 1024} {16 / 1024}\n" for i in range(2)}
    report = check_dataset(make_dataset(tmp_path / "ds", labels, size_wh=(1024, 1024)))
    assert report.imgsz is not None
    assert report.imgsz.suggested_imgsz == 768
    assert not report.imgsz.small_objects and report.imgsz.tile is None
    assert any("train at imgsz 768" in problem.message for problem in report.warnings)


@pytest.mark.parametrize(
    ("side_px", "native", "expected"),
    [
        (60.0, 200, 224),  # large boxes on small images: capped at native size, rounded to 32
        (60.0, 2000, 416),  # 60/2000 * 416 = 12.5 px; 384 would give 11.5 px
        (40.0, 640, 320),  # already 20 px at the smallest candidate
        (10.0, 4000, 1280),  # beyond every candidate: capped, tiling suggested
    ],
)
def test_suggest_imgsz_rule(side_px: float, native: int, expected: int) -> None:
    sides = np.full(10, side_px)
    advice = suggest_imgsz(sides / native, sides, native)
    assert advice.suggested_imgsz == expected
    assert advice.small_objects == (side_px / native * expected < 12)


def test_shared_folder_is_one_error_not_one_per_image(clean: Path) -> None:
    (clean / "data.yaml").write_text(
        f"path: {clean}\ntrain: images/train\nval: images/train\nnames: [scratch, dent]\n", encoding="utf-8"
    )
    report = check_dataset(clean)
    assert [problem.message for problem in report.errors] == [
        "the val split uses the same folder as train: every image leaks"
    ]
    assert report.splits["val"].images == report.splits["train"].images == 4


def test_bad_small_box_fraction_is_a_usage_error(clean: Path) -> None:
    with pytest.raises(UsageError):
        check_dataset(clean, small_box_fraction=10)


def test_report_type(clean: Path) -> None:
    assert isinstance(check_dataset(str(clean / "data.yaml")), CheckReport)
