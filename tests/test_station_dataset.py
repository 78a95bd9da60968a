"""The station dataset: conveyor frames cropped at the camera's scale, labelled exactly."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yolodefect.data.check import check_dataset
from yolodefect.data.station_dataset import StationOptions, crop_boxes, station_class_names, synthesize_station
from yolodefect.errors import UsageError
from yolodefect.data.conveyor import write_conveyor_video


def test_crop_boxes_are_the_visible_defects_shifted_into_the_crop(tmp_path: Path) -> None:
    truth = write_conveyor_video(tmp_path / "v.mp4", parts=3, defective={1}, seed=5, part_size=(256, 192))
    part = truth.parts[1]
    # A frame where part 1 is wholly in view: its defects shift by the part's position, then the crop's.
    frame = next(f for f in range(part.first_frame, part.last_frame + 1)
                 if 0 <= truth.part_left(1, f) and truth.part_left(1, f) + 256 <= 640)
    left, top = truth.part_left(1, frame), truth.top_y
    x0, y0 = max(0, min(left - 20, 640 - 320)), 20
    boxes = crop_boxes(truth, frame, x0, y0, 320, 0.5)
    expected = []
    for box in part.defects:
        x1, y1, x2, y2 = box.xyxy
        x1, x2, y1, y2 = x1 + left - x0, x2 + left - x0, y1 + top - y0, y2 + top - y0
        if max(x1, 0) < min(x2, 320) and max(y1, 0) < min(y2, 320):
            expected.append((box.class_name, (max(x1, 0), max(y1, 0), min(x2, 320), min(y2, 320))))
    assert expected, "the chosen frame shows the defect"
    assert [(b.class_name, pytest.approx(b.xyxy)) for b in boxes] == expected
    # A crop far from the part sees none of its defects.
    assert crop_boxes(truth, frame, 0 if left > 320 else 320, 0, 320, 0.5) == [] or left < 320 < left + 256


def test_station_dataset_is_a_valid_yolo_dataset_with_both_kinds(tmp_path: Path) -> None:
    out = tmp_path / "station"
    result = synthesize_station(out, StationOptions(parts=(6, 2, 0), defective=1.0, frame_step=8, seed=3))
    names = station_class_names(("steel", "pcb"))
    assert result.class_names == names and len(names) == 10
    assert set(result.splits) == {"train", "val"}
    assert result.split_mode == "source"
    config = yaml.safe_load((out / "data.yaml").read_text())
    assert list(config["names"].values()) == names
    report = check_dataset(out / "data.yaml")
    assert not report.has_errors
    for split in ("train", "val"):
        images = sorted((out / "images" / split).iterdir())
        assert images and all(cv2.imread(str(p)).shape[:2] == (320, 320) for p in images)
        # Train and val come from different videos: file names carry the split they were cut for.
        assert all(f"_{split}_" in p.name for p in images)
    boxes = sum(s.boxes for s in result.splits.values())
    assert boxes > 0 and result.splits["train"].backgrounds > 0


def test_same_seed_same_dataset(tmp_path: Path) -> None:
    options = StationOptions(kinds=("steel",), parts=(2, 1, 0), frame_step=15, seed=9)
    synthesize_station(tmp_path / "a", options)
    synthesize_station(tmp_path / "b", options)
    labels_a = sorted((tmp_path / "a" / "labels").rglob("*.txt"))
    labels_b = sorted((tmp_path / "b" / "labels").rglob("*.txt"))
    assert [p.name for p in labels_a] == [p.name for p in labels_b]
    assert [p.read_text() for p in labels_a] == [p.read_text() for p in labels_b]
    image_a = cv2.imread(str(next((tmp_path / "a" / "images" / "train").iterdir())))
    image_b = cv2.imread(str(next((tmp_path / "b" / "images" / "train").iterdir())))
    assert np.array_equal(image_a, image_b)


@pytest.mark.parametrize("options, message", [
    (StationOptions(kinds=("wood",)), "choose from"),
    (StationOptions(parts=(0, 1, 0)), "parts"),
    (StationOptions(crop=400), "crop 400"),
])
def test_bad_options(tmp_path: Path, options: StationOptions, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        synthesize_station(tmp_path / "x", options)
    assert not (tmp_path / "x").exists()


def test_existing_output_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(UsageError):
        synthesize_station(out, StationOptions(kinds=("steel",), parts=(1, 1, 0)))
    assert (out / "keep.txt").read_text() == "user data"
