"""Binary masks: one mask image per source image, each connected blob becomes one box.

Layout::

    SRC/images/<stem>.jpg                    (or image/, imgs/; optional train/ val/ test/ sub-folders)
    SRC/masks/<stem>.png                     one class, "defect"  (or mask/, labels_mask/, ground_truth/)
    SRC/masks/<class>/<stem>.png             or one sub-folder per class

A mask matches an image by exact stem or by stem + ``_mask``/``_gt``, with any image suffix. When
the images are split into sub-folders, a mask is looked for in the same split sub-folder of the
mask (or class) folder first, then directly in it. An image without any mask is defect-free.

A blank mask (no defect pixel) in the one-class layout marks a defect-free image, as datasets that
ship a mask for every image do. In a class folder it says "this image has that class" and then
shows none, which is a labelling mistake more often than not: each one is a warning naming the
file, counted as "blank_masks", so that it does not pass silently as a good part.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from yolodefect.data.formats.base import BadFilePolicy, ReadOptions, image_size_wh, list_images
from yolodefect.data.records import SPLITS, Box, ImageRecord, SourceDataset
from yolodefect.errors import DatasetError, FormatError

logger = logging.getLogger(__name__)

NAME = "mask"
DESCRIPTION = "Binary masks: images/<stem>.* + masks/<stem>.png (or masks/<class>/<stem>.png)"

IMAGE_DIR_NAMES = ("images", "image", "imgs")
MASK_DIR_NAMES = ("masks", "mask", "labels_mask", "ground_truth")
MASK_STEM_SUFFIXES = ("", "_mask", "_gt")
SINGLE_CLASS = "defect"
_EXAMPLES = 5


@dataclass(frozen=True)
class MaskFolder:
    """The masks of one class: ``{split or None: {stem: path}}``, None being the folder itself."""

    class_name: str
    root: Path
    by_split: dict[str | None, dict[str, Path]]
    per_class: bool = False  # one of several class sub-folders, not the one-class mask folder

    def find(self, stem: str, split: str | None) -> Path | None:
        places = [self.by_split.get(split, {})] if split else []
        places.append(self.by_split.get(None, {}))
        for masks in places:
            for suffix in MASK_STEM_SUFFIXES:
                if (path := masks.get(stem + suffix)) is not None:
                    return path
        return None

    def all_masks(self) -> list[Path]:
        return sorted(path for masks in self.by_split.values() for path in masks.values())


@dataclass
class Tally:
    """Counts behind the summary warnings, so that a large dataset gets one line each."""

    dropped_components: int = 0
    masks_with_dropped: int = 0
    unmasked_images: list[Path] = field(default_factory=list)
    blank_class_masks: list[tuple[MaskFolder, Path, int]] = field(default_factory=list)  # with brightest value


def _child_dir(src: Path, names: tuple[str, ...]) -> Path | None:
    """The first of ``names`` that is a folder in ``src``, matched case-insensitively."""
    try:
        children = {path.name.lower(): path for path in sorted(src.iterdir()) if path.is_dir()}
    except OSError:
        return None
    for name in names:
        if name in children:
            return children[name]
    return None


def find_layout(src: Path) -> tuple[Path, Path] | None:
    """(image folder, mask folder) of SRC, or None when it does not have both."""
    image_dir = _child_dir(src, IMAGE_DIR_NAMES)
    mask_dir = _child_dir(src, MASK_DIR_NAMES)
    if image_dir is None or mask_dir is None:
        return None
    return image_dir, mask_dir


def looks_like(src: Path) -> bool:
    return find_layout(src) is not None


def image_entries(image_dir: Path) -> list[tuple[Path, str | None]]:
    """(image, split) for the images directly in ``image_dir`` and in its split sub-folders."""
    entries: list[tuple[Path, str | None]] = [(path, None) for path in list_images(image_dir)]
    for split in SPLITS:
        if (image_dir / split).is_dir():
            entries.extend((path, split) for path in list_images(image_dir / split))
    return entries


def _masks_by_stem(folder: Path) -> dict[str, Path]:
    return {path.stem: path for path in list_images(folder)}


def mask_folder(class_name: str, root: Path, *, per_class: bool = False) -> MaskFolder:
    by_split: dict[str | None, dict[str, Path]] = {None: _masks_by_stem(root)}
    for split in SPLITS:
        if (root / split).is_dir():
            by_split[split] = _masks_by_stem(root / split)
    return MaskFolder(class_name, root, by_split, per_class)


def mask_folders(mask_dir: Path, policy: BadFilePolicy) -> list[MaskFolder]:
    """One folder for class "defect", or one per class sub-folder (sorted by class name)."""
    # Hidden folders (.ipynb_checkpoints, .cache) are tool litter, not classes.
    class_dirs = sorted(
        path
        for path in mask_dir.iterdir()
        if path.is_dir() and path.name not in SPLITS and not path.name.startswith(".")
    )
    if not class_dirs:
        return [mask_folder(SINGLE_CLASS, mask_dir)]
    # With per-class folders a mask lying directly in masks/ has no class; guessing one would
    # silently mislabel it.
    for path in list_images(mask_dir):
        policy.bad(path, f"mask has no class: {mask_dir.name}/ has per-class sub-folders, move it into one")
    return [mask_folder(path.name, path, per_class=True) for path in class_dirs]


def load_mask(path: Path) -> np.ndarray:
    """The mask as one 2-D channel. Colour masks keep their brightest channel per pixel.

    The channel maximum rather than luminance: a pure red or blue annotation on black has a
    luminance below the usual threshold and would vanish. Transparent pixels are background.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise FormatError(path, f"cannot read mask: {error}") from None
    mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if mask is None:
        raise FormatError(path, "cannot read mask: not a decodable image")
    if mask.ndim == 3:
        gray = mask[:, :, :3].max(axis=2)
        if mask.shape[2] == 4:
            gray = np.where(mask[:, :, 3] > 0, gray, 0).astype(mask.dtype)
        mask = gray
    return mask


def foreground(mask: np.ndarray, threshold: int) -> np.ndarray:
    """Defect pixels: above ``threshold``, or above 0 in a 0/1 mask (max value <= 1)."""
    if mask.size and mask.max() <= 1:
        return mask > 0
    return mask > threshold


def mask_to_boxes(
    mask: np.ndarray, class_name: str, *, threshold: int = 127, min_area: int = 1
) -> tuple[list[Box], int]:
    """One box per 8-connected foreground blob of at least ``min_area`` pixels.

    Returns the boxes (absolute pixel xyxy, the blob's outer pixel edges) and how many smaller
    blobs were dropped.
    """
    binary = foreground(mask, threshold).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    boxes: list[Box] = []
    dropped = 0
    for label in range(1, count):  # label 0 is the background
        x, y, width, height, area = (int(value) for value in stats[label])
        if area < min_area:
            dropped += 1
            continue
        boxes.append(Box(class_name, (float(x), float(y), float(x + width), float(y + height))))
    return boxes, dropped


def _image_size(image: Path, policy: BadFilePolicy) -> tuple[int, int] | None:
    try:
        return image_size_wh(image)
    except FormatError as error:
        policy.bad(error.path, error.detail, where=error.where)
        return None


def boxes_from_mask(
    mask_path: Path,
    folder: MaskFolder,
    image_wh: tuple[int, int],
    options: ReadOptions,
    tally: Tally,
) -> list[Box]:
    """Boxes of one mask file; raises FormatError when unreadable or not the image's size."""
    mask = load_mask(mask_path)
    mask_wh = (mask.shape[1], mask.shape[0])
    if mask_wh != image_wh:
        raise FormatError(
            mask_path,
            f"mask is {mask_wh[0]}x{mask_wh[1]} but its image is {image_wh[0]}x{image_wh[1]} (as displayed)",
        )
    boxes, dropped = mask_to_boxes(
        mask, folder.class_name, threshold=options.mask_threshold, min_area=options.mask_min_area
    )
    if dropped:
        tally.dropped_components += dropped
        tally.masks_with_dropped += 1
    if folder.per_class and not boxes and not dropped:
        tally.blank_class_masks.append((folder, mask_path, int(mask.max()) if mask.size else 0))
    return boxes


def find_masks(
    image: Path, split: str | None, folders: list[MaskFolder]
) -> list[tuple[MaskFolder, Path]]:
    """Each class folder's mask for ``image``, for the classes that have one."""
    return [(folder, path) for folder in folders if (path := folder.find(image.stem, split)) is not None]


def read_image(
    image: Path,
    split: str | None,
    found: list[tuple[MaskFolder, Path]],
    options: ReadOptions,
    policy: BadFilePolicy,
    tally: Tally,
) -> ImageRecord | None:
    """The record of one image from all its masks; None when a mask (or the image) is bad."""
    if not found:
        tally.unmasked_images.append(image)
        return ImageRecord(image, split=split)
    image_wh = _image_size(image, policy)
    if image_wh is None:
        return None
    boxes: list[Box] = []
    for folder, mask_path in found:
        try:
            boxes.extend(boxes_from_mask(mask_path, folder, image_wh, options, tally))
        except FormatError as error:
            # Dropping the whole image, not just this mask: keeping it would present its
            # defects of this class as background.
            policy.bad(error.path, error.detail, where=error.where)
            return None
    return ImageRecord(
        image, boxes=boxes, declared_size_wh=image_wh, split=split, annotation_path=found[0][1]
    )


def _summarise(tally: Tally, options: ReadOptions, mask_dir: Path, policy: BadFilePolicy) -> None:
    if tally.dropped_components:
        policy.warn(
            mask_dir,
            f"dropped {tally.dropped_components} mask blobs smaller than {options.mask_min_area} pixels "
            f"(in {tally.masks_with_dropped} masks)",
        )
    if tally.unmasked_images:
        names = ", ".join(path.name for path in tally.unmasked_images[:_EXAMPLES])
        policy.warn(
            mask_dir,
            f"{len(tally.unmasked_images)} images have no mask and were read as defect-free (e.g. {names})",
        )
    for folder, path, brightest in tally.blank_class_masks:
        faint = (f" (its brightest pixel is {brightest}: lower --mask-threshold if that is the defect)"
                 if brightest > 1 else "")
        policy.warn(
            path,
            f"blank mask in the class folder {folder.root.name}/: no pixel above {options.mask_threshold}{faint}, "
            f"so its image is read as having no {folder.class_name!r} (defect-free if no other mask marks it); "
            "fix or delete the mask",
            kind="blank_masks",
        )


def read(src: Path, options: ReadOptions) -> SourceDataset:
    layout = find_layout(src)
    if layout is None:
        raise DatasetError(
            f"{src} is not a mask dataset: expected an image folder ({'/'.join(IMAGE_DIR_NAMES)}) "
            f"and a mask folder ({'/'.join(MASK_DIR_NAMES)})"
        )
    image_dir, mask_dir = layout
    policy = BadFilePolicy(options.skip_bad)
    folders = mask_folders(mask_dir, policy)
    matches = [
        (image, split, find_masks(image, split, folders)) for image, split in image_entries(image_dir)
    ]
    claimed = {path for _, _, found in matches for _, path in found}
    for folder in folders:
        for path in folder.all_masks():
            if path not in claimed:
                detail = f"mask without image: no image {path.stem}.* (nor without _mask/_gt) in {image_dir}"
                policy.bad(path, detail)
    tally = Tally()
    records = [
        record
        for image, split, found in matches
        if (record := read_image(image, split, found, options, policy, tally)) is not None
    ]
    _summarise(tally, options, mask_dir, policy)
    records.sort(key=lambda record: str(record.image_path))
    dataset = SourceDataset(
        format=NAME,
        records=records,
        class_names=[folder.class_name for folder in folders],
        skipped=policy.skipped,
        warnings=policy.warnings,
    )
    logger.info("masks %s: %d images, %d boxes, %d skipped", src, len(records), dataset.box_count,
                len(policy.skipped))
    return dataset
