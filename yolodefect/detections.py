"""The one container for detections on one image, shared by the evaluator and the stream pipeline.

Modelled on supervision's ``Detections``: parallel numpy arrays, absolute pixel ``xyxy`` in the
coordinates of the image as displayed, so every model backend (Ultralytics, ONNX, SSD) and every
consumer (metrics, thresholds, the inspection station) agrees on one layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class Detections:
    """Boxes found on one image.

    Attributes:
        xyxy: (N, 4) float32 absolute pixel corners x1, y1, x2, y2.
        confidence: (N,) float32 scores in [0, 1].
        class_id: (N,) int64 class indices into the model's class names.
        tracker_id: (N,) int64 track ids when a tracker assigned them, else None.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    tracker_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Coerce once here so every consumer can rely on dtypes and shapes without re-checking.
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32)
        if self.xyxy.size == 0:
            self.xyxy = self.xyxy.reshape(0, 4)  # [] and (0,) both mean "no boxes"
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        self.class_id = np.asarray(self.class_id).reshape(-1)
        if self.class_id.size and not np.all(np.equal(np.mod(self.class_id, 1), 0)):
            raise ValueError(f"Detections.class_id must hold whole numbers, got {self.class_id[:5]}")
        self.class_id = self.class_id.astype(np.int64)
        if self.tracker_id is not None:
            self.tracker_id = np.asarray(self.tracker_id).reshape(-1).astype(np.int64)
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise ValueError(f"Detections.xyxy must have shape (N, 4), got {self.xyxy.shape}")
        n = self.xyxy.shape[0]
        lengths = {"confidence": len(self.confidence), "class_id": len(self.class_id)}
        if self.tracker_id is not None:
            lengths["tracker_id"] = len(self.tracker_id)
        wrong = {name: length for name, length in lengths.items() if length != n}
        if wrong:
            raise ValueError(f"Detections has {n} boxes but array lengths {wrong}")

    @classmethod
    def empty(cls) -> Detections:
        """No detections (a clean part, or a model that found nothing)."""
        return cls(
            xyxy=np.zeros((0, 4), dtype=np.float32),
            confidence=np.zeros(0, dtype=np.float32),
            class_id=np.zeros(0, dtype=np.int64),
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: np.ndarray | list[int] | list[bool] | slice | int) -> Detections:
        """Subset by boolean mask, index array, slice or single index (always returns Detections)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        if not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == bool and index.shape != (len(self),):
                raise ValueError(f"boolean mask of shape {index.shape} does not fit {len(self)} detections")
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            tracker_id=None if self.tracker_id is None else self.tracker_id[index],
        )

    def filter(self, mask: np.ndarray) -> Detections:
        """Keep the detections where ``mask`` is True."""
        return self[np.asarray(mask, dtype=bool)]

    def __repr__(self) -> str:
        return f"Detections(n={len(self)}, classes={sorted(set(self.class_id.tolist()))})"


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of two xyxy arrays; COCO convention (no +1 on widths)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, intersection / union, 0.0)
