"""Converting other libraries' detection results into :class:`yolodefect.detections.Detections`."""

from __future__ import annotations

from typing import Any

import numpy as np

from yolodefect.detections import Detections
from yolodefect.errors import UsageError


def _to_numpy(value: Any) -> np.ndarray:
    # Ultralytics hands back torch tensors (possibly on GPU) or numpy arrays depending on the backend.
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def from_ultralytics(result: Any) -> Detections:
    """Detections of one Ultralytics ``Results`` object (boxes in original-image pixels).

    Raises UsageError for results that carry no axis-aligned boxes (classification, oriented boxes),
    since the evaluator and the station only handle detection models.
    """
    if getattr(result, "obb", None) is not None:
        raise UsageError(
            "the model predicts oriented boxes (OBB); yolodefect needs an axis-aligned detection model (task=detect)"
        )
    boxes = getattr(result, "boxes", None)
    if boxes is None:
        raise UsageError(
            "the model returned no boxes (is it a classification model?); give a detection model (task=detect)"
        )
    if len(boxes) == 0:
        return Detections.empty()
    track_ids = boxes.id if getattr(boxes, "is_track", False) else None
    return Detections(
        xyxy=_to_numpy(boxes.xyxy),
        confidence=_to_numpy(boxes.conf),
        class_id=_to_numpy(boxes.cls),
        tracker_id=None if track_ids is None else _to_numpy(track_ids),
    )


def from_torchvision(output: dict[str, Any]) -> Detections:
    """Detections of one torchvision detection output (``boxes``, ``scores``, ``labels`` tensors).

    torchvision reserves label 0 for the background, so dataset class ``k`` is label ``k + 1``
    (see :data:`yolodefect.compare.ssd_dataset.TARGET_CONTRACT`); classes come back 0-based.
    """
    return Detections(
        xyxy=_to_numpy(output["boxes"]),
        confidence=_to_numpy(output["scores"]),
        class_id=_to_numpy(output["labels"]).astype(np.int64) - 1,
    )
