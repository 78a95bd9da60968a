"""LabelMe reader: shape types to boxes, image paths (backslashes, fallback, traversal), errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from yolodefect.data.formats import labelme
from yolodefect.data.formats.base import ReadOptions
from yolodefect.data.records import Box
from yolodefect.errors import DatasetError, FormatError


def write_image(path: Path, size_wh: tuple[int, int] = (32, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size_wh, (90, 90, 90)).save(path)
    return path


def shape(label: str, points: list[list[float]], shape_type: str | None = "rectangle") -> dict[str, Any]:
    result: dict[str, Any] = {"label": label, "points": points, "group_id": None, "flags": {}}
    if shape_type is not None:
        result["shape_type"] = shape_type
    return result


def write_labelme(path: Path, image_path: str, shapes: list[dict[str, Any]], width: int = 32, height: int = 24) -> Path:
    doc = {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": height,
        "imageWidth": width,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def read(src: Path, **options: bool):
    return labelme.read(src, ReadOptions(**options))


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("the_shape", "xyxy"),
    [
        pytest.param(shape("d", [[20, 15], [4, 3]]), (4.0, 3.0, 20.0, 15.0), id="rectangle-reversed"),
        pytest.param(shape("d", [[5, 1], [9.5, 4], [2, 8]], "polygon"), (2.0, 1.0, 9.5, 8.0), id="polygon"),
        pytest.param(shape("d", [[5, 1], [9, 4], [2, 8]], None), (2.0, 1.0, 9.0, 8.0), id="no-shape-type"),
        pytest.param(shape("d", [[10, 10], [13, 14]], "circle"), (5.0, 5.0, 15.0, 15.0), id="circle"),
        pytest.param(shape("d", [[1, 2], [7, 8]], "mask"), (1.0, 2.0, 7.0, 8.0), id="mask"),
    ],
)
def test_shape_types_become_boxes(tmp_path: Path, the_shape: dict[str, Any], xyxy: tuple[float, ...]) -> None:
    write_image(tmp_path / "a.jpg")
    write_labelme(tmp_path / "a.json", "a.jpg", [the_shape])
    assert read(tmp_path).records[0].boxes == [Box("d", xyxy)]


def test_reads_boxes_sizes_backgrounds_and_skips_shapes_without_area(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    write_image(tmp_path / "clean.png")
    write_labelme(
        tmp_path / "a.json",
        "a.jpg",
        [
            shape(" scratch ", [[1, 2], [5, 6]]),
            shape("pit", [[3, 3]], "point"),
            shape("crack", [[1, 1], [9, 9]], "line"),
            shape("crack", [[1, 1], [5, 5], [9, 1]], "linestrip"),
            shape("burr", [[0, 0], [4, 0], [4, 4], [0, 4]], "polygon"),
        ],
    )
    dataset = read(tmp_path)
    records = {record.image_path.name: record for record in dataset.records}
    assert list(records) == ["a.jpg", "clean.png"]
    assert records["a.jpg"].boxes == [Box("scratch", (1.0, 2.0, 5.0, 6.0)), Box("burr", (0.0, 0.0, 4.0, 4.0))]
    assert records["a.jpg"].declared_size_wh == (32, 24)
    assert records["a.jpg"].annotation_path == tmp_path / "a.json"
    assert records["clean.png"].is_background and records["clean.png"].annotation_path is None
    assert dataset.class_names == ["burr", "scratch"]
    messages = [note.message for note in dataset.warnings]
    assert len(messages) == 2
    assert any("1 image(s) have no LabelMe JSON" in message for message in messages)
    assert any("1 line, 1 linestrip, 1 point" in message for message in messages)


# --------------------------------------------------------------------------- image paths


def test_backslash_path_climbing_out_of_the_json_folder(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg")
    write_labelme(tmp_path / "labels" / "a.json", "..\\images\\a.jpg", [shape("d", [[1, 1], [2, 2]])])
    dataset = read(tmp_path)
    assert [record.image_path for record in dataset.records] == [tmp_path / "images" / "a.jpg"]
    assert dataset.records[0].boxes and dataset.warnings == []


@pytest.mark.parametrize("image_path", ["renamed.jpg", "C:\\Users\\me\\Desktop\\a.jpg", "/home/me/a.jpg"])
def test_falls_back_to_the_image_with_the_json_stem(tmp_path: Path, image_path: str) -> None:
    write_image(tmp_path / "a.png")
    write_labelme(tmp_path / "a.json", image_path, [shape("d", [[1, 1], [2, 2]])])
    assert [record.image_path for record in read(tmp_path).records] == [tmp_path / "a.png"]


def test_split_from_folders(tmp_path: Path) -> None:
    for folder in ("train", "val", "test"):
        write_image(tmp_path / folder / "a.jpg")
        write_labelme(tmp_path / folder / "a.json", "a.jpg", [shape("d", [[1, 1], [2, 2]])])
    assert [record.split for record in read(tmp_path).records] == ["test", "train", "val"]


# --------------------------------------------------------------------------- malformed files

MALFORMED = [
    pytest.param('{"shapes": [\n  {"label": "d",}\n]}', "line 2", "not valid JSON", id="invalid-json"),
    pytest.param(json.dumps({"imagePath": "bad.jpg"}), None, 'missing "shapes"', id="missing-shapes"),
    pytest.param(
        json.dumps({"imagePath": "bad.jpg", "shapes": [shape("d", [[1, 1], [2, 2]]), shape(" ", [[1, 1], [2, 2]])]}),
        "shapes[1]",
        "empty label",
        id="empty-label",
    ),
    pytest.param(
        json.dumps({"imagePath": "bad.jpg", "shapes": [shape("d", [[1, 1], [2, 2]], "polygon")]}),
        "shapes[0]",
        "has 2 point(s), needs at least 3",
        id="too-few-points",
    ),
    pytest.param(
        json.dumps({"imagePath": "bad.jpg", "shapes": [shape("d", [[1, "x"], [2, 2]])]}),
        "shapes[0]",
        "is not two numbers",
        id="bad-point",
    ),
    pytest.param(
        json.dumps({"imagePath": "bad.jpg", "shapes": [shape("d", [[1, 1], [2, 2]], "cuboid")]}),
        "shapes[0]",
        "unsupported shape_type 'cuboid'",
        id="unknown-shape-type",
    ),
    pytest.param(
        json.dumps({"imagePath": "..\\..\\..\\etc\\passwd", "shapes": []}),
        None,
        "refusing image path",
        id="traversal",
    ),
]


@pytest.mark.parametrize(("text", "where", "detail"), MALFORMED)
def test_malformed_raises_naming_file_and_element(tmp_path: Path, text: str, where: str | None, detail: str) -> None:
    write_image(tmp_path / "sub" / "bad.jpg")
    (tmp_path / "sub" / "bad.json").write_text(text, encoding="utf-8")
    with pytest.raises(FormatError) as caught:
        read(tmp_path)
    message = str(caught.value)
    assert "bad.json" in message and detail in message
    if where:
        assert f"({where}" in message


@pytest.mark.parametrize(("text", "where", "detail"), MALFORMED)
def test_malformed_is_skipped_with_skip_bad(tmp_path: Path, text: str, where: str | None, detail: str) -> None:
    write_image(tmp_path / "sub" / "bad.jpg")
    (tmp_path / "sub" / "bad.json").write_text(text, encoding="utf-8")
    write_image(tmp_path / "sub" / "good.jpg")
    write_labelme(tmp_path / "sub" / "good.json", "good.jpg", [shape("d", [[1, 1], [2, 2]])])
    dataset = read(tmp_path, skip_bad=True)
    assert [note.path for note in dataset.skipped] == [str(tmp_path / "sub" / "bad.json")]
    assert detail in dataset.skipped[0].message
    # The image of the broken file is not passed off as a defect-free background.
    assert [record.image_path.name for record in dataset.records] == ["good.jpg"]


def test_missing_image(tmp_path: Path) -> None:
    write_labelme(tmp_path / "orphan.json", "orphan.jpg", [shape("d", [[1, 1], [2, 2]])])
    with pytest.raises(FormatError, match=r"orphan\.json \(imagePath\): image 'orphan\.jpg' not found"):
        read(tmp_path)
    assert [note.path for note in read(tmp_path, skip_bad=True).skipped] == [str(tmp_path / "orphan.json")]


# --------------------------------------------------------------------------- looks_like


def test_looks_like_labelme(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    write_labelme(tmp_path / "a.json", "a.jpg", [])
    assert labelme.looks_like(tmp_path)


def test_looks_like_is_false_for_coco_and_voc(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    (tmp_path / "instances.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    (tmp_path / "a.xml").write_text("<annotation><filename>a.jpg</filename></annotation>")
    assert not labelme.looks_like(tmp_path)


def test_folder_without_json_is_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    with pytest.raises(DatasetError, match="no LabelMe JSON files"):
        read(tmp_path)
