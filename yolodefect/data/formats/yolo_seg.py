"""Ultralytics YOLO segmentation datasets (``class x1 y1 ... xn yn`` polygons), read as boxes.

Each polygon becomes its bounding box: yolodefect trains detectors, and the box around a polygon
is what Ultralytics itself derives from segment labels (``segments2boxes``).
"""

from __future__ import annotations

from pathlib import Path

from yolodefect.data.formats.base import ReadOptions
from yolodefect.data.formats.yolo import has_polygon_rows, has_yolo_layout, parse_box_row, read_yolo
from yolodefect.data.records import SourceDataset

NAME = "yolo-seg"
DESCRIPTION = "Ultralytics YOLO segmentation: rows 'class x1 y1 ... xn yn' (normalised polygon), read as boxes"


def parse_polygon_row(coords: list[float]) -> tuple[float, float, float, float]:
    """A normalised polygon (or a plain ``cx cy w h`` box) to normalised corners."""
    if len(coords) == 4:  # a box row among polygons is already the box we want
        return parse_box_row(coords)
    if len(coords) < 6 or len(coords) % 2:
        raise ValueError(
            f"{len(coords) + 1} numbers: a polygon row is a class id and at least 3 x y pairs "
            "(an odd count of 7 or more), a box row has 5 numbers"
        )
    xs, ys = coords[0::2], coords[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def read(src: Path, options: ReadOptions) -> SourceDataset:
    return read_yolo(src, options, fmt=NAME, parse_row=parse_polygon_row)


def looks_like(src: Path) -> bool:
    return has_yolo_layout(src) and has_polygon_rows(src)
