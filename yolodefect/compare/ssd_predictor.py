"""A torchvision SSD as an evaluator :data:`~yolodefect.evaluation.predictors.Predictor`, and a cache.

With it ``yolodefect.evaluate.evaluate(..., predictor=SSDPredictor(...))`` scores an SSD with the
same matcher, COCO AP and part decisions as any YOLO model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from yolodefect.adapters import from_torchvision
from yolodefect.compare.ssd_dataset import read_rgb
from yolodefect.detections import Detections
from yolodefect.evaluation.predictors import Predictor

logger = logging.getLogger(__name__)


class SSDPredictor:
    """Runs an SSD over image files, in batches; boxes come back in each image's own pixels.

    The SSD resizes every image to its square input itself and maps boxes back; scores go down to
    the model's ``score_thresh`` (0.001) so AP sees the whole ranking. The model's train/eval mode
    is restored afterwards, so the training loop can call this between epochs.
    """

    def __init__(self, model: nn.Module, *, class_names: Sequence[str], device: torch.device | str = "cpu",
                 batch: int = 8):
        self.model = model
        self.class_names = list(class_names)
        self.device = torch.device(device)
        self.batch = batch

    @torch.inference_mode()
    def __call__(self, images: list[Path]) -> list[Detections]:
        was_training = self.model.training
        self.model.eval()
        try:
            detections: list[Detections] = []
            for start in range(0, len(images), self.batch):
                tensors = [torch.from_numpy(read_rgb(path).copy()).permute(2, 0, 1).to(self.device).float().div_(255)
                           for path in images[start:start + self.batch]]
                detections.extend(from_torchvision(output) for output in self.model(tensors))
            return detections
        finally:
            self.model.train(was_training)


class CachedPredictor:
    """Predicts a list of images once, then answers the same list from memory.

    ``compare`` needs a model's predictions twice, to choose its best-F1 threshold and then inside
    ``evaluate``; both calls must see identical predictions and the model should run once.
    """

    def __init__(self, predictor: Predictor, *, class_names: Sequence[str] | None = None):
        self._predictor = predictor
        self.class_names = list(class_names) if class_names is not None else getattr(predictor, "class_names", None)
        self._cache: dict[tuple[str, ...], list[Detections]] = {}

    def __call__(self, images: list[Path]) -> list[Detections]:
        key = tuple(str(Path(path).resolve()) for path in images)
        if key not in self._cache:
            self._cache[key] = self._predictor(list(images))
        return self._cache[key]
