"""COCO reader: categories by id, bbox conversion, splits, several files, and malformed files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from yolodefect.data.formats import coco
from yolodefect.data.formats.base import ReadOptions
from yolodefect.data.records import Box
from yolodefect.errors import DatasetError, FormatError


def write_image(path: Path, size_wh: tuple[int, int] = (32, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size_wh, (90, 90, 90)).save(path)
    return path


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def coco_doc(
    images: list[dict[str, Any]] | None = None,
    annotations: list[dict[str, Any]] | None = None,
    categories: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "images": images if images is not None else [],
        "annotations": annotations if annotations is not None else [],
        "categories": categories if categories is not None else [{"id": 1, "name": "dent"}],
    }


def image(image_id: int, file_name: str, width: int = 32, height: int = 24) -> dict[str, Any]:
    return {"id": image_id, "file_name": file_name, "width": width, "height": height}


def ann(ann_id: int, image_id: int, category_id: int, bbox: Any, **extra: Any) -> dict[str, Any]:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 0, **extra}


def read(src: Path, **options: bool):
    return coco.read(src, ReadOptions(**options))


# --------------------------------------------------------------------------- reading


def test_single_file_with_non_contiguous_ids(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg")
    write_image(tmp_path / "images" / "b.jpg")
    write_image(tmp_path / "images" / "clean.jpg")
    categories = [{"id": 9, "name": "crack"}, {"id": 1, "name": "scratch"}, {"id": 5, "name": "dent"}]
    doc = coco_doc(
        images=[image(10, "a.jpg"), image(20, "b.jpg", 0, 0), image(30, "clean.jpg")],
        annotations=[
            ann(1, 10, 9, [1, 2, 3, 4]),
            ann(2, 10, 1, [0.5, 1.5, 10.25, 2]),
            ann(3, 20, 5, [4, 4, 8, 8]),
        ],
        categories=categories,
    )
    write_json(tmp_path / "annotations.json", doc)
    dataset = read(tmp_path)
    assert dataset.class_names == ["scratch", "dent", "crack"]  # by category id, not alphabetically
    records = {record.image_path.name: record for record in dataset.records}
    assert [record.image_path.name for record in dataset.records] == ["a.jpg", "b.jpg", "clean.jpg"]
    assert records["a.jpg"].boxes == [Box("crack", (1.0, 2.0, 4.0, 6.0)), Box("scratch", (0.5, 1.5, 10.75, 3.5))]
    assert records["a.jpg"].declared_size_wh == (32, 24)
    assert records["a.jpg"].annotation_path == tmp_path / "annotations.json"
    assert records["a.jpg"].split is None
    assert records["b.jpg"].boxes == [Box("dent", (4.0, 4.0, 12.0, 12.0))]
    assert records["b.jpg"].declared_size_wh is None  # width/height 0
    assert records["clean.jpg"].is_background
    assert dataset.skipped == [] and dataset.warnings == []


def test_iscrowd_annotations_are_dropped_with_one_warning(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    doc = coco_doc(
        images=[image(1, "a.jpg")],
        annotations=[
            ann(1, 1, 1, [1, 1, 2, 2]),
            ann(2, 1, 1, [0, 0, 20, 20], iscrowd=1),
            ann(3, 1, 1, [0, 0, 10, 10], iscrowd=1),
        ],
    )
    write_json(tmp_path / "coco.json", doc)
    dataset = read(tmp_path / "coco.json")
    assert dataset.records[0].boxes == [Box("dent", (1.0, 1.0, 3.0, 3.0))]
    assert len(dataset.warnings) == 1 and "2 iscrowd=1" in dataset.warnings[0].message


def test_several_files_give_splits_and_find_images(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "train" / "t.jpg")
    write_image(tmp_path / "val2017" / "v.jpg")
    write_image(tmp_path / "test" / "x.jpg")
    categories = [{"id": 3, "name": "pit"}, {"id": 7, "name": "burr"}]
    write_json(
        tmp_path / "annotations" / "instances_train.json",
        coco_doc([image(1, "t.jpg")], [ann(1, 1, 7, [1, 1, 2, 2])], categories),
    )
    write_json(
        tmp_path / "annotations" / "instances_val2017.json",
        coco_doc([image(1, "v.jpg")], [ann(1, 1, 3, [1, 1, 2, 2])], categories[:1]),
    )
    write_json(tmp_path / "annotations" / "image_info_test.json", coco_doc([image(1, "x.jpg")], [], categories))
    write_json(tmp_path / "annotations" / "notes.json", {"comment": "not COCO: ignored"})
    dataset = read(tmp_path)
    assert [(record.image_path.relative_to(tmp_path).as_posix(), record.split) for record in dataset.records] == [
        ("images/train/t.jpg", "train"),
        ("test/x.jpg", "test"),
        ("val2017/v.jpg", "val"),
    ]
    assert dataset.class_names == ["pit", "burr"]
    assert dataset.box_count == 2


@pytest.mark.parametrize(
    ("name", "split"),
    [("instances_train2017", "train"), ("val", "val"), ("trainval", "train"), ("test-dev", "test"), ("latest", None)],
)
def test_split_from_json_name(name: str, split: str | None) -> None:
    assert coco.split_from_json_name(Path(f"{name}.json")) == split


def test_json_file_as_src_with_images_beside(tmp_path: Path) -> None:
    write_image(tmp_path / "data" / "a.jpg")
    path = write_json(tmp_path / "data" / "labels.json", coco_doc([image(1, "a.jpg")], [ann(1, 1, 1, [1, 1, 1, 1])]))
    dataset = read(path)
    assert [record.image_path for record in dataset.records] == [tmp_path / "data" / "a.jpg"]


def test_same_category_with_different_ids_in_two_files_is_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg")
    write_image(tmp_path / "images" / "b.jpg")
    write_json(tmp_path / "train.json", coco_doc([image(1, "a.jpg")], [], [{"id": 1, "name": "dent"}]))
    write_json(tmp_path / "val.json", coco_doc([image(1, "b.jpg")], [], [{"id": 2, "name": "dent"}]))
    with pytest.raises(FormatError, match=r"val\.json \(categories\): category 'dent' has id 2 here but 1"):
        read(tmp_path)
    dataset = read(tmp_path, skip_bad=True)
    assert [note.path for note in dataset.skipped] == [str(tmp_path / "val.json")]
    assert [record.image_path.name for record in dataset.records] == ["a.jpg"]


def test_unused_supercategory_placeholder_is_dropped(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    categories = [
        {"id": 0, "name": "defects", "supercategory": "none"},
        {"id": 1, "name": "crack", "supercategory": "defects"},
        {"id": 2, "name": "hole", "supercategory": "hole"},  # names itself: a real class even when unused
    ]
    write_json(tmp_path / "c.json", coco_doc([image(1, "a.jpg")], [ann(1, 1, 1, [1, 1, 2, 2])], categories))
    dataset = read(tmp_path)
    assert dataset.class_names == ["crack", "hole"]
    assert "dropped category 'defects'" in dataset.warnings[0].message


# --------------------------------------------------------------------------- malformed files


def _good_doc() -> dict[str, Any]:
    return coco_doc([image(1, "a.jpg"), image(2, "b.jpg")], [ann(1, 1, 1, [1, 1, 2, 2]), ann(2, 2, 1, [1, 1, 2, 2])])


def _with(change: str) -> str:
    doc = _good_doc()
    if change == "unknown-image":
        doc["annotations"][1]["image_id"] = 99
    elif change == "unknown-category":
        doc["annotations"][1]["category_id"] = 42
    elif change == "bbox-3":
        doc["annotations"][1]["bbox"] = [1, 2, 3]
    elif change == "bbox-text":
        doc["annotations"][1]["bbox"] = [1, 2, "3", 4]
    elif change == "missing-image":
        doc["images"][1]["file_name"] = "nope.jpg"
    elif change == "traversal":
        doc["images"][1]["file_name"] = "../../etc/passwd"
    elif change == "missing-annotations":
        del doc["annotations"]
    return json.dumps(doc)


# (json text, where, detail, images of the bad file still read with skip_bad)
MALFORMED = [
    pytest.param('{"images": [],\n "annotations": [,]}', "line 2, column", "not valid JSON", [], id="invalid-json"),
    # An annotation of an unknown image cannot be given to any image: only it is dropped.
    pytest.param(_with("unknown-image"), "annotations[1]", "image_id 99 is not in", ["a", "b"], id="unknown-image"),
    # A bad annotation of a known image drops that image: kept, it would lose a defect.
    pytest.param(_with("unknown-category"), "annotations[1]", "category_id 42 is not in", ["a"], id="bad-category"),
    pytest.param(_with("bbox-3"), "annotations[1]", '"bbox" is [1, 2, 3], expected 4 numbers', ["a"], id="bbox-3"),
    pytest.param(_with("bbox-text"), "annotations[1]", "expected 4 numbers", ["a"], id="bbox-text"),
    pytest.param(_with("missing-image"), "images[1]", "image file 'nope.jpg' not found", ["a"], id="missing-image"),
    pytest.param(_with("traversal"), "images[1]", "refusing image path '../../etc/passwd'", ["a"], id="traversal"),
]
MISSING_KEY = pytest.param(_with("missing-annotations"), None, 'missing key(s): "annotations"', [], id="missing-key")


def _write_bad_dataset(tmp_path: Path, text: str) -> Path:
    write_image(tmp_path / "images" / "a.jpg")
    write_image(tmp_path / "images" / "b.jpg")
    json_path = tmp_path / "annotations" / "instances_bad.json"
    json_path.parent.mkdir(parents=True)
    json_path.write_text(text, encoding="utf-8")
    return json_path


@pytest.mark.parametrize(("text", "where", "detail", "left"), [*MALFORMED, MISSING_KEY])
def test_malformed_raises_naming_file_and_element(
    tmp_path: Path, text: str, where: str | None, detail: str, left: list[str]
) -> None:
    json_path = _write_bad_dataset(tmp_path, text)
    with pytest.raises(FormatError) as caught:
        read(json_path)
    message = str(caught.value)
    assert "instances_bad.json" in message and detail in message
    if where:
        assert f"({where}" in message


@pytest.mark.parametrize(("text", "where", "detail", "left"), MALFORMED)
def test_malformed_is_skipped_with_skip_bad(
    tmp_path: Path, text: str, where: str | None, detail: str, left: list[str]
) -> None:
    json_path = _write_bad_dataset(tmp_path, text)
    write_image(tmp_path / "images" / "c.jpg")
    write_json(tmp_path / "annotations" / "instances_good.json", coco_doc([image(1, "c.jpg")], []))
    dataset = read(tmp_path, skip_bad=True)
    assert [note.path for note in dataset.skipped] == [str(json_path)]
    assert detail in dataset.skipped[0].message
    # The good file is read whole; the bad one loses only what its error touches.
    assert [record.image_path.stem for record in dataset.records] == [*left, "c"]


def test_unlabelled_image_list_in_a_folder_is_ignored_with_a_warning(tmp_path: Path) -> None:
    # COCO's image_info_test*.json lists images without annotations: they are unlabelled, not defect-free.
    write_image(tmp_path / "images" / "a.jpg")
    write_json(tmp_path / "image_info_test.json", {"images": [image(1, "a.jpg")], "categories": []})
    write_json(tmp_path / "instances_train.json", coco_doc([], []))
    dataset = read(tmp_path)
    assert dataset.records == [] and dataset.skipped == []
    assert "image_info_test.json" in dataset.warnings[0].path and "no \"annotations\"" in dataset.warnings[0].message


# --------------------------------------------------------------------------- looks_like


def test_looks_like_coco(tmp_path: Path) -> None:
    path = write_json(tmp_path / "annotations" / "instances_val.json", coco_doc())
    assert coco.looks_like(tmp_path)
    assert coco.looks_like(path)


def test_looks_like_is_false_for_labelme_and_voc(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    write_json(tmp_path / "a.json", {"shapes": [], "imagePath": "a.jpg", "imageHeight": 24, "imageWidth": 32})
    (tmp_path / "b.xml").write_text("<annotation><filename>b.jpg</filename></annotation>")
    assert not coco.looks_like(tmp_path)
    assert not coco.looks_like(tmp_path / "a.json")


def test_folder_without_coco_json_is_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    write_json(tmp_path / "a.json", {"shapes": [], "imagePath": "a.jpg"})
    with pytest.raises(DatasetError, match="no COCO JSON file"):
        read(tmp_path)
