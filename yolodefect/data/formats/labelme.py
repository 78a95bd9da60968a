"""LabelMe JSON: one file per image with ``shapes``, ``imagePath``, ``imageHeight``, ``imageWidth``.

Rectangles, polygons and circles become boxes (a polygon's bounding box is what a detector
learns). Points and lines carry no area, so they are skipped with one warning for the dataset.
``imagePath`` is relative to the JSON's folder and may use Windows separators; it must stay
inside SRC. When it does not exist, an image with the JSON's stem beside the JSON is used.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolodefect.data.formats.base import BadFilePolicy, ReadOptions, list_images, safe_join
from yolodefect.data.formats.voc import split_from_folders
from yolodefect.data.records import IMAGE_SUFFIXES, Box, ImageRecord, SourceDataset
from yolodefect.errors import DatasetError, FormatError

NAME = "labelme"
DESCRIPTION = "LabelMe JSON, one file per image (rectangle, polygon, circle shapes)"

logger = logging.getLogger(__name__)

_REQUIRED_KEYS = ("shapes", "imagePath")
# LabelMe 5.3+ "mask" shapes store their bounding box corners as the two points.
_MIN_POINTS = {"rectangle": 2, "circle": 2, "polygon": 3, "mask": 2}
# Shapes without area: nothing a detector could learn from.
_SKIPPED_SHAPES = ("point", "line", "linestrip")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:/")
_LOOKS_LIKE_DEPTH = 4
_LOOKS_LIKE_MAX_FILES = 20


@dataclass
class LabelmeFile:
    """What one JSON file yields: its boxes, declared size and the shapes it skipped by type."""

    boxes: list[Box]
    declared_size_wh: tuple[int, int] | None
    skipped_shapes: Counter[str] = field(default_factory=Counter)


# --------------------------------------------------------------------------- format detection


def looks_like(src: Path) -> bool:
    """True when a JSON file a few levels under ``src`` has ``shapes`` and ``imagePath``."""
    if not src.is_dir():
        return False
    for checked, path in enumerate(_json_files(src, max_depth=_LOOKS_LIKE_DEPTH)):
        if checked >= _LOOKS_LIKE_MAX_FILES:
            break
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and all(key in data for key in _REQUIRED_KEYS):
            return True
    return False


def _json_files(src: Path, *, max_depth: int | None = None) -> list[Path]:
    found = sorted(path for path in src.rglob("*.json") if path.is_file())
    if max_depth is None:
        return found
    return [path for path in found if len(path.relative_to(src).parts) <= max_depth]


# --------------------------------------------------------------------------- reading


def read(src: Path, options: ReadOptions) -> SourceDataset:
    """Every image under ``src``: boxes from its LabelMe JSON, or a background image without one."""
    json_paths = _json_files(src) if src.is_dir() else []
    if not json_paths:
        # Every image would become a "defect-free" background: surely the wrong folder or format.
        raise DatasetError(f"no LabelMe JSON files found under {src}: is this the dataset folder?")
    policy = BadFilePolicy(options.skip_bad)
    records: list[ImageRecord] = []
    claimed: dict[Path, Path] = {}
    skipped_shapes: Counter[str] = Counter()
    for json_path in json_paths:
        record = _read_one(json_path, src, claimed, policy)
        if record is not None:
            records.append(record[0])
            skipped_shapes += record[1]
    background = [path for path in list_images(src, recursive=True) if path not in claimed]
    records.extend(ImageRecord(image_path=path, split=split_from_folders(path, src)) for path in background)
    if background:
        policy.warn(src, f"{len(background)} image(s) have no LabelMe JSON; kept as defect-free background images")
    if skipped_shapes:
        counts = ", ".join(f"{count} {shape}" for shape, count in sorted(skipped_shapes.items()))
        policy.warn(src, f"skipped shapes without area ({counts}): only rectangles, polygons and circles become boxes")
    records.sort(key=lambda record: str(record.image_path))
    class_names = sorted({box.class_name for record in records for box in record.boxes})
    logger.debug("labelme: %d records, %d classes from %s", len(records), len(class_names), src)
    return SourceDataset(
        format=NAME, records=records, class_names=class_names, skipped=policy.skipped, warnings=policy.warnings
    )


def _read_one(
    json_path: Path, src: Path, claimed: dict[Path, Path], policy: BadFilePolicy
) -> tuple[ImageRecord, Counter[str]] | None:
    """The record of one JSON file and its skipped shapes; None when the policy skipped it."""
    try:
        data = _load(json_path)
        image_path = resolve_image(data.get("imagePath"), json_path, src)
        if image_path in claimed:
            raise FormatError(json_path, f"image {image_path} is also labelled by {claimed[image_path]}")
        claimed[image_path] = json_path
        parsed = parse_labelme(data, json_path)
    except FormatError as error:
        # The image of a broken file is not background: its defects are just unreadable.
        _claim_beside(json_path, claimed)
        policy.bad(error.path, error.detail, where=error.where)
        return None
    record = ImageRecord(
        image_path=image_path,
        boxes=parsed.boxes,
        declared_size_wh=parsed.declared_size_wh,
        split=split_from_folders(image_path, src),
        annotation_path=json_path,
    )
    return record, parsed.skipped_shapes


def _claim_beside(json_path: Path, claimed: dict[Path, Path]) -> None:
    image_path = image_beside(json_path, json_path.stem)
    if image_path is not None:
        claimed.setdefault(image_path, json_path)


def _load(json_path: Path) -> dict[str, Any]:
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise FormatError(
            json_path, f"not valid JSON: {error.msg}", where=f"line {error.lineno}, column {error.colno}"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise FormatError(json_path, f"cannot read: {error}") from None
    if not isinstance(data, dict):
        raise FormatError(json_path, f"top level is a JSON {type(data).__name__}, expected an object")
    if "shapes" not in data:
        raise FormatError(json_path, 'missing "shapes": not a LabelMe file')
    if not isinstance(data["shapes"], list):
        raise FormatError(json_path, '"shapes" is not a list', where="shapes")
    return data


# --------------------------------------------------------------------------- image path


def resolve_image(image_path: Any, json_path: Path, src: Path) -> Path:
    """The image a LabelMe file labels: ``imagePath`` if it exists, else the same stem beside the JSON.

    A relative ``imagePath`` that climbs out of ``src`` is refused. An absolute one (written on
    another machine) cannot be trusted, so only the beside-the-JSON fallback is tried.
    """
    normalised = image_path.strip().replace("\\", "/") if isinstance(image_path, str) else ""
    if normalised and not _is_absolute(normalised):
        json_dir = json_path.parent.relative_to(src).as_posix()
        relative = posixpath.normpath(posixpath.join(json_dir, normalised))
        candidate = safe_join(src, relative, json_path)
        if candidate.is_file():
            return candidate
    stems = [json_path.stem] + ([posixpath.splitext(posixpath.basename(normalised))[0]] if normalised else [])
    for stem in stems:
        beside = image_beside(json_path, stem)
        if beside is not None:
            return beside
    shown = image_path if isinstance(image_path, str) else "(none)"
    detail = f"image {shown!r} not found, nor an image named {json_path.stem}.* beside the JSON"
    raise FormatError(json_path, detail, where="imagePath")


def _is_absolute(path: str) -> bool:
    return path.startswith("/") or bool(_WINDOWS_DRIVE.match(path))


def image_beside(json_path: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (json_path.with_name(stem + suffix), json_path.with_name(stem + suffix.upper())):
            if candidate.is_file():
                return candidate
    return None


# --------------------------------------------------------------------------- shapes


def parse_labelme(data: dict[str, Any], json_path: Path) -> LabelmeFile:
    """Boxes of one LabelMe document; FormatError naming the shape index on a bad shape."""
    boxes: list[Box] = []
    skipped: Counter[str] = Counter()
    for index, shape in enumerate(data["shapes"]):
        box = shape_to_box(shape, json_path, f"shapes[{index}]")
        if isinstance(box, str):
            skipped[box] += 1
        else:
            boxes.append(box)
    return LabelmeFile(boxes=boxes, declared_size_wh=_declared_size(data), skipped_shapes=skipped)


def shape_to_box(shape: Any, json_path: Path, where: str) -> Box | str:
    """The box of one shape, or the shape type's name when that type has no area."""
    if not isinstance(shape, dict):
        raise FormatError(json_path, "shape is not an object", where=where)
    label = shape.get("label")
    if not isinstance(label, str) or not label.strip():
        raise FormatError(json_path, "shape has an empty label", where=where)
    # LabelMe before 3.x wrote no shape_type; those shapes were polygons.
    shape_type = shape.get("shape_type") or "polygon"
    if shape_type in _SKIPPED_SHAPES:
        return shape_type
    if shape_type not in _MIN_POINTS:
        raise FormatError(json_path, f"unsupported shape_type {shape_type!r}", where=where)
    points = _points(shape.get("points"), json_path, where)
    needed = _MIN_POINTS[shape_type]
    if len(points) < needed:
        detail = f"{shape_type} {label.strip()!r} has {len(points)} point(s), needs at least {needed}"
        raise FormatError(json_path, detail, where=where)
    xyxy = circle_xyxy(points[0], points[1]) if shape_type == "circle" else points_xyxy(points)
    return Box(class_name=label.strip(), xyxy=xyxy)


def _points(raw: Any, json_path: Path, where: str) -> list[tuple[float, float]]:
    if not isinstance(raw, list):
        raise FormatError(json_path, '"points" is not a list', where=where)
    points = []
    for point in raw:
        if not (isinstance(point, list) and len(point) == 2 and all(_is_number(value) for value in point)):
            raise FormatError(json_path, f"point {json.dumps(point)} is not two numbers [x, y]", where=where)
        points.append((float(point[0]), float(point[1])))
    return points


def points_xyxy(points: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    """Bounding box of points: rectangle corners in any order, or a polygon's vertices."""
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    return min(xs), min(ys), max(xs), max(ys)


def circle_xyxy(center: tuple[float, float], on_circle: tuple[float, float]) -> tuple[float, float, float, float]:
    radius = math.dist(center, on_circle)
    return center[0] - radius, center[1] - radius, center[0] + radius, center[1] + radius


def _declared_size(data: dict[str, Any]) -> tuple[int, int] | None:
    width, height = data.get("imageWidth"), data.get("imageHeight")
    if _is_number(width) and _is_number(height) and width > 0 and height > 0:
        return int(round(width)), int(round(height))
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
