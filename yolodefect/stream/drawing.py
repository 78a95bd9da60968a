"""Annotated frames for the operator and for evidence: boxes, labels, the ROI, a status overlay.

Pure functions: they return a new image and never touch the input. Text is drawn with
``cv2.putText`` (Hershey fonts are built into OpenCV), because Ultralytics' Annotator fetches a
TrueType font from the internet for non-ASCII labels and stations are often offline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from yolodefect.detections import Detections
from yolodefect.inference.names import class_name

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_REJECT_BGR = (0, 0, 255)
_IGNORED_BGR = (0, 200, 255)  # detections the rules do not count (low confidence, outside the ROI, ...)
_ROI_BGR = (255, 200, 0)
_PART_BGR = (80, 200, 80)
_TEXT_BGR = (255, 255, 255)


@dataclass(frozen=True)
class Overlay:
    """The status line drawn at the top-left corner."""

    fps: float | None = None
    rejects: int = 0
    text: str | None = None  # e.g. "REJECT part 12" or "ERROR: model failed"
    alarm: bool = False  # draw ``text`` in red


def _scale_for(image: np.ndarray) -> tuple[float, int]:
    # Keep labels readable from 320 px previews to 4K line-scan frames.
    side = max(image.shape[:2])
    scale = max(0.35, side / 1600.0)
    return scale, max(1, int(round(scale * 2)))


def _label(image: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], scale: float, thickness: int) -> None:
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thickness)
    y = max(y, th + base + 2)
    cv2.rectangle(image, (x, y - th - base - 2), (x + tw + 2, y), colour, -1)
    cv2.putText(image, text, (x + 1, y - base - 1), _FONT, scale, _TEXT_BGR, thickness, cv2.LINE_AA)


def draw_frame(
    image: np.ndarray,
    detections: Detections,
    class_names: Mapping[int, str],
    *,
    counted: np.ndarray | None = None,
    roi_polygon: Sequence[tuple[float, float]] | None = None,
    overlay: Overlay | None = None,
    part_boxes: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``image`` with boxes (red: counts as a defect, amber: ignored by the rules), labels, ROI and overlay;
    ``part_boxes`` (N, 4), the parts found on a line, in green under everything else."""
    out = image.copy()
    scale, thickness = _scale_for(out)
    for box in (part_boxes if part_boxes is not None else ()):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), _PART_BGR, thickness)
    if roi_polygon is not None:
        pts = np.round(np.asarray(roi_polygon, dtype=np.float32)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], isClosed=True, color=_ROI_BGR, thickness=thickness, lineType=cv2.LINE_AA)
    mask = counted if counted is not None else np.ones(len(detections), dtype=bool)
    # Ignored boxes first, so a defect that counts is never hidden under one that does not.
    for index in sorted(range(len(detections)), key=lambda k: bool(mask[k])):
        x1, y1, x2, y2 = (int(round(v)) for v in detections.xyxy[index])
        colour = _REJECT_BGR if mask[index] else _IGNORED_BGR
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness + (1 if mask[index] else 0))
        text = f"{class_name(class_names, int(detections.class_id[index]))} {float(detections.confidence[index]):.2f}"
        if detections.tracker_id is not None and detections.tracker_id[index] >= 0:
            text += f" #{int(detections.tracker_id[index])}"
        _label(out, text, x1, y1, colour, scale * 0.9, max(1, thickness - 1))
    if overlay is not None:
        parts = []
        if overlay.fps is not None:
            parts.append(f"{overlay.fps:.1f} fps")
        parts.append(f"rejects {overlay.rejects}")
        if overlay.text:
            parts.append(overlay.text)
        _label(out, "  ".join(parts), 4, 4, _REJECT_BGR if overlay.alarm else (60, 60, 60), scale, thickness)
    return out
