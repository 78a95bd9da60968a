"""DeepPCB reader: a tiny fake PCBData written in tmp_path, and the real data when present."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from yolodefect.data.formats import deeppcb
from yolodefect.data.formats.base import ReadOptions
from yolodefect.errors import FormatError

CLASSES = ["open", "short", "mousebite", "spur", "spurious_copper", "pin_hole"]


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (64, 48), 255).save(path)


def _label(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_pcbdata(root: Path, *, lists: bool = True) -> Path:
    """Two groups, three tested images with templates, one orphan template; returns PCBData."""
    pcb = root / "PCBData"
    for group, image_id in (("10", "10000"), ("10", "10001"), ("20", "20000")):
        _image(pcb / f"group{group}" / group / f"{image_id}_test.jpg")
        _image(pcb / f"group{group}" / group / f"{image_id}_temp.jpg")
    _image(pcb / "group20" / "20" / "20009_temp.jpg")  # a template with no tested image
    # Space separated with a blank line and a trailing space, as the real files may have.
    _label(pcb / "group10" / "10_not" / "10000.txt", "1 2 11 12 1\n\n5 6 20 30 6 \n")
    # Comma separated, as the original DeepPCB description says, without a final newline.
    _label(pcb / "group10" / "10_not" / "10001.txt", "3,4,13,14,2\n7, 8, 9, 10, 3")
    _label(pcb / "group20" / "20_not" / "20000.txt", "0 0 63 47 4\r\n10 10 20 20 5\r\n")
    if lists:
        (pcb / "trainval.txt").write_text(
            "group10/10/10000.jpg group10/10_not/10000.txt\n"
            "group20/20/20000.jpg group20/20_not/20000.txt\n"
        )
        (pcb / "test.txt").write_text("group10/10/10001.jpg group10/10_not/10001.txt")
    return pcb


def by_name(dataset) -> dict:
    return {record.image_path.name: record for record in dataset.records}


def test_reads_official_split_and_both_separators(tmp_path: Path) -> None:
    pcb = make_pcbdata(tmp_path)
    dataset = deeppcb.read(tmp_path, ReadOptions())
    assert dataset.format == "deeppcb"
    assert dataset.class_names == CLASSES
    records = by_name(dataset)
    assert list(records) == ["10000_test.jpg", "10001_test.jpg", "20000_test.jpg"]
    first = records["10000_test.jpg"]
    assert first.split == "train"
    assert first.annotation_path == pcb / "group10" / "10_not" / "10000.txt"
    assert [(box.class_name, box.xyxy) for box in first.boxes] == [
        ("open", (1.0, 2.0, 11.0, 12.0)),
        ("pin_hole", (5.0, 6.0, 20.0, 30.0)),
    ]
    second = records["10001_test.jpg"]
    assert second.split == "test"
    assert [(box.class_name, box.xyxy) for box in second.boxes] == [
        ("short", (3.0, 4.0, 13.0, 14.0)),
        ("mousebite", (7.0, 8.0, 9.0, 10.0)),
    ]
    third = records["20000_test.jpg"]
    assert third.split == "train"
    assert [box.class_name for box in third.boxes] == ["spur", "spurious_copper"]
    assert dataset.box_count == 6
    assert not dataset.skipped and not dataset.warnings


def test_pcbdata_itself_as_source(tmp_path: Path) -> None:
    pcb = make_pcbdata(tmp_path)
    assert len(deeppcb.read(pcb, ReadOptions()).records) == 3


def test_boxes_are_not_clipped_or_validated(tmp_path: Path) -> None:
    pcb = make_pcbdata(tmp_path)
    _label(pcb / "group20" / "20_not" / "20000.txt", "50 40 -5 900 1\n")
    record = by_name(deeppcb.read(tmp_path, ReadOptions()))["20000_test.jpg"]
    assert record.boxes[0].xyxy == (50.0, 40.0, -5.0, 900.0)


def test_without_lists_pairs_by_name_without_split(tmp_path: Path) -> None:
    make_pcbdata(tmp_path, lists=False)
    dataset = deeppcb.read(tmp_path, ReadOptions())
    assert [record.image_path.name for record in dataset.records] == [
        "10000_test.jpg",
        "10001_test.jpg",
        "20000_test.jpg",
    ]
    assert all(record.split is None for record in dataset.records)
    assert dataset.box_count == 6


def test_include_templates(tmp_path: Path) -> None:
    make_pcbdata(tmp_path)
    dataset = deeppcb.read(tmp_path, ReadOptions(include_templates=True))
    records = by_name(dataset)
    assert len(records) == 7  # 3 tested + their 3 templates + 1 orphan template
    assert records["10000_temp.jpg"].split == "train"
    assert records["10001_temp.jpg"].split == "test"
    assert records["10000_temp.jpg"].is_background
    orphan = records["20009_temp.jpg"]
    assert orphan.split == "train" and orphan.is_background  # the official test set stays as published
    assert [Path(note.path).name for note in dataset.warnings] == ["20009_temp.jpg"]
    # Sorted: each template right before its tested image.
    assert [record.image_path.name for record in dataset.records][:2] == ["10000_temp.jpg", "10000_test.jpg"]


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        ("1 2 3 4 0", "defect type '0'"),
        ("1 2 3 4 7", "defect type '7'"),
        ("1 2 3 4 open", "defect type 'open'"),
        ("1 2 3 4", "expected 'x1 y1 x2 y2 type'"),
        ("1 2 3 4 5 6", "expected 'x1 y1 x2 y2 type'"),
        ("1 two 3 4 5", "coordinate 'two' is not a number"),
        ("1 nan 3 4 5", "not a finite number"),
    ],
)
def test_bad_label_line_names_file_and_line(tmp_path: Path, line: str, detail: str) -> None:
    pcb = make_pcbdata(tmp_path)
    _label(pcb / "group10" / "10_not" / "10001.txt", f"3,4,13,14,2\n\n{line}\n")
    with pytest.raises(FormatError) as raised:
        deeppcb.read(tmp_path, ReadOptions())
    message = str(raised.value)
    assert "10001.txt" in message and "line 3" in message and detail in message

    dataset = deeppcb.read(tmp_path, ReadOptions(skip_bad=True))
    assert [record.image_path.name for record in dataset.records] == ["10000_test.jpg", "20000_test.jpg"]
    assert len(dataset.skipped) == 1
    assert dataset.skipped[0].path.endswith("10001.txt") and "line 3" in dataset.skipped[0].message


def test_missing_label_for_listed_image(tmp_path: Path) -> None:
    pcb = make_pcbdata(tmp_path)
    (pcb / "group20" / "20_not" / "20000.txt").unlink()
    with pytest.raises(FormatError, match=r"trainval\.txt \(line 2\): label file .*20000\.txt"):
        deeppcb.read(tmp_path, ReadOptions())
    dataset = deeppcb.read(tmp_path, ReadOptions(skip_bad=True))
    assert len(dataset.records) == 2
    assert [Path(note.path).name for note in dataset.skipped] == ["trainval.txt"]


def test_missing_listed_image(tmp_path: Path) -> None:
    pcb = make_pcbdata(tmp_path)
    (pcb / "group10" / "10" / "10001_test.jpg").unlink()
    with pytest.raises(FormatError, match=r"test\.txt \(line 1\): listed image group10/10/10001\.jpg"):
        deeppcb.read(tmp_path, ReadOptions())
    dataset = deeppcb.read(tmp_path, ReadOptions(skip_bad=True))
    assert [record.image_path.name for record in dataset.records] == ["10000_test.jpg", "20000_test.jpg"]
    assert "10001.jpg" in dataset.skipped[0].message


def test_malformed_list_line_and_escaping_path(tmp_path: Path) -> None:
    pcb = make_pcbdata(tmp_path)
    (pcb / "test.txt").write_text("group10/10/10001.jpg\n../outside.jpg group10/10_not/10001.txt\n")
    with pytest.raises(FormatError, match=r"test\.txt \(line 1\): expected '<image> <label file>'"):
        deeppcb.read(tmp_path, ReadOptions())
    dataset = deeppcb.read(tmp_path, ReadOptions(skip_bad=True))
    assert len(dataset.records) == 2
    assert ["line 1" in note.message for note in dataset.skipped] == [True, False]
    assert "line 2" in dataset.skipped[1].message and "outside" in dataset.skipped[1].message


def test_unlisted_image_is_left_out_with_warning(tmp_path: Path) -> None:
    pcb = make_pcbdata(tmp_path)
    _image(pcb / "group20" / "20" / "20005_test.jpg")
    _label(pcb / "group20" / "20_not" / "20005.txt", "1 1 2 2 1\n")
    dataset = deeppcb.read(tmp_path, ReadOptions())
    assert len(dataset.records) == 3
    assert "20005_test.jpg" in dataset.warnings[0].message


def test_walk_mode_missing_label_and_orphan_label(tmp_path: Path) -> None:
    pcb = make_pcbdata(tmp_path, lists=False)
    (pcb / "group10" / "10_not" / "10001.txt").unlink()
    with pytest.raises(FormatError, match=r"10001_test\.jpg: no label file 10_not/10001\.txt"):
        deeppcb.read(tmp_path, ReadOptions())
    _label(pcb / "group10" / "10_not" / "10001.txt", "1 1 2 2 1\n")
    _label(pcb / "group10" / "10_not" / "10002.txt", "1 1 2 2 1\n")
    with pytest.raises(FormatError, match=r"10002\.txt: no tested image 10002_test"):
        deeppcb.read(tmp_path, ReadOptions())
    dataset = deeppcb.read(tmp_path, ReadOptions(skip_bad=True))
    assert len(dataset.records) == 3 and len(dataset.skipped) == 1


def test_looks_like(tmp_path: Path) -> None:
    pcb = make_pcbdata(tmp_path / "root")
    assert deeppcb.looks_like(tmp_path / "root")
    assert deeppcb.looks_like(pcb)
    walked = make_pcbdata(tmp_path / "walked", lists=False)
    assert deeppcb.looks_like(walked)
    masks = tmp_path / "masks_layout"
    (masks / "images").mkdir(parents=True)
    (masks / "masks").mkdir()
    assert not deeppcb.looks_like(masks)
    (masks / "trainval.txt").write_text("")
    (masks / "test.txt").write_text("")
    assert not deeppcb.looks_like(masks)


@pytest.mark.shared
def test_real_deeppcb(shared_dir: Path) -> None:
    src = shared_dir / "datasets" / "deeppcb"
    assert deeppcb.looks_like(src)
    dataset = deeppcb.read(src, ReadOptions())
    assert len(dataset.records) == 1500
    # 10013, not the 10012 that `wc -l` reports: group20085/20085_not/20085003.txt has no final
    # newline, so wc misses its last box ("108 345 135 378 5").
    assert dataset.box_count == 10013
    assert Counter(record.split for record in dataset.records) == {"train": 1000, "test": 500}
    assert not dataset.skipped and not dataset.warnings
    assert Counter(box.class_name for record in dataset.records for box in record.boxes) == {
        "open": 1942,
        "short": 1506,
        "mousebite": 1965,
        "spur": 1625,
        "spurious_copper": 1474,
        "pin_hole": 1501,
    }

    with_templates = deeppcb.read(src, ReadOptions(include_templates=True))
    # Every tested image has its template, plus one template without a tested image
    # (group90100/90100/90100034_temp.jpg), kept as a defect-free training image.
    assert len(with_templates.records) == 3001
    assert with_templates.box_count == 10013
    assert Counter(record.split for record in with_templates.records) == {
        "train": 2001,
        "test": 1000,
    }
    (orphan,) = [record for record in with_templates.records if record.image_path.name == "90100034_temp.jpg"]
    assert orphan.image_path.name == "90100034_temp.jpg" and orphan.is_background
    assert [Path(note.path).name for note in with_templates.warnings] == ["90100034_temp.jpg"]
