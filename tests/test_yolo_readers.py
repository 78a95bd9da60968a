"""The yolo and yolo-seg readers: exact absolute boxes, polygons to boxes, bad rows named by line."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from yolodefect.data.formats import yolo, yolo_seg
from yolodefect.data.formats.base import ReadOptions
from yolodefect.errors import FormatError

NAMES = ["scratch", "dent"]


def write_image(path: Path, size_wh: tuple[int, int] = (200, 100)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size_wh, (90, 90, 90)).save(path)
    return path


def write_label(dataset: Path, split: str, stem: str, text: str) -> Path:
    path = dataset / "labels" / split / f"{stem}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make_dataset(
    root: Path,
    labels: dict[tuple[str, str], str | None],
    *,
    size_wh: tuple[int, int] = (200, 100),
    yaml: bool = True,
) -> Path:
    """Images ``images/<split>/<stem>.png`` with the given label text (None: no label file)."""
    for (split, stem), text in labels.items():
        write_image(root / "images" / split / f"{stem}.png", size_wh)
        if text is not None:
            write_label(root, split, stem, text)
    splits = sorted({split for split, _ in labels})
    if yaml:
        lines = [f"path: {root}"] + [f"{split}: images/{split}" for split in splits]
        lines += ["names:"] + [f"  {index}: {name}" for index, name in enumerate(NAMES)]
        (root / "data.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        (root / "classes.txt").write_text("\n".join(NAMES) + "\n", encoding="utf-8")
    return root


def test_yolo_reads_exact_absolute_boxes(tmp_path: Path) -> None:
    root = make_dataset(
        tmp_path / "ds",
        {
            ("train", "a"): "0 0.5 0.5 0.2 0.4\n1 0.25 0.75 0.1 0.1\n",
            ("val", "b"): "1 0.1 0.2 0.2 0.2\n",
        },
    )
    dataset = yolo.read(root / "data.yaml", ReadOptions())
    assert dataset.format == "yolo"
    assert dataset.class_names == NAMES
    by_stem = {record.image_path.stem: record for record in dataset.records}
    a, b = by_stem["a"], by_stem["b"]
    assert a.split == "train" and b.split == "val"
    # 200 x 100 image: x scales by 200, y by 100.
    assert [box.class_name for box in a.boxes] == ["scratch", "dent"]
    assert a.boxes[0].xyxy == pytest.approx((80.0, 30.0, 120.0, 70.0))
    assert a.boxes[1].xyxy == pytest.approx((40.0, 70.0, 60.0, 80.0))
    assert b.boxes[0].xyxy == pytest.approx((0.0, 10.0, 40.0, 30.0))
    assert a.annotation_path == root / "labels" / "train" / "a.txt"


def test_yolo_reads_a_folder_with_classes_txt(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", {("train", "a"): "1 0.5 0.5 0.5 0.5\n"}, yaml=False)
    dataset = yolo.read(root, ReadOptions())
    assert dataset.class_names == NAMES
    assert dataset.records[0].boxes[0].class_name == "dent"


def test_missing_and_empty_label_files_are_background(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", {("train", "nolabel"): None, ("train", "empty"): ""})
    dataset = yolo.read(root, ReadOptions())
    assert len(dataset.records) == 2
    assert all(record.is_background for record in dataset.records)


def test_exif_rotated_image_uses_displayed_size(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", {("train", "a"): None})
    image_path = root / "images" / "train" / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 200x100, displayed 100x200
    Image.new("RGB", (200, 100)).save(image_path, exif=exif)
    write_label(root, "train", "rot", "0 0.5 0.5 1 1\n")
    record = next(r for r in yolo.read(root, ReadOptions()).records if r.image_path.stem == "rot")
    assert record.boxes[0].xyxy == pytest.approx((0.0, 0.0, 100.0, 200.0))


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("0 0.5 0.5 0.1 0.1\n2 0.5 0.5 0.1 0.1\n", 2, "out of range"),
        ("0 0.5 0.5 0.1 0.1\n\n-1 0.5 0.5 0.1 0.1\n", 3, "out of range"),
        ("0.5 0.5 0.5 0.1 0.1\n", 1, "not an integer"),
        ("0 0.5 0.5 0.1\n", 1, "5 (class cx cy w h)"),
        ("0 0.5 0.5 0.1 0.1\n0 a b c d\n", 2, "not numbers"),
        ("0 0.1 0.1 0.5 0.1 0.5 0.5\n", 1, "--format yolo-seg"),
    ],
)
def test_yolo_bad_rows_name_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    root = make_dataset(tmp_path / "ds", {("train", "a"): text})
    with pytest.raises(FormatError) as raised:
        yolo.read(root, ReadOptions())
    assert raised.value.path == root / "labels" / "train" / "a.txt"
    assert raised.value.where == f"line {line}"
    assert fragment in str(raised.value)


def test_skip_bad_drops_the_image_and_records_why(tmp_path: Path) -> None:
    root = make_dataset(
        tmp_path / "ds", {("train", "good"): "0 0.5 0.5 0.1 0.1\n", ("train", "bad"): "5 0.5 0.5 0.1 0.1\n"}
    )
    dataset = yolo.read(root, ReadOptions(skip_bad=True))
    assert [record.image_path.stem for record in dataset.records] == ["good"]
    assert len(dataset.skipped) == 1
    assert "bad.txt" in dataset.skipped[0].path and "line 1" in dataset.skipped[0].message


def test_yolo_seg_polygon_becomes_its_bounding_box(tmp_path: Path) -> None:
    root = make_dataset(
        tmp_path / "ds",
        {("train", "a"): "1 0.1 0.2 0.5 0.1 0.4 0.6 0.2 0.5\n0 0.5 0.5 0.2 0.2\n"},
    )
    dataset = yolo_seg.read(root, ReadOptions())
    assert dataset.format == "yolo-seg"
    polygon, box = dataset.records[0].boxes
    assert polygon.class_name == "dent"
    assert polygon.xyxy == pytest.approx((20.0, 10.0, 100.0, 60.0))
    assert box.xyxy == pytest.approx((80.0, 40.0, 120.0, 60.0))  # 5-number rows stay boxes


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0 0.1 0.1 0.5 0.5\n1 0.1 0.1 0.5 0.5 0.9\n", "at least 3 x y pairs"),  # odd coordinate count
        ("0 0.1 0.1 0.5 0.5 0.9 0.9 0.2\n", "at least 3 x y pairs"),
        ("0 0.1 0.1\n", "at least 3 x y pairs"),
        ("3 0.1 0.1 0.5 0.1 0.5 0.5\n", "out of range"),
    ],
)
def test_yolo_seg_bad_rows_name_file_and_line(tmp_path: Path, text: str, fragment: str) -> None:
    root = make_dataset(tmp_path / "ds", {("train", "a"): text})
    with pytest.raises(FormatError) as raised:
        yolo_seg.read(root, ReadOptions())
    assert raised.value.path == root / "labels" / "train" / "a.txt"
    assert raised.value.where == f"line {text.count(chr(10))}"
    assert fragment in str(raised.value)


def test_looks_like_tells_detection_from_segmentation(tmp_path: Path) -> None:
    det = make_dataset(tmp_path / "det", {("train", "a"): "0 0.5 0.5 0.1 0.1\n"})
    seg = make_dataset(tmp_path / "seg", {("train", "a"): "0 0.1 0.1 0.5 0.1 0.5 0.5\n"}, yaml=False)
    assert yolo.looks_like(det) and yolo.looks_like(det / "data.yaml")
    assert not yolo_seg.looks_like(det)
    assert yolo_seg.looks_like(seg) and not yolo.looks_like(seg)
    other = tmp_path / "other"
    write_image(other / "x.png")
    assert not yolo.looks_like(other) and not yolo_seg.looks_like(other)


def test_label_with_byte_order_mark_is_read(tmp_path: Path) -> None:
    # Windows editors save a BOM; Ultralytics accepts it, so the reader must too.
    root = make_dataset(tmp_path / "ds", {("train", "a"): None})
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("\ufeff1 0.5 0.5 0.5 0.5\n", encoding="utf-8")
    assert yolo.read(root, ReadOptions()).records[0].boxes[0].class_name == "dent"
