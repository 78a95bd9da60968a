"""Running a model over a split's images: the ``Predictor`` interface and its Ultralytics implementation.

Any callable mapping image paths to one :class:`Detections` per path (same order) can be evaluated,
so a torchvision SSD or a custom runtime plugs in without touching the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from yolodefect.detections import Detections
from yolodefect.inference.names import names_list
from yolodefect.inference.runner import (ULTRALYTICS_IOU, ULTRALYTICS_MAX_DET, VALIDATION_CONF, PredictSettings,
                                         UltralyticsRunner)
from yolodefect.progress import ProgressCallback

Predictor = Callable[[list[Path]], list[Detections]]


class UltralyticsPredictor:
    """A :data:`Predictor` for anything ``ultralytics.YOLO`` loads: .pt, .onnx, OpenVINO folder, .engine.

    Predicts at a low confidence (0.001 by default) because AP needs the whole ranking; the
    evaluator applies the operating thresholds afterwards. Images are letterboxed to the full
    ``imgsz`` square for every backend (``rect=False``), so a .pt and its fixed-shape export see
    identical inputs and their metrics differ only by numerics.
    """

    def __init__(
        self,
        model_path: Path | str,
        *,
        imgsz: int | tuple[int, int] | None = None,
        device: str = "cpu",
        batch: int = 8,
        conf: float = VALIDATION_CONF,
        iou: float = ULTRALYTICS_IOU,
        half: bool = False,
        max_det: int = ULTRALYTICS_MAX_DET,
        progress: ProgressCallback | None = None,
    ):
        settings = PredictSettings(conf=conf, iou=iou, device=device, half=half, max_det=max_det, rect=False,
                                   batch=batch)
        self.runner = UltralyticsRunner(model_path, settings, imgsz=imgsz)
        self.model_file, self.imgsz, self.notes = self.runner.model_file, self.runner.imgsz, self.runner.notes
        self.class_names = names_list(self.runner.class_names)
        self.progress = progress

    def __call__(self, images: list[Path]) -> list[Detections]:
        return self.runner.predict_paths(images, self.progress)


def predict_with_ultralytics(
    model_path: Path | str,
    images: Sequence[Path],
    *,
    imgsz: int | tuple[int, int] | None = None,
    device: str = "cpu",
    batch: int = 8,
    conf: float = VALIDATION_CONF,
    iou: float = ULTRALYTICS_IOU,
    half: bool = False,
    progress: ProgressCallback | None = None,
) -> list[Detections]:
    """One :class:`Detections` per image, in order, from any model Ultralytics can load."""
    predictor = UltralyticsPredictor(
        model_path, imgsz=imgsz, device=device, batch=batch, conf=conf, iou=iou, half=half, progress=progress
    )
    return predictor(list(images))
