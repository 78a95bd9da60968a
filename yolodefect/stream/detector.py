"""The model stage: any callable image -> Detections, and the Ultralytics implementation of it.

The watch loop takes a :data:`Detector` as an argument (supervision's ``InferenceSlicer`` callback
shape), so its tests run on a fake and production runs on :class:`UltralyticsDetector`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.inference.runner import ULTRALYTICS_IOU, PredictSettings, UltralyticsRunner
from yolodefect.inference.tiles import check_tile_grid, tile_origins  # the grid convert --tile trains on
from yolodefect.stream.events import ModelIdentity

logger = logging.getLogger(__name__)

Detector = Callable[[np.ndarray], Detections]
"""BGR uint8 (H, W, 3) image in, detections in that image's pixels out."""


class UltralyticsDetector:
    """A :data:`Detector` for anything ``ultralytics.YOLO`` loads: .pt, .onnx (fp32 or int8), OpenVINO folders.

    ``conf_floor`` is the model's own confidence cut; keep it at or below the lowest rule threshold
    (the reject rules decide, not the model). ``tracking=True`` runs Ultralytics' tracker inside
    ``model.track(persist=True)`` so detections carry ``tracker_id``; the watch loop normally tracks
    itself (see :mod:`yolodefect.stream.tracking`) because that also works with tiled inference.
    """

    def __init__(
        self,
        model_path: Path | str,
        *,
        imgsz: int | tuple[int, int] | None = None,
        device: str = "cpu",
        conf_floor: float = 0.05,
        iou: float = ULTRALYTICS_IOU,
        half: bool = False,
        tracking: bool = False,
        tracker: str = "bytetrack.yaml",
    ):
        if not 0.0 <= conf_floor <= 1.0:
            raise UsageError(f"conf_floor must lie in [0, 1], got {conf_floor}")
        # One frame at a time, padded only to the stride (Ultralytics' predict defaults for rect and max_det).
        settings = PredictSettings(conf=conf_floor, iou=iou, device=device, half=half)
        self.runner = UltralyticsRunner(model_path, settings, imgsz=imgsz)
        for note in self.runner.notes:  # e.g. imgsz rounded up to the stride: the operator sees the size really used
            logger.warning(note)
        self.model_file = self.runner.model_file
        self.imgsz = self.runner.imgsz
        self.class_names: dict[int, str] = self.runner.class_names
        self.card = self.model_file.card
        self.model_info = ModelIdentity.of(self.model_file)  # what every event records
        self.conf_floor = conf_floor
        self.tracking = tracking
        self.tracker = tracker

    def __call__(self, image: np.ndarray) -> Detections:
        if self.tracking:
            return self.runner.track_frame(image, self.tracker)
        return self.runner.predict_frame(image)


class TiledDetector:
    """Sliced inference for small defects on large frames (SAHI / supervision ``InferenceSlicer``).

    Runs ``detector`` on overlapping tiles of ``tile_wh`` pixels, shifts each tile's boxes back to
    frame coordinates and merges the duplicates from the overlaps (see :func:`merge_tiles`). A frame
    no larger than a tile is passed through in one call.
    """

    def __init__(self, detector: Detector, tile_wh: tuple[int, int] = (640, 640), *, overlap: float = 0.2,
                 match_threshold: float = 0.5):
        for side in tile_wh:
            check_tile_grid(int(side), overlap, tile_option="tile", overlap_option="tile_overlap")
        self.detector = detector
        self.tile_wh = (int(tile_wh[0]), int(tile_wh[1]))
        self.overlap = overlap
        self.match_threshold = match_threshold
        # Names and model info of the wrapped detector stay visible to the watch loop.
        for attribute in ("class_names", "model_info", "card"):
            if hasattr(detector, attribute):
                setattr(self, attribute, getattr(detector, attribute))

    def __call__(self, image: np.ndarray) -> Detections:
        height, width = image.shape[:2]
        tiles = tile_origins((width, height), self.tile_wh, self.overlap)
        if len(tiles) == 1:
            return self.detector(image)
        tw, th = self.tile_wh
        parts: list[Detections] = []
        for x, y in tiles:
            found = self.detector(image[y:y + th, x:x + tw])
            if len(found):
                parts.append(Detections(found.xyxy + np.array([x, y, x, y], dtype=np.float32), found.confidence,
                                        found.class_id))
        return merge_tiles(parts, self.match_threshold)


def merge_tiles(parts: list[Detections], match_threshold: float = 0.5) -> Detections:
    """Merge detections from overlapping tiles: greedy non-maximum *merging*, class-aware.

    A defect cut by a tile edge comes back as a piece from one tile and (part of) the whole from
    its neighbour. Their IoU is low, so plain NMS keeps both; here boxes of one class whose
    intersection covers ``match_threshold`` of the smaller box are one defect: the union box with
    the highest confidence (SAHI's GREEDYNMM with intersection-over-smaller).
    """
    if not parts:
        return Detections.empty()
    xyxy = np.concatenate([p.xyxy for p in parts]).astype(np.float32)
    confidence = np.concatenate([p.confidence for p in parts]).astype(np.float32)
    class_id = np.concatenate([p.class_id for p in parts]).astype(np.int64)
    areas = np.clip(xyxy[:, 2] - xyxy[:, 0], 0, None) * np.clip(xyxy[:, 3] - xyxy[:, 1], 0, None)
    used = np.zeros(len(xyxy), dtype=bool)
    boxes, scores, classes = [], [], []
    for i in np.argsort(-confidence, kind="stable"):
        if used[i]:
            continue
        candidates = np.flatnonzero(~used & (class_id == class_id[i]))
        top_left = np.maximum(xyxy[candidates, :2], xyxy[i, :2])
        bottom_right = np.minimum(xyxy[candidates, 2:], xyxy[i, 2:])
        inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        smaller = np.maximum(np.minimum(areas[candidates], areas[i]), 1e-6)
        group = candidates[inter / smaller >= match_threshold]
        group = np.union1d(group, [i])
        used[group] = True
        boxes.append(np.concatenate([xyxy[group, :2].min(axis=0), xyxy[group, 2:].max(axis=0)]))
        scores.append(confidence[i])
        classes.append(class_id[i])
    return Detections(np.array(boxes), np.array(scores), np.array(classes))
