"""COCO detection JSON: ``images``, ``annotations`` and ``categories`` in one or several files.

SRC is one JSON file or a folder holding them (``annotations/instances_train.json`` and
``instances_val.json``...). The split comes from each file's name. Boxes are COCO ``[x, y, w, h]``
in pixels, turned into ``xyxy``.

With ``skip_bad`` a broken file (invalid JSON, missing keys, bad categories) is skipped whole;
a broken image entry or annotation costs only its image, because one missing file in a
100k-image set should not discard the whole set. An image whose annotation is unusable is dropped
rather than kept with fewer boxes: a defect with its box missing would teach the model that the
defect is background.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolodefect.data.formats.base import BadFilePolicy, ReadOptions, safe_join
from yolodefect.data.records import Box, ImageRecord, SourceDataset
from yolodefect.errors import DatasetError, FormatError

NAME = "coco"
DESCRIPTION = "COCO detection JSON (images/annotations/categories), one or several files"

logger = logging.getLogger(__name__)

_REQUIRED_KEYS = ("images", "annotations")
_SEARCH_DEPTH = 3  # src/x.json, src/annotations/x.json, src/a/annotations/x.json
_SPLIT_PATTERN = re.compile(r"(?<![a-z])(train|val|test)")  # "trainval" -> train, not "latest"
_YEAR_FOLDER = re.compile(r"\d{4}$")
_LOOKS_LIKE_MAX_FILES = 50


@dataclass(frozen=True)
class CocoFile:
    """One loaded COCO JSON file and the split its name gives."""

    path: Path
    data: dict[str, Any]
    split: str | None


@dataclass
class CategoryTable:
    """Category id -> name, agreed across every file read so far."""

    names_by_id: dict[int, str] = field(default_factory=dict)
    source_by_id: dict[int, Path] = field(default_factory=dict)
    supercategories: set[str] = field(default_factory=set)

    def ordered_names(self) -> list[str]:
        return [self.names_by_id[category_id] for category_id in sorted(self.names_by_id)]


# --------------------------------------------------------------------------- format detection


def looks_like(src: Path) -> bool:
    """True when ``src`` is, or a folder holding, a JSON file with ``images`` and ``annotations``."""
    # Capped so detection stays quick on a LabelMe folder of thousands of JSON files; COCO files
    # sit shallow (src/ or src/annotations/), so the shallowest are tried first.
    by_depth = sorted(_json_candidates(src), key=lambda path: (len(path.parts), str(path)))
    candidates = by_depth[:_LOOKS_LIKE_MAX_FILES]
    return any(_load_coco_json(path) is not None for path in candidates)


def _json_candidates(src: Path) -> list[Path]:
    if src.is_file():
        return [src] if src.suffix.lower() == ".json" else []
    if not src.is_dir():
        return []
    return sorted(
        path
        for path in src.rglob("*.json")
        if path.is_file() and len(path.relative_to(src).parts) <= _SEARCH_DEPTH
    )


def _load_coco_json(path: Path) -> dict[str, Any] | None:
    """The parsed file when it is a COCO detection file; None for anything else."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(data, dict) and all(key in data for key in _REQUIRED_KEYS):
        return data
    return None


# --------------------------------------------------------------------------- reading


def read(src: Path, options: ReadOptions) -> SourceDataset:
    """Every image listed in the COCO file(s) under ``src``, background images included."""
    policy = BadFilePolicy(options.skip_bad)
    root = image_root(src)
    coco_files = _find_coco_files(src, policy)
    if not coco_files and not policy.skipped:
        raise DatasetError(f'no COCO JSON file (with "images" and "annotations") found under {src}')
    categories = CategoryTable()
    records: list[ImageRecord] = []
    seen_images: dict[Path, Path] = {}
    crowd_count = 0
    for coco_file in coco_files:
        file_records, crowd = _read_file(coco_file, root, categories, seen_images, policy)
        records.extend(file_records)
        crowd_count += crowd
    if crowd_count:
        policy.warn(src, f"dropped {crowd_count} iscrowd=1 annotation(s): they mark regions, not countable defects")
    records.sort(key=lambda record: str(record.image_path))
    class_names = _without_placeholders(categories, records, src, policy)
    logger.debug("coco: %d records, %d classes from %s", len(records), len(class_names), src)
    return SourceDataset(
        format=NAME, records=records, class_names=class_names, skipped=policy.skipped, warnings=policy.warnings
    )


def image_root(src: Path) -> Path:
    """The folder image paths must stay inside.

    For a single file it is the file's grandparent, so that the usual
    ``annotations/instances.json`` + ``images/`` layout resolves.
    """
    return src.parent.parent if src.is_file() else src


def _without_placeholders(
    categories: CategoryTable, records: list[ImageRecord], src: Path, policy: BadFilePolicy
) -> list[str]:
    """Class names by id, less unused categories that only name other categories' supercategory.

    Roboflow exports add such a category (id 0, named after the project) that no box uses;
    kept, it would become a class the model can never learn.
    """
    used = {box.class_name for record in records for box in record.boxes}
    placeholders = {
        name for name in categories.names_by_id.values() if name in categories.supercategories and name not in used
    }
    for name in sorted(placeholders):
        policy.warn(src, f"dropped category {name!r}: it has no annotations and is only a supercategory")
    return [name for name in categories.ordered_names() if name not in placeholders]


def split_from_json_name(path: Path) -> str | None:
    match = _SPLIT_PATTERN.search(path.stem.lower())
    return match.group(1) if match else None


def _find_coco_files(src: Path, policy: BadFilePolicy) -> list[CocoFile]:
    if src.is_file():
        data = _load_strict(src, policy)
        return [CocoFile(src, data, split_from_json_name(src))] if data is not None else []
    files = []
    for path in _json_candidates(src):
        data = _load_strict(path, policy, only_coco=True)
        if data is not None:
            files.append(CocoFile(path, data, split_from_json_name(path)))
    return files


def _load_strict(path: Path, policy: BadFilePolicy, *, only_coco: bool = False) -> dict[str, Any] | None:
    """Parse one file; report it as bad when it is broken. ``only_coco`` ignores other JSON files."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        policy.bad(path, f"not valid JSON: {error.msg}", where=f"line {error.lineno}, column {error.colno}")
        return None
    except (OSError, UnicodeDecodeError) as error:
        policy.bad(path, f"cannot read: {error}")
        return None
    is_coco_shaped = isinstance(data, dict) and all(key in data for key in _REQUIRED_KEYS)
    if only_coco and not is_coco_shaped:
        # A folder may hold other JSON (configs, LabelMe files); only files with the COCO keys count.
        if isinstance(data, dict) and "images" in data:
            # Such as COCO's image_info_test*.json: its images are unlabelled, not defect-free.
            policy.warn(path, 'has "images" but no "annotations": ignored, its images are unlabelled')
        return None
    if not isinstance(data, dict):
        policy.bad(path, f"top level is a JSON {type(data).__name__}, expected an object")
        return None
    missing = [key for key in (*_REQUIRED_KEYS, "categories") if key not in data]
    if missing:
        policy.bad(path, "missing key(s): " + ", ".join(f'"{key}"' for key in missing))
        return None
    return data


def _read_file(
    coco_file: CocoFile,
    root: Path,
    categories: CategoryTable,
    seen_images: dict[Path, Path],
    policy: BadFilePolicy,
) -> tuple[list[ImageRecord], int]:
    """Records of one file and the number of crowd annotations it dropped."""
    try:
        file_categories = parse_categories(coco_file)
        _check_lists(coco_file)
        merge_categories(categories, file_categories, coco_file.path)
        categories.supercategories |= _supercategories(coco_file)
    except FormatError as error:
        policy.bad(error.path, error.detail, where=error.where)
        return [], 0
    records_by_id = _image_records(coco_file, root, seen_images, policy)
    # Ids of every entry, usable or not, so an annotation of a dropped image is not "unknown".
    listed_ids = {entry.get("id") for entry in coco_file.data["images"] if isinstance(entry, dict)}
    dropped_ids: set[int] = set()
    crowd = 0
    for index, annotation in enumerate(coco_file.data["annotations"]):
        try:
            box, image_id = _parse_annotation(annotation, index, coco_file.path, listed_ids, file_categories)
        except _BadImageAnnotation as bad:
            dropped_ids.add(bad.image_id)
            policy.bad(bad.error.path, bad.error.detail, where=bad.error.where)
            continue
        except FormatError as error:
            policy.bad(error.path, error.detail, where=error.where)
            continue
        if box is None:
            crowd += 1
        elif image_id in records_by_id:
            records_by_id[image_id].boxes.append(box)
    records = [record for image_id, record in records_by_id.items() if image_id not in dropped_ids]
    return records, crowd


def _check_lists(coco_file: CocoFile) -> None:
    for key in _REQUIRED_KEYS:
        if not isinstance(coco_file.data[key], list):
            raise FormatError(coco_file.path, f'"{key}" is not a list', where=key)


# --------------------------------------------------------------------------- categories


def parse_categories(coco_file: CocoFile) -> dict[int, str]:
    """Category id -> name of one file; ids need not be contiguous."""
    path = coco_file.path
    raw = coco_file.data["categories"]
    if not isinstance(raw, list):
        raise FormatError(path, '"categories" is not a list', where="categories")
    names_by_id: dict[int, str] = {}
    ids_by_name: dict[str, int] = {}
    for index, category in enumerate(raw):
        where = f"categories[{index}]"
        category_id = _int_field(category, "id", path, where)
        if "name" not in category:
            raise FormatError(path, 'category has no "name"', where=where)
        name = category["name"]
        if not isinstance(name, str) or not name.strip():
            raise FormatError(path, f'"name" is {json.dumps(name)}, expected the class name as a non-empty string',
                              where=where)
        name = name.strip()
        if category_id in names_by_id:
            raise FormatError(path, f"category id {category_id} is listed twice", where=where)
        if name in ids_by_name:
            detail = f"category {name!r} has two ids ({ids_by_name[name]} and {category_id})"
            raise FormatError(path, detail, where=where)
        names_by_id[category_id] = name
        ids_by_name[name] = category_id
    return names_by_id


def _supercategories(coco_file: CocoFile) -> set[str]:
    """Supercategory names other categories point to (a category naming itself does not count)."""
    names = set()
    for category in coco_file.data["categories"]:
        supercategory = category.get("supercategory") if isinstance(category, dict) else None
        if isinstance(supercategory, str) and supercategory.strip() != str(category.get("name", "")).strip():
            names.add(supercategory.strip())
    return names


def merge_categories(table: CategoryTable, file_categories: dict[int, str], path: Path) -> None:
    """Add one file's categories; the same id or name in two files must mean the same class."""
    ids_by_name = {name: category_id for category_id, name in table.names_by_id.items()}
    for category_id, name in file_categories.items():
        known_name = table.names_by_id.get(category_id)
        if known_name is not None and known_name != name:
            earlier = table.source_by_id[category_id]
            detail = f"category id {category_id} is {name!r} here but {known_name!r} in {earlier}"
            raise FormatError(path, detail, where="categories")
        known_id = ids_by_name.get(name)
        if known_id is not None and known_id != category_id:
            earlier = table.source_by_id[known_id]
            detail = f"category {name!r} has id {category_id} here but {known_id} in {earlier}"
            raise FormatError(path, detail, where="categories")
    for category_id, name in file_categories.items():
        table.names_by_id.setdefault(category_id, name)
        table.source_by_id.setdefault(category_id, path)


# --------------------------------------------------------------------------- images


def _image_records(
    coco_file: CocoFile, root: Path, seen_images: dict[Path, Path], policy: BadFilePolicy
) -> dict[int, ImageRecord]:
    """image id -> empty record for each usable image entry (boxes are added afterwards)."""
    records: dict[int, ImageRecord] = {}
    for index, entry in enumerate(coco_file.data["images"]):
        where = f"images[{index}]"
        try:
            image_id = _int_field(entry, "id", coco_file.path, where)
            if image_id in records:
                raise FormatError(coco_file.path, f"image id {image_id} is listed twice", where=where)
            image_path = resolve_image(entry.get("file_name"), coco_file, root, where)
            if image_path in seen_images:
                detail = f"image {image_path} is also listed in {seen_images[image_path]}"
                raise FormatError(coco_file.path, detail, where=where)
        except FormatError as error:
            policy.bad(error.path, error.detail, where=error.where)
            continue
        seen_images[image_path] = coco_file.path
        records[image_id] = ImageRecord(
            image_path=image_path,
            declared_size_wh=_declared_size(entry),
            split=coco_file.split,
            annotation_path=coco_file.path,
        )
    return records


def image_folders(coco_file: CocoFile, root: Path) -> list[Path]:
    """Where a ``file_name`` may live, in the order tried; all inside ``root``."""
    json_dir = coco_file.path.parent
    folders = [json_dir, json_dir.parent, root, root / "images"]
    split = coco_file.split
    if split:
        folders += [root / "images" / split, root / split]
        # COCO's own train2017/val2014... folders, beside or under images/.
        for base in (root, root / "images"):
            if base.is_dir():
                folders += sorted(
                    path for path in base.iterdir() if path.is_dir() and _is_year_folder(path.name, split)
                )
    unique: list[Path] = []
    for folder in folders:
        if folder not in unique and _is_inside(folder, root):
            unique.append(folder)
    return unique


def _is_year_folder(name: str, split: str) -> bool:
    return name.lower().startswith(split) and bool(_YEAR_FOLDER.fullmatch(name[len(split):]))


def _is_inside(folder: Path, root: Path) -> bool:
    return folder.resolve().is_relative_to(root.resolve())


def resolve_image(file_name: Any, coco_file: CocoFile, root: Path, where: str) -> Path:
    """The existing image a ``file_name`` names; traversal out of ``root`` is refused."""
    if not isinstance(file_name, str) or not file_name.strip():
        raise FormatError(coco_file.path, 'image has no "file_name"', where=where)
    relative = file_name.strip().replace("\\", "/")
    if posixpath.isabs(relative) or ".." in relative.split("/"):
        raise FormatError(coco_file.path, f"refusing image path {file_name!r}: it points outside {root}", where=where)
    tried = []
    for folder in image_folders(coco_file, root):
        folder_relative = folder.resolve().relative_to(root.resolve()).as_posix()
        candidate = safe_join(root, posixpath.join(folder_relative, relative), coco_file.path)
        if candidate.is_file():
            return candidate
        tried.append(str(folder))
    raise FormatError(coco_file.path, f"image file {file_name!r} not found (looked in {', '.join(tried)})", where=where)


def _declared_size(entry: dict[str, Any]) -> tuple[int, int] | None:
    width, height = entry.get("width"), entry.get("height")
    if _is_number(width) and _is_number(height) and width > 0 and height > 0:
        return int(round(width)), int(round(height))
    return None


# --------------------------------------------------------------------------- annotations


class _BadImageAnnotation(Exception):
    """An annotation of a known image that cannot be used: its whole image must go."""

    def __init__(self, image_id: int, error: FormatError):
        super().__init__(str(error))
        self.image_id = image_id
        self.error = error


def _parse_annotation(
    annotation: Any,
    index: int,
    path: Path,
    listed_ids: set[Any],
    categories: dict[int, str],
) -> tuple[Box | None, int]:
    """The box and image id of one annotation; box None for a crowd region."""
    where = f"annotations[{index}]"
    image_id = _int_field(annotation, "image_id", path, where)
    if image_id not in listed_ids:
        raise FormatError(path, f"image_id {image_id} is not in \"images\"", where=where)
    try:
        category_id = _int_field(annotation, "category_id", path, where)
        if category_id not in categories:
            raise FormatError(path, f"category_id {category_id} is not in \"categories\"", where=where)
        if annotation.get("iscrowd", 0) == 1:
            return None, image_id
        xyxy = bbox_to_xyxy(annotation.get("bbox"), path, where)
    except FormatError as error:
        raise _BadImageAnnotation(image_id, error) from None
    return Box(class_name=categories[category_id], xyxy=xyxy), image_id


def bbox_to_xyxy(bbox: Any, path: Path, where: str) -> tuple[float, float, float, float]:
    """COCO ``[x, y, w, h]`` to ``(x1, y1, x2, y2)``; geometry is checked later by the converter."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(value) for value in bbox):
        raise FormatError(path, f'"bbox" is {json.dumps(bbox)}, expected 4 numbers [x, y, w, h]', where=where)
    x, y, width, height = (float(value) for value in bbox)
    return x, y, x + width, y + height


def _int_field(obj: Any, key: str, path: Path, where: str) -> int:
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        # Some exporters write ids as floats (3.0); accept them only when they are whole.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise FormatError(path, f'"{key}" is {json.dumps(value)}, expected an integer', where=where)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
