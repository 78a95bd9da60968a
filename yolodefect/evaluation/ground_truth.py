"""Ground truth of one dataset split in absolute pixels, the form every metric compares against."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from yolodefect.data.yolo_dataset import DataConfig, label_path_for, read_label_lines
from yolodefect.errors import DatasetError, FormatError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """Labelled boxes of one image (one part). No boxes means a defect-free part."""

    image_path: Path
    image_size_wh: tuple[int, int]
    xyxy: np.ndarray  # (M, 4) float64 absolute pixels
    class_id: np.ndarray  # (M,) int64

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4)
        class_id = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        if len(xyxy) != len(class_id):
            raise ValueError(f"{self.image_path}: {len(xyxy)} boxes but {len(class_id)} class ids")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "class_id", class_id)

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])


def image_size_wh(image_path: Path) -> tuple[int, int]:
    """(width, height) as displayed, read from the header only.

    Uses Ultralytics' own EXIF rule so the ground truth lives in the same pixel frame as the
    boxes Ultralytics predicts.
    """
    from ultralytics.data.utils import exif_size

    try:
        with Image.open(image_path) as image:
            width, height = exif_size(image)
    except (UnidentifiedImageError, OSError) as error:
        raise FormatError(image_path, f"cannot read the image header ({error})") from None
    return int(width), int(height)


def boxes_from_label_rows(
    rows: list[list[float]], size_wh: tuple[int, int], label_path: Path, class_count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel xyxy and class ids from YOLO label rows (boxes, or polygons as Ultralytics allows)."""
    width, height = size_wh
    boxes: list[list[float]] = []
    classes: list[int] = []
    for number, row in enumerate(rows, start=1):
        cls = row[0]
        if cls != int(cls) or not 0 <= cls < class_count:
            raise FormatError(
                label_path,
                f"class id {cls:g} is not one of the {class_count} classes in data.yaml (0..{class_count - 1})",
                where=f"box {number}",
            )
        values = row[1:]
        if len(values) == 4:
            cx, cy, w, h = values
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        elif len(values) >= 6 and len(values) % 2 == 0:
            # A segmentation polygon: Ultralytics trains detection on its bounding box, so do we.
            xs, ys = values[0::2], values[1::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        else:
            raise FormatError(
                label_path, "expected 'class x y w h' or a polygon 'class x1 y1 x2 y2 ...'", where=f"box {number}"
            )
        boxes.append([x1 * width, y1 * height, x2 * width, y2 * height])
        classes.append(int(cls))
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(classes, dtype=np.int64)


def load_ground_truth(config: DataConfig, split: str) -> list[GroundTruth]:
    """Ground truth of every image of ``split``, in the sorted order of ``config.images(split)``."""
    images = config.images(split)
    if not images:
        raise DatasetError(f"the {split} split of {config.root} has no images ({config.split_dirs[split]})")
    class_count = len(config.class_names)
    ground_truth = []
    for image_path in images:
        label_path = label_path_for(image_path)
        size = image_size_wh(image_path)
        xyxy, class_id = boxes_from_label_rows(read_label_lines(label_path), size, label_path, class_count)
        ground_truth.append(GroundTruth(image_path, size, xyxy, class_id))
    logger.debug("loaded %d images, %d boxes from %s", len(images), sum(map(len, ground_truth)), split)
    return ground_truth
