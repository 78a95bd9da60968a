"""Ultralytics YOLO detection datasets (``class cx cy w h`` rows, normalised), read back into records.

Also holds the code the ``yolo-seg`` reader shares: the two formats differ only in which rows a
label file may hold, so both go through :func:`read_yolo` with a different row parser.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

from yolodefect.data.formats.base import BadFilePolicy, ReadOptions, image_size_wh
from yolodefect.data.records import Box, ImageRecord, SourceDataset
from yolodefect.data.yolo_dataset import (
    DataConfig,
    label_path_for,
    load_data_config,
    read_numbered_label_lines,
)
from yolodefect.errors import FormatError, YoloDefectError

NAME = "yolo"
DESCRIPTION = "Ultralytics YOLO detection: data.yaml or images/<split> + labels/<split>, rows 'class cx cy w h'"

logger = logging.getLogger(__name__)

# A row parser turns the numbers after the class id into a normalised (x1, y1, x2, y2) box, or
# raises ValueError with a message for the user.
RowParser = Callable[[list[float]], tuple[float, float, float, float]]

# Enough label files to tell detection from segmentation without reading a whole large dataset.
_SAMPLE_LABEL_FILES = 50


def parse_box_row(coords: list[float]) -> tuple[float, float, float, float]:
    """``cx cy w h`` (normalised) to normalised corners."""
    if len(coords) != 4:
        hint = " (a segmentation label? use --format yolo-seg)" if len(coords) > 4 else ""
        raise ValueError(
            f"{len(coords) + 1} numbers, a detection row has 5 (class cx cy w h){hint}"
        )
    cx, cy, w, h = coords
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def read(src: Path, options: ReadOptions) -> SourceDataset:
    return read_yolo(src, options, fmt=NAME, parse_row=parse_box_row)


def looks_like(src: Path) -> bool:
    return has_yolo_layout(src) and not has_polygon_rows(src)


def has_yolo_layout(src: Path) -> bool:
    """A data.yaml (given, or inside the folder) or an ``images/`` + ``labels/`` folder pair."""
    if src.is_file():
        return src.suffix.lower() in (".yaml", ".yml")
    if not src.is_dir():
        return False
    return (src / "data.yaml").is_file() or ((src / "images").is_dir() and (src / "labels").is_dir())


def has_polygon_rows(src: Path) -> bool:
    """Whether any line of the first label files holds more than 5 numbers (a polygon)."""
    for label_path in islice(_label_files(src), _SAMPLE_LABEL_FILES):
        try:
            text = label_path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError):
            continue  # read() reports broken files; detection only needs a hint
        if any(len(line.split()) > 5 for line in text.splitlines()):
            return True
    return False


def _label_files(src: Path) -> Iterator[Path]:
    try:
        config = load_data_config(src)
    except YoloDefectError:
        folders = [src / "labels"] if src.is_dir() else []
    else:
        folders = [label_path_for(folder / "_.jpg").parent for folder in config.split_dirs.values()]
    for folder in folders:
        if folder.is_dir():
            yield from folder.rglob("*.txt")


def read_yolo(src: Path, options: ReadOptions, *, fmt: str, parse_row: RowParser) -> SourceDataset:
    """Read every split of a YOLO-layout dataset; ``parse_row`` decides which rows are valid."""
    config = load_data_config(src)
    policy = BadFilePolicy(options.skip_bad)
    records: list[ImageRecord] = []
    for split in config.split_dirs:
        for image_path in config.images(split):
            record = _read_record(image_path, split, config, parse_row, policy)
            if record is not None:
                records.append(record)
    logger.info("read %d images from %s (%s)", len(records), src, fmt)
    return SourceDataset(
        format=fmt,
        records=records,
        class_names=list(config.class_names),
        skipped=policy.skipped,
        warnings=policy.warnings,
    )


def _read_record(
    image_path: Path, split: str, config: DataConfig, parse_row: RowParser, policy: BadFilePolicy
) -> ImageRecord | None:
    """One image's record; None when the policy skipped a bad file."""
    label_path = label_path_for(image_path)
    if not label_path.is_file():
        # Ultralytics trains an image without a label file as background, so the reader does too.
        return ImageRecord(image_path, split=split)
    try:
        boxes_xyxyn = _read_label_file(label_path, config.class_names, parse_row)
        # Only images with boxes are opened: background images need no size, which keeps
        # reading a large defect-free set cheap.
        width, height = image_size_wh(image_path) if boxes_xyxyn else (0, 0)
    except FormatError as error:
        policy.bad(error.path, error.detail, where=error.where)
        return None
    boxes = [
        Box(name, (x1 * width, y1 * height, x2 * width, y2 * height))
        for name, (x1, y1, x2, y2) in boxes_xyxyn
    ]
    return ImageRecord(image_path, boxes=boxes, split=split, annotation_path=label_path)


def _read_label_file(
    label_path: Path, class_names: list[str], parse_row: RowParser
) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(class name, normalised corners) per row; FormatError naming the line of a bad row."""
    boxes = []
    for number, values in read_numbered_label_lines(label_path):
        where = f"line {number}"
        name = class_name_for(values[0], class_names, label_path, where)
        try:
            corners = parse_row(values[1:])
        except ValueError as error:
            raise FormatError(label_path, str(error), where=where) from None
        if not all(math.isfinite(value) for value in corners):
            raise FormatError(label_path, "coordinates must be finite numbers", where=where)
        boxes.append((name, corners))
    return boxes


def class_name_for(value: float, class_names: list[str], label_path: Path, where: str) -> str:
    """The class name for a row's class id; FormatError when it is not an integer id in range."""
    if not math.isfinite(value) or value != int(value):
        raise FormatError(label_path, f"class id {value:g} is not an integer", where=where)
    class_id = int(value)
    if not 0 <= class_id < len(class_names):
        raise FormatError(
            label_path,
            f"class id {class_id} is out of range: the dataset names {len(class_names)} classes "
            f"(ids 0-{len(class_names) - 1})",
            where=where,
        )
    return class_names[class_id]
