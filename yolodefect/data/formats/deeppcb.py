"""DeepPCB: tested PCB images, their defect-free templates, and one text file of boxes each.

Layout (``SRC`` is the DeepPCB root holding ``PCBData/``, or ``PCBData`` itself)::

    PCBData/trainval.txt                   official split, lines "groupN/N/<id>.jpg groupN/N_not/<id>.txt"
    PCBData/test.txt
    PCBData/groupN/N/<id>_test.jpg         tested image
    PCBData/groupN/N/<id>_temp.jpg         its aligned defect-free template
    PCBData/groupN/N_not/<id>.txt          "x1 y1 x2 y2 type" per line (space or comma separated)

The list files name ``<id>.jpg`` although the real images carry the ``_test`` suffix, so a listed
name is resolved to ``<id>_test.jpg`` first and taken literally only when that does not exist.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from yolodefect.data.formats.base import BadFilePolicy, ReadOptions, is_image, safe_join
from yolodefect.data.records import Box, ImageRecord, SourceDataset
from yolodefect.errors import FormatError

logger = logging.getLogger(__name__)

NAME = "deeppcb"
DESCRIPTION = "DeepPCB: PCBData/groupN/N/<id>_test.jpg + N_not/<id>.txt, official trainval/test lists"

CLASS_NAMES = ("open", "short", "mousebite", "spur", "spurious_copper", "pin_hole")
LIST_FILES = (("trainval.txt", "train"), ("test.txt", "test"))
TEST_SUFFIX = "_test"
TEMPLATE_SUFFIX = "_temp"
LABEL_DIR_SUFFIX = "_not"
_TYPE_HELP = ", ".join(f"{number} {name}" for number, name in enumerate(CLASS_NAMES, start=1))


@dataclass(frozen=True)
class GroupFolder:
    """One ``groupN/N`` image folder and its ``groupN/N_not`` label folder."""

    image_dir: Path
    label_dir: Path


@dataclass(frozen=True)
class Pair:
    """A tested image and its label file, with the split the source gives it."""

    image_path: Path
    label_path: Path
    split: str | None


def pcbdata_root(src: Path) -> Path:
    """``SRC/PCBData`` when SRC is the DeepPCB root, SRC itself when it already is PCBData."""
    nested = src / "PCBData"
    return nested if nested.is_dir() else src


def _subfolders(folder: Path) -> list[Path]:
    # scandir's is_dir() uses the directory entry's type, so auto-detection does not stat every
    # file of a large image folder it only glances at.
    with os.scandir(folder) as entries:
        return sorted(Path(entry.path) for entry in entries if entry.is_dir())


def group_folders(root: Path) -> list[GroupFolder]:
    """Every ``<group>/<N>`` folder that has a ``<group>/<N>_not`` sibling, sorted."""
    folders: list[GroupFolder] = []
    for group in _subfolders(root):
        names = {path.name for path in _subfolders(group)}
        for name in sorted(names):
            if not name.endswith(LABEL_DIR_SUFFIX) and f"{name}{LABEL_DIR_SUFFIX}" in names:
                folders.append(GroupFolder(group / name, group / f"{name}{LABEL_DIR_SUFFIX}"))
    return folders


def looks_like(src: Path) -> bool:
    try:
        if (src / "PCBData").is_dir():
            return True
        # Group folders are required in both remaining cases: two list files alone are too generic.
        return bool(group_folders(src))
    except OSError:
        return False


def image_id(tested: Path) -> str:
    """``00041000`` for ``00041000_test.jpg`` (and for a bare ``00041000.jpg``)."""
    stem = tested.stem
    return stem[: -len(TEST_SUFFIX)] if stem.endswith(TEST_SUFFIX) else stem


def template_for(tested: Path) -> Path:
    return tested.with_name(f"{image_id(tested)}{TEMPLATE_SUFFIX}{tested.suffix}")


def parse_label_line(line: str) -> Box | None:
    """One ``x1 y1 x2 y2 type`` line (spaces or commas) -> Box; None for a blank line.

    Raises ``ValueError`` with a message meant for the user; the caller adds file and line.
    """
    fields = line.replace(",", " ").split()
    if not fields:
        return None
    if len(fields) != 5:
        raise ValueError(f"expected 'x1 y1 x2 y2 type', got {line.strip()!r}")
    coordinates = []
    for text in fields[:4]:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"coordinate {text!r} is not a number in {line.strip()!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"coordinate {text!r} is not a finite number in {line.strip()!r}")
        coordinates.append(value)
    try:
        defect_type = int(fields[4])
    except ValueError:
        defect_type = 0
    if not 1 <= defect_type <= len(CLASS_NAMES):
        raise ValueError(f"defect type {fields[4]!r} is not one of {_TYPE_HELP}")
    x1, y1, x2, y2 = coordinates
    return Box(CLASS_NAMES[defect_type - 1], (x1, y1, x2, y2))


def read_label_file(path: Path, policy: BadFilePolicy) -> list[Box] | None:
    """All boxes of one label file; None when the file is bad (and ``policy`` let us go on)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        policy.bad(path, f"cannot read label file: {error}")
        return None
    boxes: list[Box] = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            box = parse_label_line(line)
        except ValueError as error:
            # One bad line makes the whole file untrustworthy: a partly read image would
            # teach the model that the missing defects are background.
            policy.bad(path, str(error), where=f"line {number}")
            return None
        if box is not None:
            boxes.append(box)
    return boxes


def resolve_listed_image(listed: Path) -> Path | None:
    """The real file for a listed ``<id>.jpg``: ``<id>_test.jpg`` first, the name as given second."""
    for candidate in (listed.with_name(f"{listed.stem}{TEST_SUFFIX}{listed.suffix}"), listed):
        if candidate.is_file():
            return candidate
    return None


def _safe_join_or_bad(
    root: Path, relative: str, list_path: Path, where: str, policy: BadFilePolicy
) -> Path | None:
    try:
        return safe_join(root, relative, list_path)
    except FormatError as error:
        policy.bad(list_path, error.detail, where=where)
        return None


def pairs_from_list(root: Path, list_path: Path, split: str, policy: BadFilePolicy) -> list[Pair]:
    """The (image, label) pairs one official list file names."""
    try:
        lines = list_path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        policy.bad(list_path, f"cannot read split list: {error}")
        return []
    pairs: list[Pair] = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"line {number}"
        if len(fields) != 2:
            policy.bad(list_path, f"expected '<image> <label file>', got {line.strip()!r}", where=where)
            continue
        listed_image = _safe_join_or_bad(root, fields[0], list_path, where, policy)
        if listed_image is None:
            continue
        label_path = _safe_join_or_bad(root, fields[1], list_path, where, policy)
        if label_path is None:
            continue
        image_path = resolve_listed_image(listed_image)
        if image_path is None:
            tested_name = f"{listed_image.stem}{TEST_SUFFIX}{listed_image.suffix}"
            policy.bad(list_path, f"listed image {fields[0]} not found (nor {tested_name})", where=where)
            continue
        if not label_path.is_file():
            policy.bad(list_path, f"label file {fields[1]} of {image_path.name} not found", where=where)
            continue
        pairs.append(Pair(image_path, label_path, split))
    return pairs


def _images_with_suffix(folder: Path, suffix: str) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.stem.endswith(suffix) and is_image(path))


def tested_images(folder: GroupFolder) -> list[Path]:
    return _images_with_suffix(folder.image_dir, TEST_SUFFIX)


def pairs_from_folders(folders: list[GroupFolder], policy: BadFilePolicy) -> list[Pair]:
    """Without list files: pair every ``<id>_test.jpg`` with ``N_not/<id>.txt``, no split."""
    pairs: list[Pair] = []
    for folder in folders:
        images = tested_images(folder)
        ids = {image_id(image) for image in images}
        for image in images:
            label_path = folder.label_dir / f"{image_id(image)}.txt"
            if label_path.is_file():
                pairs.append(Pair(image, label_path, None))
            else:
                policy.bad(image, f"no label file {folder.label_dir.name}/{label_path.name} for this image")
        for label_path in sorted(folder.label_dir.glob("*.txt")):
            if label_path.stem not in ids:
                detail = f"no tested image {label_path.stem}{TEST_SUFFIX}.* in {folder.image_dir}"
                policy.bad(label_path, detail)
    return pairs


def _drop_repeats(pairs: list[Pair], policy: BadFilePolicy) -> list[Pair]:
    """Keep the first listing of an image listed twice; a second one would leak it across splits."""
    seen: dict[Path, Pair] = {}
    for pair in pairs:
        first = seen.get(pair.image_path)
        if first is None:
            seen[pair.image_path] = pair
        else:
            policy.warn(
                pair.image_path,
                f"listed twice (split {first.split} and {pair.split}); kept the first listing",
            )
    return list(seen.values())


def _warn_unlisted(pairs: list[Pair], folders: list[GroupFolder], root: Path, policy: BadFilePolicy) -> None:
    listed = {pair.image_path for pair in pairs}
    unlisted = [image for folder in folders for image in tested_images(folder) if image not in listed]
    if unlisted:
        names = ", ".join(image.name for image in unlisted[:5])
        policy.warn(
            root,
            f"{len(unlisted)} tested images are in no split list and were left out (e.g. {names})",
        )


def template_records(
    records: list[ImageRecord], folders: list[GroupFolder], policy: BadFilePolicy
) -> list[ImageRecord]:
    """Background records for the templates: each in its tested image's split.

    A template whose tested image does not exist still shows a defect-free board, so it is
    kept; the official lists cannot place it, so it trains (when the source has a split),
    which keeps the official test set exactly as published.
    """
    has_split = any(record.split for record in records)
    templates = [
        ImageRecord(template, split=record.split)
        for record in records
        if (template := template_for(record.image_path)).is_file()
    ]
    for folder in folders:
        tested_ids = {image_id(image) for image in tested_images(folder)}
        for path in _images_with_suffix(folder.image_dir, TEMPLATE_SUFFIX):
            if path.stem[: -len(TEMPLATE_SUFFIX)] not in tested_ids:
                templates.append(ImageRecord(path, split="train" if has_split else None))
                policy.warn(path, "template without a tested image: added as a defect-free training image")
    return templates


def read(src: Path, options: ReadOptions) -> SourceDataset:
    root = pcbdata_root(src)
    policy = BadFilePolicy(options.skip_bad)
    folders = group_folders(root)
    list_files = [(root / name, split) for name, split in LIST_FILES if (root / name).is_file()]
    if list_files:
        pairs = [pair for path, split in list_files for pair in pairs_from_list(root, path, split, policy)]
        pairs = _drop_repeats(pairs, policy)
        _warn_unlisted(pairs, folders, root, policy)
    else:
        logger.info("no trainval.txt/test.txt in %s: pairing images and labels by name, no split", root)
        pairs = pairs_from_folders(folders, policy)

    records: list[ImageRecord] = []
    for pair in pairs:
        boxes = read_label_file(pair.label_path, policy)
        if boxes is not None:
            records.append(
                ImageRecord(pair.image_path, boxes=boxes, split=pair.split, annotation_path=pair.label_path)
            )
    if options.include_templates:
        records.extend(template_records(records, folders, policy))
    records.sort(key=lambda record: str(record.image_path))
    logger.info("DeepPCB %s: %d images, %d skipped", root, len(records), len(policy.skipped))
    return SourceDataset(
        format=NAME,
        records=records,
        class_names=list(CLASS_NAMES),
        skipped=policy.skipped,
        warnings=policy.warnings,
    )
