"""Mask reader: masks drawn with OpenCV in tmp_path, boxes checked to the pixel."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from yolodefect.data.formats import deeppcb, mask
from yolodefect.data.formats.base import ReadOptions
from yolodefect.errors import DatasetError, FormatError

WIDTH, HEIGHT = 100, 80


def write_image(path: Path, size_wh: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size_wh[1], size_wh[0], 3), 200, np.uint8))
    return path


def write_mask(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def blank(channels: int = 0, dtype=np.uint8) -> np.ndarray:
    shape = (HEIGHT, WIDTH, channels) if channels else (HEIGHT, WIDTH)
    return np.zeros(shape, dtype)


def two_blobs() -> np.ndarray:
    pixels = blank()
    cv2.rectangle(pixels, (10, 20), (29, 39), 255, thickness=-1)  # inclusive corners
    cv2.rectangle(pixels, (60, 5), (64, 14), 255, thickness=-1)
    return pixels


def boxes_of(record) -> list[tuple[str, tuple[float, float, float, float]]]:
    return [(box.class_name, box.xyxy) for box in record.boxes]


def by_name(dataset) -> dict:
    return {record.image_path.name: record for record in dataset.records}


def test_single_class_masks(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg")
    write_mask(tmp_path / "masks" / "a.png", two_blobs())

    write_image(tmp_path / "images" / "b.png")
    zero_one = blank()
    zero_one[50:60, 70:75] = 1
    write_mask(tmp_path / "masks" / "b_mask.png", zero_one)

    write_image(tmp_path / "images" / "c.png")
    near_threshold = blank()
    near_threshold[0:10, 0:10] = 127  # not above the default threshold 127
    near_threshold[30:33, 40:50] = 128
    write_mask(tmp_path / "masks" / "c_gt.png", near_threshold)

    write_image(tmp_path / "images" / "d.png")
    write_mask(tmp_path / "masks" / "d.png", blank())

    write_image(tmp_path / "images" / "e.png")  # no mask at all

    dataset = mask.read(tmp_path, ReadOptions())
    assert dataset.format == "mask"
    assert dataset.class_names == ["defect"]
    records = by_name(dataset)
    assert list(records) == ["a.jpg", "b.png", "c.png", "d.png", "e.png"]
    assert boxes_of(records["a.jpg"]) == [
        ("defect", (60.0, 5.0, 65.0, 15.0)),
        ("defect", (10.0, 20.0, 30.0, 40.0)),
    ]
    assert records["a.jpg"].annotation_path == tmp_path / "masks" / "a.png"
    assert records["a.jpg"].declared_size_wh == (WIDTH, HEIGHT)
    assert boxes_of(records["b.png"]) == [("defect", (70.0, 50.0, 75.0, 60.0))]
    assert boxes_of(records["c.png"]) == [("defect", (40.0, 30.0, 50.0, 33.0))]
    assert records["d.png"].is_background
    assert records["d.png"].annotation_path == tmp_path / "masks" / "d.png"
    assert records["e.png"].is_background and records["e.png"].annotation_path is None
    assert all(record.split is None for record in dataset.records)
    assert not dataset.skipped
    assert len(dataset.warnings) == 1 and "1 images have no mask" in dataset.warnings[0].message
    assert "e.png" in dataset.warnings[0].message


def test_threshold_option_and_diagonal_pixels_join(tmp_path: Path) -> None:
    pixels = blank()
    pixels[10, 10] = 200
    pixels[11, 11] = 200  # touches the first only at a corner: one 8-connected blob
    pixels[40:42, 40:42] = 90
    write_image(tmp_path / "images" / "a.png")
    write_mask(tmp_path / "masks" / "a.png", pixels)
    record = mask.read(tmp_path, ReadOptions()).records[0]
    assert boxes_of(record) == [("defect", (10.0, 10.0, 12.0, 12.0))]
    record = mask.read(tmp_path, ReadOptions(mask_threshold=50)).records[0]
    assert boxes_of(record) == [("defect", (10.0, 10.0, 12.0, 12.0)), ("defect", (40.0, 40.0, 42.0, 42.0))]


def test_colour_and_alpha_masks(tmp_path: Path) -> None:
    red = blank(3)
    cv2.rectangle(red, (5, 6), (14, 15), (0, 0, 255), thickness=-1)  # pure red, luminance 76
    write_image(tmp_path / "images" / "red.png")
    write_mask(tmp_path / "masks" / "red.png", red)
    rgba = blank(4)
    rgba[:, :, :3] = 255  # white but fully transparent: background
    rgba[20:30, 50:60, 3] = 255
    write_image(tmp_path / "images" / "rgba.png")
    write_mask(tmp_path / "masks" / "rgba.png", rgba)
    records = by_name(mask.read(tmp_path, ReadOptions()))
    assert boxes_of(records["red.png"]) == [("defect", (5.0, 6.0, 15.0, 16.0))]
    assert boxes_of(records["rgba.png"]) == [("defect", (50.0, 20.0, 60.0, 30.0))]


def test_per_class_folders(tmp_path: Path) -> None:
    write_image(tmp_path / "imgs" / "a.png")
    write_image(tmp_path / "imgs" / "b.png")
    scratch = blank()
    scratch[10:12, 5:50] = 255
    write_mask(tmp_path / "ground_truth" / "scratch" / "a.png", scratch)
    hole = blank()
    hole[60:70, 80:90] = 255
    write_mask(tmp_path / "ground_truth" / "hole" / "a_mask.png", hole)
    write_mask(tmp_path / "ground_truth" / "hole" / "b.png", blank())

    dataset = mask.read(tmp_path, ReadOptions())
    assert dataset.class_names == ["hole", "scratch"]
    records = by_name(dataset)
    assert boxes_of(records["a.png"]) == [
        ("hole", (80.0, 60.0, 90.0, 70.0)),
        ("scratch", (5.0, 10.0, 50.0, 12.0)),
    ]
    assert records["b.png"].is_background
    # A blank mask in a class folder is a labelling mistake until proven otherwise: named and counted.
    assert [(note.path, note.kind) for note in dataset.warnings] == [
        (str(tmp_path / "ground_truth" / "hole" / "b.png"), "blank_masks")
    ]
    assert "blank mask in the class folder hole/" in dataset.warnings[0].message
    assert not dataset.skipped


def test_min_area_drops_small_blobs_with_one_warning(tmp_path: Path) -> None:
    for name in ("a", "b"):
        pixels = blank()
        pixels[0:2, 0:2] = 255  # 4 pixels
        pixels[20:30, 20:30] = 255  # 100 pixels
        write_image(tmp_path / "images" / f"{name}.png")
        write_mask(tmp_path / "masks" / f"{name}.png", pixels)
    dataset = mask.read(tmp_path, ReadOptions(mask_min_area=5))
    assert [boxes_of(record) for record in dataset.records] == [[("defect", (20.0, 20.0, 30.0, 30.0))]] * 2
    assert len(dataset.warnings) == 1
    assert "dropped 2 mask blobs smaller than 5 pixels (in 2 masks)" in dataset.warnings[0].message
    # A blob of exactly min_area pixels is kept.
    assert mask.read(tmp_path, ReadOptions(mask_min_area=4)).box_count == 4


def test_split_subfolders(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "train" / "x.png")
    write_image(tmp_path / "images" / "val" / "y.png")
    write_image(tmp_path / "images" / "test" / "z.png")
    pixels = blank()
    pixels[1:3, 1:3] = 255
    write_mask(tmp_path / "masks" / "train" / "x.png", pixels)
    write_mask(tmp_path / "masks" / "y.png", pixels)  # flat masks are found for any split
    dataset = mask.read(tmp_path, ReadOptions())
    assert dataset.class_names == ["defect"]
    records = by_name(dataset)
    splits = {name: record.split for name, record in records.items()}
    assert splits == {"x.png": "train", "y.png": "val", "z.png": "test"}
    assert len(records["x.png"].boxes) == 1 and len(records["y.png"].boxes) == 1
    assert records["z.png"].is_background


def _one_good_image(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "good.png")
    write_mask(tmp_path / "masks" / "good.png", two_blobs())


def _assert_bad(tmp_path: Path, file_name: str, detail: str) -> None:
    with pytest.raises(FormatError) as raised:
        mask.read(tmp_path, ReadOptions())
    assert file_name in str(raised.value) and detail in str(raised.value)
    dataset = mask.read(tmp_path, ReadOptions(skip_bad=True))
    assert [record.image_path.name for record in dataset.records] == ["good.png"]
    assert [Path(note.path).name for note in dataset.skipped] == [file_name]


def test_unreadable_mask(tmp_path: Path) -> None:
    _one_good_image(tmp_path)
    write_image(tmp_path / "images" / "broken.png")
    (tmp_path / "masks" / "broken.png").write_bytes(b"not a png")
    _assert_bad(tmp_path, "broken.png", "cannot read mask")


def test_mask_size_differs_from_image(tmp_path: Path) -> None:
    _one_good_image(tmp_path)
    write_image(tmp_path / "images" / "small.png", (50, 40))
    write_mask(tmp_path / "masks" / "small_mask.png", two_blobs())
    _assert_bad(tmp_path, "small_mask.png", "mask is 100x80 but its image is 50x40")


def test_mask_without_image(tmp_path: Path) -> None:
    _one_good_image(tmp_path)
    write_mask(tmp_path / "masks" / "lonely_gt.png", two_blobs())
    _assert_bad(tmp_path, "lonely_gt.png", "mask without image")


def test_loose_mask_beside_class_folders(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "good.png")
    write_mask(tmp_path / "masks" / "dent" / "good.png", two_blobs())
    write_mask(tmp_path / "masks" / "stray.png", two_blobs())
    _assert_bad(tmp_path, "stray.png", "mask has no class")


def test_one_bad_class_mask_drops_the_whole_image(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.png")
    write_mask(tmp_path / "masks" / "dent" / "a.png", two_blobs())
    (tmp_path / "masks" / "scratch").mkdir()
    (tmp_path / "masks" / "scratch" / "a.png").write_bytes(b"")
    dataset = mask.read(tmp_path, ReadOptions(skip_bad=True))
    assert dataset.records == []
    assert [Path(note.path).parent.name for note in dataset.skipped] == ["scratch"]


def test_not_a_mask_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a mask dataset"):
        mask.read(tmp_path, ReadOptions())


def test_mask_to_boxes_is_pure() -> None:
    boxes, dropped = mask.mask_to_boxes(two_blobs(), "dent", min_area=60)
    assert [box.xyxy for box in boxes] == [(10.0, 20.0, 30.0, 40.0)]
    assert dropped == 1  # the 5x10 blob


def test_looks_like(tmp_path: Path) -> None:
    masks = tmp_path / "masks_layout"
    (masks / "Images").mkdir(parents=True)
    (masks / "labels_mask").mkdir()
    assert mask.looks_like(masks)
    assert not mask.looks_like(tmp_path / "missing")
    only_images = tmp_path / "only_images"
    (only_images / "images").mkdir(parents=True)
    assert not mask.looks_like(only_images)
    pcb = tmp_path / "deeppcb" / "PCBData"
    (pcb / "group1" / "1_not").mkdir(parents=True)
    (pcb / "group1" / "1").mkdir()
    assert deeppcb.looks_like(tmp_path / "deeppcb")
    assert not mask.looks_like(tmp_path / "deeppcb")
    assert not mask.looks_like(pcb)


def test_sixteen_bit_mask() -> None:
    pixels = np.zeros((HEIGHT, WIDTH), np.uint16)
    pixels[3:5, 7:9] = 65535
    pixels[50:52, 50:52] = 100  # below 127 even in a 16-bit mask
    boxes, _ = mask.mask_to_boxes(pixels, "defect")
    assert [box.xyxy for box in boxes] == [(7.0, 3.0, 9.0, 5.0)]
