"""The one in-memory model every reader produces and every writer consumes.

Boxes are absolute pixel ``xyxy`` in the coordinates of the image as displayed (EXIF orientation
applied), which is what annotation tools show and what Ultralytics loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Box:
    """One labelled defect: class name and absolute pixel corners."""

    class_name: str
    xyxy: tuple[float, float, float, float]

    @property
    def width(self) -> float:
        return self.xyxy[2] - self.xyxy[0]

    @property
    def height(self) -> float:
        return self.xyxy[3] - self.xyxy[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


@dataclass
class ImageRecord:
    """One source image and its boxes. No boxes means a defect-free (background) image.

    ``declared_size_wh`` is the size the annotation claims (VOC ``<size>``, COCO ``width``/
    ``height``), None when the format has none; the converter checks it against the real image.
    ``split`` is the source's own split when it has one. ``annotation_path`` and ``where`` let
    later stages name the file a problem came from.
    """

    image_path: Path
    boxes: list[Box] = field(default_factory=list)
    declared_size_wh: tuple[int, int] | None = None
    split: str | None = None
    annotation_path: Path | None = None

    @property
    def is_background(self) -> bool:
        return not self.boxes

    @property
    def class_names(self) -> set[str]:
        return {box.class_name for box in self.boxes}


@dataclass(frozen=True)
class Note:
    """A file that was skipped or needs the user's attention, with the reason.

    ``kind`` names the kind of a warning that is counted (``conversion.json`` "warning_counts"),
    such as "clipped_boxes" or "blank_masks"; empty for the ones that are not.
    """

    path: str
    message: str
    kind: str = ""


@dataclass
class SourceDataset:
    """What a reader returns: records, class names in the source's own order, and notes."""

    format: str
    records: list[ImageRecord]
    class_names: list[str]
    skipped: list[Note] = field(default_factory=list)
    warnings: list[Note] = field(default_factory=list)

    @property
    def box_count(self) -> int:
        return sum(len(record.boxes) for record in self.records)

    @property
    def has_source_split(self) -> bool:
        return any(record.split for record in self.records)
