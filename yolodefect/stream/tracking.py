"""Track ids for detections of any detector, with Ultralytics' own ByteTrack / BoT-SORT.

Ultralytics runs its trackers inside ``model.track``; here the same tracker classes are fed our
:class:`Detections`, so tracking also works for tiled inference, ONNX runtimes and test fakes.

Small defects on a fast conveyor move further between frames than their own size, and ByteTrack
associates by IoU (a new track must overlap its next detection by IoU >= 0.3 before its motion is
known). Boxes smaller than ``min_box_px`` are therefore grown around their centre *for association
only*; the boxes handed on are always the detector's own. When a live camera outpaces the station,
the frames it dropped multiply the distance moved between two updates, so the growth is scaled by
the camera frames elapsed (up to :data:`MAX_GROWTH_FRAMES`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from yolodefect.detections import Detections
from yolodefect.errors import UsageError

logger = logging.getLogger(__name__)

UNTRACKED = -1  # tracker_id of a detection not (yet) part of a confirmed track
# Beyond a few dropped frames the motion is anyone's guess; larger boxes would only pair up strangers.
MAX_GROWTH_FRAMES = 4


class _BoxesView:
    """The slice of Ultralytics ``Boxes`` the trackers read: conf, cls, xywh, xyxy, len, boolean indexing."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray):
        self.xyxy = xyxy
        self.conf = conf
        self.cls = cls

    @property
    def xywh(self) -> np.ndarray:
        wh = self.xyxy[:, 2:4] - self.xyxy[:, 0:2]
        return np.concatenate([self.xyxy[:, 0:2] + wh / 2.0, wh], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index: Any) -> _BoxesView:
        return _BoxesView(self.xyxy[index], self.conf[index], self.cls[index])


def grow_boxes(xyxy: np.ndarray, min_side: float) -> np.ndarray:
    """Boxes with each side at least ``min_side``, same centre."""
    if min_side <= 0 or len(xyxy) == 0:
        return xyxy
    centre = (xyxy[:, 0:2] + xyxy[:, 2:4]) / 2.0
    half = np.maximum(xyxy[:, 2:4] - xyxy[:, 0:2], min_side) / 2.0
    return np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)


class DefectTracker:
    """``update(detections, image) -> detections`` with ``tracker_id`` set (:data:`UNTRACKED` where none).

    ``config`` is an Ultralytics tracker YAML (``bytetrack.yaml``, ``botsort.yaml`` or a path to
    your own); every detection comes back, in its original order.
    """

    def __init__(self, config: str = "bytetrack.yaml", *, min_box_px: float = 32.0, reject_conf: float | None = None):
        from ultralytics.trackers.track import TRACKER_MAP
        from ultralytics.utils import YAML, IterableSimpleNamespace
        from ultralytics.utils.checks import check_yaml

        try:
            cfg = IterableSimpleNamespace(**YAML.load(check_yaml(config)))
        except (FileNotFoundError, OSError) as exc:
            raise UsageError(f"tracker config {config!r} not found ({exc}); use bytetrack.yaml, botsort.yaml or a YAML path") from exc
        if cfg.tracker_type not in ("bytetrack", "botsort"):
            raise UsageError(f"tracker {cfg.tracker_type!r} is not supported here; use bytetrack or botsort")
        if getattr(cfg, "with_reid", False):
            # ReID needs Ultralytics' predictor internals or a downloaded model; neither fits a station.
            raise UsageError(f"tracker config {config!r} enables with_reid; set with_reid: False")
        if reject_conf is not None and reject_conf < min(cfg.track_high_thresh, cfg.new_track_thresh):
            # A defect that passes its reject threshold must be able to start a track, or the part
            # escapes silently: ByteTrack ignores detections under new_track_thresh (0.25 by default).
            logger.info("tracker thresholds lowered to the lowest reject threshold %.3f (were high %.2f, new %.2f); "
                        "score fusion off",
                        reject_conf, cfg.track_high_thresh, cfg.new_track_thresh)
            cfg.track_high_thresh = cfg.new_track_thresh = float(reject_conf)
            cfg.track_low_thresh = min(float(cfg.track_low_thresh), float(reject_conf) / 2)
            # fuse_score multiplies IoU by the score: at 0.15 no match would ever pass match_thresh.
            cfg.fuse_score = False
        self._tracker = TRACKER_MAP[cfg.tracker_type](args=cfg)
        self.min_box_px = min_box_px
        # BoT-SORT's global motion compensation (GMC) keeps the previous frame: it must see every one.
        gmc = getattr(self._tracker, "gmc", None)
        self._idle_frames_skippable = gmc is None or gmc.method is None
        self._last_frame_index: int | None = None

    def update(self, detections: Detections, image: np.ndarray | None = None,
               frame_index: int | None = None) -> Detections:
        """``frame_index``: the source's frame number. A live source numbers every camera frame, dropped
        ones included, so a gap since the previous update means the parts moved further."""
        n = len(detections)
        growth = 1
        if frame_index is not None:
            if self._last_frame_index is not None and frame_index > self._last_frame_index:
                growth = min(frame_index - self._last_frame_index, MAX_GROWTH_FRAMES)
            self._last_frame_index = frame_index
        ids = np.full(n, UNTRACKED, dtype=np.int64)
        if n == 0 and self._is_idle():
            self._advance_idle_frame()
        else:
            view = _BoxesView(grow_boxes(detections.xyxy, self.min_box_px * growth), detections.confidence,
                              detections.class_id.astype(np.float32))
            tracks = self._tracker.update(view, image)
            if len(tracks):
                # Rows are [x1, y1, x2, y2, track_id, score, cls, det_index].
                ids[tracks[:, 7].astype(np.int64)] = tracks[:, 4].astype(np.int64)
        return Detections(detections.xyxy, detections.confidence, detections.class_id, tracker_id=ids)

    def _is_idle(self) -> bool:
        """No track alive, and no camera-motion model that must see every frame."""
        return self._idle_frames_skippable and not self._tracker.tracked_stracks and not self._tracker.lost_stracks

    def _advance_idle_frame(self) -> None:
        # Most frames on a line show good parts: nothing detected, nothing tracked. Ultralytics'
        # update would then only count the frame, yet costs ~0.45 ms of pool bookkeeping, the
        # station's largest cost outside the model; this leaves the tracker in the state update would.
        self._tracker.frame_id += 1
        self._tracker.removed_stracks_frame = []

    def reset(self) -> None:
        self._tracker.reset()
        self._last_frame_index = None
