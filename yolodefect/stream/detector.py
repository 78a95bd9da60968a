"""The model stage: any callable image -> Detections, and the Ultralytics implementation of it.

The watch loop takes a :data:`Detector` as an argument (supervision's ``InferenceSlicer`` callback
shape), so its tests run on a fake and production runs on :class:`UltralyticsDetector`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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

    def predict_many(self, images: list[np.ndarray]) -> list[Detections]:
        """Several frames of one size as one batch (see :class:`SharedDetector`)."""
        if self.tracking or len(images) == 1:
            return [self(image) for image in images]
        return self.runner.predict_frames(images)


@dataclass
class _Request:
    image: np.ndarray
    done: bool = False
    result: Detections | None = None
    error: BaseException | None = None


class SharedDetector:
    """One model shared by several cameras, each calling it from its own thread.

    The model runs one call at a time (a PyTorch/ONNX model object is not safe to run from two threads at
    once, and on a CPU two calls would only compete for the same cores). Frames that arrive while it is busy
    wait, and when it frees the frames of one size go in together as one batch, where the detector can
    (``predict_many``; measured on 2 CPU cores, bench/serve.py: a batch of 2 takes about 85 % of two calls).
    With ``batch_wait_ms`` the caller that runs the model first waits up to that long for the frames of the
    other cameras calling it (those that called in the last second); a camera alone never waits.
    """

    def __init__(self, detector: Detector, max_batch: int = 8, batch_wait_ms: float = 0.0):
        self.detector = detector
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_ms / 1000.0
        self._batching = callable(getattr(detector, "predict_many", None))
        self._last_call: dict[int, float] = {}  # caller thread -> when it last called (the cameras running now)
        self._changed = threading.Condition()
        self._pending: list[_Request] = []
        self._busy = False
        self.batches: dict[int, int] = {}  # batch size -> count (the benchmark reports it)
        for attribute in ("class_names", "model_info", "card"):
            if hasattr(detector, attribute):
                setattr(self, attribute, getattr(detector, attribute))

    def __call__(self, image: np.ndarray) -> Detections:
        request = _Request(image)
        with self._changed:
            now = time.monotonic()
            self._last_call[threading.get_ident()] = now
            self._pending.append(request)
            self._changed.notify_all()  # a leader waiting for the other cameras' frames
        while True:
            with self._changed:
                self._changed.wait_for(lambda: request.done or not self._busy)
                if request.done:
                    break
                self._busy = True  # this caller runs the model for everyone waiting
                if self._batching and self.batch_wait_s > 0:
                    # The other cameras' frames are usually moments away: waiting a few ms for them makes one
                    # forward pass of what would be several (measured: a batch of 2 costs ~85 % of 2 calls).
                    running = sum(1 for t in self._last_call.values() if now - t < 1.0)
                    self._changed.wait_for(lambda: self._same_size_waiting() >= min(running, self.max_batch),
                                           timeout=self.batch_wait_s)
                batch = self._take()
            self._run(batch)
        if request.error is not None:
            raise request.error
        return request.result  # type: ignore[return-value]

    def _same_size_waiting(self) -> int:
        first = self._pending[0].image.shape
        return sum(1 for r in self._pending if r.image.shape == first)

    def _take(self) -> list[_Request]:
        """The oldest waiting frame and, where the detector batches, the others of its size."""
        first = self._pending[0]
        if not self._batching:
            batch = [first]
        else:
            batch = [r for r in self._pending if r.image.shape == first.image.shape][:self.max_batch]
        taken = {id(r) for r in batch}
        self._pending = [r for r in self._pending if id(r) not in taken]
        return batch

    def _run(self, batch: list[_Request]) -> None:
        try:
            if len(batch) == 1:
                results = [self.detector(batch[0].image)]
            else:
                results = self.detector.predict_many([r.image for r in batch])  # type: ignore[attr-defined]
            for request, result in zip(batch, results):
                request.result = result
        except BaseException as exc:  # every caller in the batch gets the error, as a lone call would
            for request in batch:
                request.error = exc
        finally:
            with self._changed:
                for request in batch:
                    request.done = True
                self.batches[len(batch)] = self.batches.get(len(batch), 0) + 1
                self._busy = False
                self._changed.notify_all()


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
