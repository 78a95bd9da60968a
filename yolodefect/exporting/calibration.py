"""INT8 calibration images: which ones (stratified by class, seeded) and how they are fed (as at inference).

Preprocessing is Ultralytics' own predict path: letterbox to the square ``imgsz`` (gray 114 padding,
centred), BGR -> RGB, /255, CHW, float32. Calibrating on anything else gives ranges the deployed
model never sees.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yolodefect.data.yolo_dataset import DataConfig, label_path_for, read_label_lines
from yolodefect.errors import FormatError

logger = logging.getLogger(__name__)

BACKGROUND = "background"


@dataclass(frozen=True)
class CalibrationSet:
    """The images chosen and how they cover the classes (``per_stratum``: images drawn per class + background)."""

    images: list[Path]
    available: int
    seed: int
    split: str
    per_stratum: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"images": len(self.images), "available": self.available, "seed": self.seed, "split": self.split,
                "per_stratum": dict(self.per_stratum)}


def _classes_in(image: Path) -> set[int]:
    try:
        return {int(row[0]) for row in read_label_lines(label_path_for(image)) if row}
    except FormatError:
        logger.warning("calibration: unreadable label file for %s; counting the image as background", image)
        return set()


def _quotas(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Largest-remainder split of ``total`` proportional to ``sizes``, at least one per non-empty stratum."""
    quotas = {name: (1 if size else 0) for name, size in sizes.items()}
    remaining = total - sum(quotas.values())
    if remaining <= 0:
        return quotas
    spare = {name: size - quotas[name] for name, size in sizes.items()}
    pool = sum(spare.values())
    shares = {name: remaining * spare[name] / pool if pool else 0.0 for name in sizes}
    for name, share in shares.items():
        quotas[name] += min(int(share), spare[name])
    leftover = total - sum(quotas.values())
    for name in sorted(shares, key=lambda n: (shares[n] - int(shares[n]), n), reverse=True):
        if leftover <= 0:
            break
        if quotas[name] < sizes[name]:
            quotas[name] += 1
            leftover -= 1
    return quotas


def select_calibration_images(config: DataConfig, count: int, *, seed: int = 0, split: str = "train") -> CalibrationSet:
    """``count`` images of ``split`` (all of them when fewer), stratified across classes, seeded.

    Each image joins the stratum of its rarest class (images without boxes form the background
    stratum), so a rare defect is drawn as soon as there is room for one image per stratum; the rest
    is shared in proportion to the strata's sizes.
    """
    images = config.images(split)
    classes = [_classes_in(image) for image in images]
    frequency: dict[int, int] = {}
    for found in classes:
        for class_id in found:
            frequency[class_id] = frequency.get(class_id, 0) + 1
    names = list(config.class_names)
    strata: dict[str, list[Path]] = {name: [] for name in [*names, BACKGROUND]}
    for image, found in zip(images, classes):
        if not found:
            strata[BACKGROUND].append(image)
            continue
        rarest = min(found, key=lambda c: (frequency[c], c))
        strata[names[rarest] if 0 <= rarest < len(names) else BACKGROUND].append(image)
    if count >= len(images):
        chosen = {name: members for name, members in strata.items()}
    else:
        rng = random.Random(seed)
        quotas = _quotas({name: len(members) for name, members in strata.items()}, count)
        chosen = {name: rng.sample(members, quotas[name]) for name, members in strata.items()}
    picked = sorted(image for members in chosen.values() for image in members)
    per_stratum = {name: len(members) for name, members in chosen.items() if members}
    logger.info("calibration: %d of %d %s images (%s)", len(picked), len(images), split,
                ", ".join(f"{k} {v}" for k, v in per_stratum.items()))
    return CalibrationSet(picked, len(images), seed, split, per_stratum)


def preprocess(image_path: Path, imgsz: int) -> np.ndarray:
    """One image as the (1, 3, imgsz, imgsz) float32 tensor Ultralytics feeds at inference (rect=False)."""
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.patches import imread

    image = imread(str(image_path))
    if image is None:
        raise FormatError(image_path, "cannot be read as an image (calibration)")
    boxed = LetterBox((imgsz, imgsz), auto=False)(image=image)
    chw = boxed[..., ::-1].transpose(2, 0, 1)  # BGR HWC -> RGB CHW
    return (np.ascontiguousarray(chw)[None].astype(np.float32)) / 255.0


class CalibrationReader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over image paths, read lazily one at a time.

    Supports ``__len__`` and ``set_range`` so ONNX Runtime can calibrate in slices (``CalibStridedMinMax``)
    instead of holding every intermediate tensor of every image in memory.
    """

    def __init__(self, images: Sequence[Path], imgsz: int, input_name: str = "images"):
        self.images = list(images)
        self.imgsz = imgsz
        self.input_name = input_name
        self._start, self._end = 0, len(self.images)
        self._next = 0

    def __len__(self) -> int:
        return len(self.images)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = start_index, min(end_index, len(self.images))
        self._next = self._start

    def rewind(self) -> None:
        self._next = self._start

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        image = self.images[self._next]
        self._next += 1
        return {self.input_name: preprocess(image, self.imgsz)}

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item
