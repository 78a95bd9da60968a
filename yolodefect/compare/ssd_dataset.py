"""A YOLO dataset split as torchvision detection samples, and SSD's training augmentation.

The target contract of torchvision's detection models is written once here, in
:data:`TARGET_CONTRACT`, and checked by :func:`check_target` on every sample the dataset returns:
``boxes`` float32 (N, 4) absolute pixel xyxy, ``labels`` int64 (N,) with 0 reserved for background,
so dataset class ``k`` is label ``k + 1``.

Boxes come from :func:`yolodefect.evaluation.ground_truth.load_ground_truth`, the very boxes the
evaluator scores against, and images are read in the same (EXIF-rotated) pixel frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from yolodefect.data.yolo_dataset import load_data_config
from yolodefect.errors import DatasetError, FormatError
from yolodefect.evaluation.ground_truth import GroundTruth, load_ground_truth

logger = logging.getLogger(__name__)

TARGET_CONTRACT = (
    "boxes: float32 tensor (N, 4), absolute pixel x1, y1, x2, y2 with x1 < x2 and y1 < y2 inside the image; "
    "labels: int64 tensor (N,), dataset class k is label k + 1 (0 is background and never a box label)"
)
BACKGROUND_LABEL = 0

Sample = tuple[torch.Tensor, dict[str, torch.Tensor]]
Transform = Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]]


def read_rgb(image_path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB as displayed (EXIF orientation applied), the frame of the ground truth."""
    try:
        with Image.open(image_path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise FormatError(image_path, f"cannot read the image ({error})") from None


def to_labels(class_id: np.ndarray) -> torch.Tensor:
    """Dataset class ids (0-based) to torchvision labels (1-based, 0 = background).

    The inverse is :func:`yolodefect.adapters.from_torchvision`.
    """
    return torch.as_tensor(np.asarray(class_id, dtype=np.int64) + 1, dtype=torch.int64)


def check_target(target: dict, *, image_hw: tuple[int, int], class_count: int, where: str) -> None:
    """Raise DatasetError, naming ``where``, unless ``target`` meets :data:`TARGET_CONTRACT`."""
    boxes, labels = target.get("boxes"), target.get("labels")
    problem = None
    if not isinstance(boxes, torch.Tensor) or not isinstance(labels, torch.Tensor):
        problem = "'boxes' and 'labels' must both be tensors"
    elif boxes.dtype != torch.float32 or boxes.ndim != 2 or boxes.shape[1] != 4:
        problem = f"boxes have dtype {boxes.dtype} and shape {tuple(boxes.shape)}"
    elif labels.dtype != torch.int64 or labels.shape != (boxes.shape[0],):
        problem = f"labels have dtype {labels.dtype} and shape {tuple(labels.shape)} for {boxes.shape[0]} boxes"
    elif len(labels) and (int(labels.min()) < 1 or int(labels.max()) > class_count):
        problem = f"labels {sorted(set(labels.tolist()))} fall outside 1..{class_count}"
    elif len(boxes):
        height, width = image_hw
        x1, y1, x2, y2 = boxes.unbind(1)
        if bool(((x2 <= x1) | (y2 <= y1)).any()):
            problem = f"degenerate boxes (zero width or height): {boxes[(x2 <= x1) | (y2 <= y1)][:3].tolist()}"
        elif bool(((x1 < 0) | (y1 < 0) | (x2 > width + 1e-3) | (y2 > height + 1e-3)).any()):
            problem = f"boxes outside the {width}x{height} image: {boxes.tolist()[:3]}"
    if problem:
        raise DatasetError(f"{where}: the SSD target breaks the contract ({problem}); expected {TARGET_CONTRACT}")


class YoloDetectionDataset(Dataset):
    """One split of a YOLO dataset as ``(image, target)`` samples for torchvision detection models.

    ``image`` is a uint8 ``tv_tensors.Image`` (3, H, W) unless ``transforms`` convert it; ``target``
    holds ``boxes`` (``tv_tensors.BoundingBoxes``), ``labels`` and ``image_id`` (the index).
    """

    def __init__(self, data: Path | str, *, split: str, transforms: Transform | None = None):
        config = load_data_config(data)
        self.class_names: list[str] = list(config.class_names)
        self.split = split
        self.ground_truth: list[GroundTruth] = load_ground_truth(config, split)
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.ground_truth)

    @property
    def image_paths(self) -> list[Path]:
        return [truth.image_path for truth in self.ground_truth]

    def __getitem__(self, index: int) -> Sample:
        truth = self.ground_truth[index]
        pixels = read_rgb(truth.image_path)
        height, width = pixels.shape[:2]
        if (width, height) != truth.image_size_wh:
            raise DatasetError(
                f"{truth.image_path}: the image reads as {width}x{height} but its header says "
                f"{truth.image_size_wh[0]}x{truth.image_size_wh[1]}; re-save the image without EXIF rotation"
            )
        image = tv_tensors.Image(torch.from_numpy(pixels.copy()).permute(2, 0, 1))
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.as_tensor(truth.xyxy, dtype=torch.float32), format="XYXY", canvas_size=(height, width)
            ),
            "labels": to_labels(truth.class_id),
            "image_id": index,
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        check_target(target, image_hw=tuple(image.shape[-2:]), class_count=len(self.class_names),
                     where=str(truth.image_path))
        return image, target


def train_transforms(*, fill_rgb: Sequence[int], vertical_flip: bool = False) -> v2.Compose:
    """SSD's augmentation from torchvision's detection references (``--data-augmentation ssd``).

    Photometric distortion, zoom out (canvas filled with the dataset mean), IoU crop and horizontal
    flip, as in the SSD paper; a vertical flip only with ``vertical_flip``, as ``yolodefect train`` flips YOLO's
    images vertically only when asked (``--flipud``: no gain measured on NEU-DET). Boxes cut away by the crop are
    dropped by
    ``SanitizeBoundingBoxes``; the image ends as float32 in [0, 1], which the SSD normalises itself.
    """
    steps: list[v2.Transform] = [
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill={tv_tensors.Image: tuple(int(v) for v in fill_rgb), "others": 0}, side_range=(1.0, 4.0),
                         p=0.5),
        v2.RandomIoUCrop(),
        v2.RandomHorizontalFlip(p=0.5),
    ]
    if vertical_flip:
        steps.append(v2.RandomVerticalFlip(p=0.5))
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0), v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(steps)


def eval_transforms() -> v2.Compose:
    """No augmentation: float32 in [0, 1]."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True)])


def collate(batch: list[Sample]) -> tuple[list[torch.Tensor], list[dict]]:
    """Images of different sizes stay a list; the SSD resizes each itself."""
    images, targets = zip(*batch)
    return list(images), list(targets)
