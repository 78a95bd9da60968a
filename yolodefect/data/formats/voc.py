"""Pascal VOC XML: one ``<annotation>`` file per image, boxes in absolute pixels.

Handled layouts (SRC is a folder, searched recursively):

* NEU-DET: ``IMAGES/`` + ``ANNOTATIONS/`` and ``Validation_Images/`` + ``Validation_Annotations/``;
* standard VOC: ``JPEGImages/`` + ``Annotations/`` (+ ``ImageSets/Main/{train,val,trainval,test}.txt``);
* XML files beside their images.

Images and XML files are paired by file stem. ``<filename>`` is never trusted: NEU-DET has 174
files whose ``<filename>`` lacks the extension, and renamed copies of VOC sets often keep a stale one.
"""

from __future__ import annotations

import io
import logging
import math
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from yolodefect.data.formats.base import BadFilePolicy, ReadOptions, list_images
from yolodefect.data.records import Box, ImageRecord, SourceDataset
from yolodefect.errors import DatasetError, FormatError

NAME = "voc"
DESCRIPTION = "Pascal VOC XML, one file per image (NEU-DET, VOC devkit, XML beside images)"

logger = logging.getLogger(__name__)

_COORDINATES = ("xmin", "ymin", "xmax", "ymax")
# Folder-name words that say which split a file belongs to. "trainval" is VOC's training pool.
_SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "trainval": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
# Words that only say "this folder holds images/annotations"; dropping them lets
# Validation_Images pair with Validation_Annotations and JPEGImages with Annotations.
_ROLE_WORDS = {"images", "image", "imgs", "img", "jpegimages", "annotations", "annotation", "xml", "xmls", "labels"}
# VOC devkits ship segmentation masks as PNGs with the same stems; they are not photos.
_NOT_PHOTO_FOLDERS = {"segmentationclass", "segmentationobject", "segmentationclassaug", "masks"}
_IMAGESET_FILES = (("test", "test"), ("val", "val"), ("train", "train"), ("trainval", "train"))
_LOOKS_LIKE_DEPTH = 4
_LOOKS_LIKE_MAX_FILES = 20
_LOOKS_LIKE_HEAD_BYTES = 65536


@dataclass(frozen=True)
class VocAnnotation:
    """What one XML file says: its boxes and the size it declares (None when absent or 0)."""

    boxes: list[Box]
    declared_size_wh: tuple[int, int] | None


# --------------------------------------------------------------------------- format detection


def looks_like(src: Path) -> bool:
    """True when an XML file a few levels under ``src`` has an ``<annotation>`` root."""
    if not src.is_dir():
        return False
    checked = 0
    for xml_path in _xml_files(src, max_depth=_LOOKS_LIKE_DEPTH):
        if _root_tag(xml_path) == "annotation":
            return True
        checked += 1
        if checked >= _LOOKS_LIKE_MAX_FILES:
            break
    return False


def _root_tag(xml_path: Path) -> str | None:
    """The root element's tag, read from the head of the file only; None when unreadable."""
    try:
        with xml_path.open("rb") as handle:
            head = handle.read(_LOOKS_LIKE_HEAD_BYTES)
        _refuse_declarations(head, xml_path)
        for _event, element in ET.iterparse(io.BytesIO(head), events=("start",)):
            return element.tag
    except (OSError, ET.ParseError, FormatError):
        return None
    return None


# --------------------------------------------------------------------------- reading


def read(src: Path, options: ReadOptions) -> SourceDataset:
    """All images under ``src``, with the boxes of the XML file sharing each image's stem."""
    xml_paths = _xml_files(src) if src.is_dir() else []
    if not xml_paths:
        # Every image would become a "defect-free" background: surely the wrong folder or format.
        raise DatasetError(f"no VOC XML files found under {src}: is this the dataset folder?")
    policy = BadFilePolicy(options.skip_bad)
    images = [path for path in list_images(src, recursive=True) if not _in_mask_folder(path, src)]
    imageset_splits = _imageset_splits(src)
    stem_groups = _group_by_stem(images)
    records: list[ImageRecord] = []
    claimed: dict[Path, Path] = {}
    for xml_path in xml_paths:
        candidates = stem_groups.get(xml_path.stem, [])
        record = _read_pair(xml_path, candidates, src, imageset_splits, policy, claimed)
        if record is not None:
            records.append(record)
    background = [path for path in images if path not in claimed]
    records.extend(
        ImageRecord(image_path=path, split=_split_of(path, None, src, imageset_splits)) for path in background
    )
    if background:
        policy.warn(src, f"{len(background)} image(s) have no XML annotation; kept as defect-free background images")
    records.sort(key=lambda record: str(record.image_path))
    class_names = sorted({box.class_name for record in records for box in record.boxes})
    logger.debug("voc: %d records, %d classes from %s", len(records), len(class_names), src)
    return SourceDataset(
        format=NAME,
        records=records,
        class_names=class_names,
        skipped=policy.skipped,
        warnings=policy.warnings,
    )


def _group_by_stem(paths: list[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        groups[path.stem].append(path)
    return groups


def _read_pair(
    xml_path: Path,
    candidates: list[Path],
    src: Path,
    imageset_splits: dict[Path, dict[str, str]],
    policy: BadFilePolicy,
    claimed: dict[Path, Path],
) -> ImageRecord | None:
    """The record for one XML file, or None when the policy skipped it."""
    try:
        # Pair before parsing so that the image of a broken XML is not mistaken for a background image.
        image_path = find_image_for(xml_path, candidates)
        if image_path in claimed:
            raise FormatError(xml_path, f"image {image_path} is also labelled by {claimed[image_path]}")
        claimed[image_path] = xml_path
        annotation = parse_voc_xml(xml_path)
    except FormatError as error:
        policy.bad(error.path, error.detail, where=error.where)
        return None
    return ImageRecord(
        image_path=image_path,
        boxes=annotation.boxes,
        declared_size_wh=annotation.declared_size_wh,
        split=_split_of(image_path, xml_path, src, imageset_splits),
        annotation_path=xml_path,
    )


def find_image_for(xml_path: Path, candidates: list[Path]) -> Path:
    """The image an XML file describes, among the images sharing its stem.

    Several candidates happen when a dataset keeps splits in parallel folders; the one beside the
    XML, then the one in the matching folder (``Validation_Images`` for ``Validation_Annotations``),
    wins. Anything still ambiguous is an error rather than a guess.
    """
    if not candidates:
        raise FormatError(xml_path, f"no image named {xml_path.stem}.* found for this annotation")
    if len(candidates) == 1:
        return candidates[0]
    for prefer in (_same_folder, _matching_folder):
        preferred = [path for path in candidates if prefer(path, xml_path)]
        if len(preferred) == 1:
            return preferred[0]
    names = ", ".join(str(path) for path in candidates)
    raise FormatError(xml_path, f"several images named {xml_path.stem}.* ({names}); cannot tell which one it labels")


def _same_folder(image_path: Path, xml_path: Path) -> bool:
    return image_path.parent == xml_path.parent


def _matching_folder(image_path: Path, xml_path: Path) -> bool:
    return image_path.parent.parent == xml_path.parent.parent and _folder_key(image_path.parent.name) == _folder_key(
        xml_path.parent.name
    )


def _folder_key(name: str) -> tuple[str, ...]:
    return tuple(word for word in _words(name) if word not in _ROLE_WORDS)


def _words(name: str) -> list[str]:
    return re.findall(r"[a-z]+", name.lower())


def _in_mask_folder(path: Path, src: Path) -> bool:
    return any(part.lower() in _NOT_PHOTO_FOLDERS for part in path.relative_to(src).parts[:-1])


def _xml_files(src: Path, *, max_depth: int | None = None) -> list[Path]:
    found = sorted(path for path in src.rglob("*") if path.suffix.lower() == ".xml" and path.is_file())
    if max_depth is None:
        return found
    return [path for path in found if len(path.relative_to(src).parts) <= max_depth]


# --------------------------------------------------------------------------- splits


def split_from_folders(path: Path, root: Path) -> str | None:
    """The split named by the folders between ``root`` and ``path`` (innermost wins), else None.

    ``Validation_Images`` -> val, ``train2017`` -> train, ``test`` -> test.
    """
    try:
        folders = path.relative_to(root).parts[:-1]
    except ValueError:
        return None
    for folder in reversed(folders):
        for word in _words(folder):
            if word in _SPLIT_WORDS:
                return _SPLIT_WORDS[word]
    return None


def _split_of(
    image_path: Path, xml_path: Path | None, src: Path, imageset_splits: dict[Path, dict[str, str]]
) -> str | None:
    """ImageSets lists win (they are the dataset's own split); folder names come next."""
    anchor = xml_path or image_path
    for voc_root, splits in imageset_splits.items():
        if anchor.is_relative_to(voc_root) and image_path.stem in splits:
            return splits[image_path.stem]
    from_image = split_from_folders(image_path, src)
    if from_image is not None or xml_path is None:
        return from_image
    return split_from_folders(xml_path, src)


def _imageset_splits(src: Path) -> dict[Path, dict[str, str]]:
    """stem -> split for every VOC root (the folder holding ``ImageSets/Main``) under ``src``."""
    roots: dict[Path, dict[str, str]] = {}
    for main in sorted(src.rglob("ImageSets/Main")):
        if main.is_dir():
            roots[main.parent.parent] = read_imageset_lists(main)
    return roots


def read_imageset_lists(main: Path) -> dict[str, str]:
    """stem -> split from ``train/val/trainval/test.txt``; the first list naming a stem wins."""
    splits: dict[str, str] = {}
    for file_stem, split in _IMAGESET_FILES:
        list_path = main / f"{file_stem}.txt"
        if not list_path.is_file():
            continue
        for line in list_path.read_text(encoding="utf-8", errors="replace").splitlines():
            fields = line.split()
            if fields:
                splits.setdefault(fields[0], split)
    return splits


# --------------------------------------------------------------------------- one XML file


def parse_voc_xml(xml_path: Path) -> VocAnnotation:
    """Boxes and declared size of one VOC XML file; FormatError naming file and element otherwise."""
    try:
        data = xml_path.read_bytes()
    except OSError as error:
        raise FormatError(xml_path, f"cannot read: {error.strerror or error}") from None
    _refuse_declarations(data, xml_path)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as error:
        line, column = error.position
        raise FormatError(xml_path, f"not well-formed XML: {error}", where=f"line {line}, column {column}") from None
    if root.tag != "annotation":
        raise FormatError(xml_path, f"root element is <{root.tag}>, expected <annotation>", where=f"<{root.tag}>")
    boxes = [_parse_object(element, index, xml_path) for index, element in enumerate(root.iter("object"), start=1)]
    return VocAnnotation(boxes=boxes, declared_size_wh=_declared_size(root))


def _refuse_declarations(data: bytes, xml_path: Path) -> None:
    # ElementTree expands internal entities; a DOCTYPE is never needed for VOC, so refuse it
    # instead of risking a "billion laughs" expansion from a hostile file.
    for marker in (b"<!DOCTYPE", b"<!ENTITY"):
        offset = data.find(marker)
        if offset >= 0:
            line = data.count(b"\n", 0, offset) + 1
            raise FormatError(
                xml_path,
                f"{marker.decode()[2:]} declarations are not allowed in annotation files",
                where=f"line {line}",
            )


def _parse_object(element: ET.Element, index: int, xml_path: Path) -> Box:
    # Objects are counted from 1 in messages, as a person reading the file counts them.
    where = f"object {index}"
    name = (element.findtext("name") or "").strip()
    if not name:
        raise FormatError(xml_path, "<object> has no <name>", where=where)
    bndbox = element.find("bndbox")
    if bndbox is None:
        raise FormatError(xml_path, f"<object> {name!r} has no <bndbox>", where=where)
    xyxy = tuple(_coordinate(bndbox, tag, xml_path, where) for tag in _COORDINATES)
    # difficult/truncated are ignored on purpose: a defect marked difficult is still a defect.
    return Box(class_name=name, xyxy=xyxy)  # type: ignore[arg-type]


def _coordinate(bndbox: ET.Element, tag: str, xml_path: Path, where: str) -> float:
    text = bndbox.findtext(tag)
    if text is None:
        raise FormatError(xml_path, f"<bndbox>/<{tag}> is missing", where=where)
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise FormatError(xml_path, f"<bndbox>/<{tag}> is {text.strip()!r}, not a number", where=where)
    return value


def _declared_size(root: ET.Element) -> tuple[int, int] | None:
    size = root.find("size")
    if size is None:
        return None
    width = _positive_int(size.findtext("width"))
    height = _positive_int(size.findtext("height"))
    if width is None or height is None:
        return None
    return width, height


def _positive_int(text: str | None) -> int | None:
    """A size field as int; None when missing, 0 or not a number (the image itself is the truth)."""
    try:
        value = float((text or "").strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return int(round(value))

