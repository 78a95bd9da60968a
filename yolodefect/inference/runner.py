"""The one Ultralytics runner: a model file loaded once, run on image paths (the evaluator) or on frames (the station).

Ultralytics' predict arguments are spelled in one place, :meth:`PredictSettings.arguments`, so eval, export,
compare and watch cannot drift apart on how a model is asked to predict (half precision, NMS IoU, letterbox).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yolodefect.adapters import from_ultralytics
from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.inference.model_file import (DEFAULT_IMGSZ, ImageSize, ModelFile, check_imgsz, load_yolo,
                                             parse_imgsz, read_model_file, resolve_imgsz)
from yolodefect.inference.names import names_dict
from yolodefect.progress import ProgressCallback, no_progress

logger = logging.getLogger(__name__)

ULTRALYTICS_MAX_DET = 300  # Ultralytics' default max_det
ULTRALYTICS_IOU = 0.7  # Ultralytics' default NMS IoU
VALIDATION_CONF = 0.001  # Ultralytics' validator's confidence floor: AP needs the whole ranking


@dataclass(frozen=True)
class PredictSettings:
    """How a model is asked to predict. Each caller states its own values; :meth:`arguments` spells them."""

    conf: float  # the model's confidence floor: the evaluator needs the whole ranking, the station its lowest rule
    iou: float = ULTRALYTICS_IOU
    device: str = "cpu"
    half: bool = False
    max_det: int = ULTRALYTICS_MAX_DET
    # False letterboxes every image to the full imgsz square, for every backend (a .pt and its fixed-shape export
    # then see identical inputs); True pads a .pt's input only to the stride (Ultralytics' predict default).
    rect: bool = True
    batch: int = 1  # images per forward pass when predicting a list of paths

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf <= 1.0:
            raise UsageError(f"the confidence floor must lie in [0, 1], got {self.conf}")
        if not 0.0 <= self.iou <= 1.0:
            raise UsageError(f"the NMS IoU must lie in [0, 1], got {self.iou}")
        if self.max_det < 1 or self.batch < 1:
            raise UsageError(f"max_det and batch must be at least 1, got {self.max_det} and {self.batch}")

    def arguments(self, imgsz: ImageSize) -> dict[str, Any]:
        """Ultralytics' ``predict``/``track`` keyword arguments: the only place they are built."""
        return dict(
            imgsz=imgsz, device=self.device, conf=self.conf, iou=self.iou, max_det=self.max_det, rect=self.rect,
            batch=self.batch, verbose=False, save=False,
            **({"quantize": 16} if self.half else {}),  # Ultralytics 8.4 spells half precision this way
        )


@dataclass(frozen=True)
class OpenedModel:
    """A model ready to predict: the ``ultralytics.YOLO``, its :class:`ModelFile`, the size it runs at and why."""

    yolo: Any
    file: ModelFile
    imgsz: ImageSize
    notes: list[str] = field(default_factory=list)  # e.g. the requested size rounded up to the stride


def open_model(model_path: Path | str, imgsz: ImageSize | None = None) -> OpenedModel:
    """``ultralytics.YOLO`` for any backend, its :class:`ModelFile`, and the image size to run it at.

    ``imgsz`` defaults to the size the model was trained or exported at (else 640); a requested size is rounded up
    to the model's stride and a fixed-shape export always runs at its own size, each with a note saying so.
    """
    if imgsz is not None:
        check_imgsz(imgsz)  # before loading anything
    yolo = load_yolo(model_path, task="detect")
    model = read_model_file(model_path, loaded=yolo)
    if imgsz is None:
        return OpenedModel(yolo, model, model.imgsz or DEFAULT_IMGSZ)
    if model.fixed_shape and parse_imgsz(imgsz) != model.imgsz:
        # Ultralytics silently runs a fixed-shape export at its own size; say so and report that size.
        note = (f"{model.name} was exported for imgsz {model.imgsz} (a fixed shape): running at that size, "
                f"not {imgsz}")
        return OpenedModel(yolo, model, model.imgsz, [note])  # type: ignore[arg-type]
    used, note = resolve_imgsz(imgsz, model.stride)
    return OpenedModel(yolo, model, used, [note] if note else [])


PREDICT_CHUNK = 32  # image paths per Ultralytics predict call (see predict_paths)


class UltralyticsRunner:
    """Anything ``ultralytics.YOLO`` loads (.pt, .onnx fp32/int8, OpenVINO folder, .engine), run with one
    :class:`PredictSettings`: on a list of paths (batched, in the caller's order) or on one BGR frame."""

    def __init__(self, model_path: Path | str, settings: PredictSettings, *, imgsz: ImageSize | None = None):
        opened = open_model(model_path, imgsz)
        self.yolo = opened.yolo
        self.model_file = opened.file
        self.imgsz = opened.imgsz
        self.notes = opened.notes
        self.settings = settings
        # An export whose metadata names no classes still has the loaded model's (numbered) names.
        self.class_names: dict[int, str] = dict(self.model_file.class_names) or names_dict(self.yolo.names or {})

    def predict_paths(self, images: Sequence[Path | str], progress: ProgressCallback | None = None) -> list[Detections]:
        """One :class:`Detections` per image path, in the given order (duplicates allowed); progress under the stage
        ``predicting <model file name>``."""
        if not images:
            return []
        # Ultralytics sorts a list source, so results are matched back to the caller's order by path.
        wanted = [os.path.abspath(image) for image in images]
        unique = sorted(set(wanted))
        by_path: dict[str, Detections] = {}
        report = progress or no_progress
        stage = f"predicting {self.model_file.name}"
        report(stage, 0, len(unique))
        # In chunks: over one list source, Ultralytics' streaming predictor still grew by about 28 MB per image
        # until the list ended (measured: 3 GB at 80 DeepPCB images, a 1,219-image list killed at 24 GB; 32 per call peaked at 1.8 GB).
        for start in range(0, len(unique), PREDICT_CHUNK):
            results = self.yolo.predict(source=unique[start:start + PREDICT_CHUNK], stream=True,
                                        **self.settings.arguments(self.imgsz))
            for result in results:
                by_path[os.path.abspath(result.path)] = from_ultralytics(result)
                report(stage, len(by_path), len(unique))
        missing = [path for path in wanted if path not in by_path]
        if missing:
            raise UsageError(f"Ultralytics returned no result for {len(missing)} image(s), e.g. {missing[0]}; "
                             "is the file a readable image?")
        return [by_path[path] for path in wanted]

    def predict_frame(self, image: np.ndarray) -> Detections:
        """Detections of one BGR uint8 (H, W, 3) frame, in that frame's pixels."""
        return from_ultralytics(self.yolo.predict(image, **self.settings.arguments(self.imgsz))[0])

    def predict_frames(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """:meth:`predict_frame` of several BGR frames of one size in one forward pass (a batch)."""
        if not images:
            return []
        results = self.yolo.predict(list(images), **{**self.settings.arguments(self.imgsz), "batch": len(images)})
        return [from_ultralytics(result) for result in results]

    def track_frame(self, image: np.ndarray, tracker: str = "bytetrack.yaml") -> Detections:
        """:meth:`predict_frame` through Ultralytics' tracker (state kept between calls): detections carry
        ``tracker_id``, -1 for a detection whose track is not confirmed yet."""
        results = self.yolo.track(image, persist=True, tracker=tracker, **self.settings.arguments(self.imgsz))
        detections = from_ultralytics(results[0])
        if detections.tracker_id is None:
            # Ultralytics hides tracks until they are confirmed; say so explicitly (no ids yet).
            detections.tracker_id = np.full(len(detections), -1, dtype=np.int64)
        return detections
