"""The model stage: any callable image -> Detections, and the Ultralytics implementation of it.

The watch loop takes a :data:`Detector` as an argument (supervision's ``InferenceSlicer`` callback
shape), so its tests run on a fake and production runs on :class:`UltralyticsDetector`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from yolodefect.adapters import from_ultralytics
from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.inference.model_file import missing_model
from yolodefect.stream.events import ModelInfo

logger = logging.getLogger(__name__)

Detector = Callable[[np.ndarray], Detections]
"""BGR uint8 (H, W, 3) image in, detections in that image's pixels out."""


def file_sha256(path: Path) -> str:
    """SHA-256 of a weights file, or of an export folder's files (names and bytes, sorted) for OpenVINO."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def card_path(model_path: Path) -> Path:
    """``best.pt`` -> ``best.card.json``; an OpenVINO folder ``x_openvino_model`` -> ``x_openvino_model.card.json``."""
    return model_path.with_name(model_path.name + ".card.json") if model_path.is_dir() else model_path.with_suffix(".card.json")


def load_model_card(model_path: Path | str) -> dict[str, Any] | None:
    """The model card next to the model, if any (shown on the station's panel; never required)."""
    path = card_path(Path(model_path))
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("model card %s is unreadable (%s); ignored", path, exc)
        return None
    if not isinstance(card, dict):
        logger.warning("model card %s is not a JSON object; ignored", path)
        return None
    return card


def _precision(model_path: Path, card: dict[str, Any] | None) -> str:
    if card and isinstance(card.get("precision"), str) and card["precision"]:
        return str(card["precision"])
    # Without a card the file name is the only hint; Ultralytics names INT8 exports *_int8*.
    return "int8" if "int8" in model_path.name.lower() else "fp32"


def model_info_for(model_path: Path | str, card: dict[str, Any] | None = None) -> ModelInfo:
    """Name, SHA-256 and precision of the weights, as every event records them."""
    path = Path(model_path)
    if not path.exists():
        raise missing_model(path)
    card = card if card is not None else load_model_card(path)
    return ModelInfo(name=path.name, sha256=file_sha256(path), precision=_precision(path, card))


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
        iou: float = 0.7,
        half: bool = False,
        tracking: bool = False,
        tracker: str = "bytetrack.yaml",
    ):
        from yolodefect.evaluation.predictors import load_detection_model

        path = Path(model_path)
        if not 0.0 <= conf_floor <= 1.0:
            raise UsageError(f"conf_floor must lie in [0, 1], got {conf_floor}")
        loaded = load_detection_model(path, imgsz)
        self.model, info, self.imgsz = loaded.yolo, loaded.info, loaded.imgsz
        for note in loaded.notes:  # e.g. imgsz rounded up to the stride: the operator sees the size really used
            logger.warning(note)
        self.class_names: dict[int, str] = (
            dict(enumerate(info.class_names)) if info.class_names else {int(k): str(v) for k, v in self.model.names.items()}
        )
        self.card = load_model_card(path)
        self.model_info = model_info_for(path, self.card)
        self.device = device
        self.conf_floor = conf_floor
        self.iou = iou
        self.half = half
        self.tracking = tracking
        self.tracker = tracker

    def _kwargs(self) -> dict[str, Any]:
        return dict(
            imgsz=self.imgsz, device=self.device, conf=self.conf_floor, iou=self.iou, verbose=False, save=False,
            **({"quantize": 16} if self.half else {}),  # Ultralytics 8.4 spells half precision this way
        )

    def __call__(self, image: np.ndarray) -> Detections:
        if self.tracking:
            results = self.model.track(image, persist=True, tracker=self.tracker, **self._kwargs())
            detections = from_ultralytics(results[0])
            if detections.tracker_id is None:
                # Ultralytics hides tracks until they are confirmed; say so explicitly (no ids yet).
                detections.tracker_id = np.full(len(detections), -1, dtype=np.int64)
            return detections
        results = self.model.predict(image, **self._kwargs())
        return from_ultralytics(results[0])


class TiledDetector:
    """Sliced inference for small defects on large frames (SAHI / supervision ``InferenceSlicer``).

    Runs ``detector`` on overlapping tiles of ``tile_wh`` pixels, shifts each tile's boxes back to
    frame coordinates and merges the duplicates from the overlaps (see :func:`merge_tiles`). A frame
    no larger than a tile is passed through in one call.
    """

    def __init__(self, detector: Detector, tile_wh: tuple[int, int] = (640, 640), *, overlap: float = 0.2,
                 match_threshold: float = 0.5):
        if min(tile_wh) < 32:
            raise UsageError(f"tile size must be at least 32 px, got {tile_wh}")
        if not 0.0 <= overlap < 1.0:
            raise UsageError(f"tile overlap is a fraction of the tile in [0, 1), got {overlap}")
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


def tile_origins(size_wh: tuple[int, int], tile_wh: tuple[int, int], overlap: float) -> list[tuple[int, int]]:
    """Top-left corners of tiles covering the image; the last row/column is flush with the edge."""

    def starts(extent: int, tile: int) -> list[int]:
        if extent <= tile:
            return [0]
        step = max(1, int(tile * (1.0 - overlap)))
        values = list(range(0, extent - tile, step))
        values.append(extent - tile)
        return values

    return [(x, y) for y in starts(size_wh[1], tile_wh[1]) for x in starts(size_wh[0], tile_wh[0])]


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
