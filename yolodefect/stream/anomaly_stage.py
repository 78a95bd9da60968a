"""The anomaly model beside the detector at the station (``watch --anomaly MODEL``).

The detector finds the defects it was trained on; the anomaly model (PatchCore, trained on good
parts only: :mod:`yolodefect.anomaly`) finds what makes a part unlike every good part, including
defects nobody labelled. The stage turns its verdict into detections of one extra class,
``anomaly`` (class id one past the detector's last), so that the station's one decision path
judges both: the per-class per-frame maxima, the k-of-n rule, the decision line, one event per
part, evidence. A part is rejected when the detector rejects it OR its anomaly confidence reaches
the ``anomaly`` threshold on k of its frames.

What is scored:

* on a line, each part box the part finder gives, only when the box lies fully inside the frame
  (a part cut by the frame edge looks unlike any good part; it is scored on later frames), with
  :data:`INSET_FRACTION` of the box trimmed on every side so belt pixels around the part are not
  scored;
* in image mode (one frame, one part), the whole frame.

Each scored part gives one detection: confidence ``model.confidence(score)`` (0.5 is the highest
score of the held-out good images at training), box the most anomalous region in frame pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.inference.identity import file_sha256
from yolodefect.inference.rules import RejectRules
from yolodefect.inference.thresholds_file import Thresholds, read_thresholds_yaml
from yolodefect.stream.events import ModelIdentity
from yolodefect.stream.options import WatchOptions

if TYPE_CHECKING:  # the anomaly package pulls in torch: imported when a stage is opened, not with the station
    from yolodefect.anomaly import AnomalyModel

logger = logging.getLogger(__name__)

# Trimmed from each side of a part box before scoring: the belt finder's boxes follow the part's outline to
# a few pixels (working scale), and belt pixels inside the crop would be anomalies of every part.
INSET_FRACTION = 0.04
HEATMAP_ALPHA = 0.45
# The heatmap's colour scale: 0 is blue, this multiple of the threshold score and above is red, so one
# colour means one score in every evidence picture of the run.
HEATMAP_FULL_SCALE = 1.5


class NoDetector:
    """The detector of a line without one (``--anomaly-only``): finds nothing, has no classes."""

    card = None

    def __init__(self) -> None:
        self.class_names: dict[int, str] = {}

    def __call__(self, image: np.ndarray) -> Detections:
        return Detections.empty()


@dataclass(frozen=True)
class AnomalyStage:
    """Scores parts with ``model``; its detections carry ``class_id`` (set by :meth:`for_classes`) and are named
    ``class_name``. ``threshold_confidence`` is the station's ``anomaly`` reject threshold, ``threshold_score``
    the same in raw score units (the heatmap's scale)."""

    model: AnomalyModel
    identity: ModelIdentity
    class_name: str
    threshold_confidence: float
    threshold_score: float
    class_id: int = -1
    inset: float = INSET_FRACTION

    def for_classes(self, class_names: Mapping[int, str]) -> AnomalyStage:
        """The stage beside a detector with ``class_names``: its class id is one past the detector's last."""
        if self.class_name in class_names.values():
            raise UsageError(f"the detector already has a class named {self.class_name!r}; the anomaly model's "
                             "rejects carry that class name, so the two could not be told apart: rename the "
                             "detector's class")
        return replace(self, class_id=max(class_names) + 1 if class_names else 0)

    def crop_box(self, part_box: np.ndarray | None, frame_wh: tuple[int, int],
                 motion_axis: int | None = None) -> tuple[int, int, int, int] | None:
        """The pixels scored for a part: the inset box, or the whole frame for ``None``. None when the part is cut
        by the frame (it is entering or leaving: its box touches one of the two frame edges along the way parts
        move, ``motion_axis`` 0 for x, 1 for y, either axis while it is not known) or the inset box is empty.
        A box touching both edges of an axis is a part that fills the view that way, on every frame: scored."""
        width, height = frame_wh
        if part_box is None:
            return 0, 0, width, height
        x1, y1, x2, y2 = (float(v) for v in part_box)
        for axis in ((0, 1) if motion_axis is None else (motion_axis,)):
            low, high = (x1 <= 0, x2 >= width) if axis == 0 else (y1 <= 0, y2 >= height)
            if low != high:
                return None
        dx, dy = (x2 - x1) * self.inset, (y2 - y1) * self.inset
        box = (int(np.ceil(x1 + dx)), int(np.ceil(y1 + dy)), int(np.floor(x2 - dx)), int(np.floor(y2 - dy)))
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            return None
        return box

    def detect(self, image: np.ndarray, part_boxes: np.ndarray | None, motion_axis: int | None = None) -> Detections:
        """One ``anomaly`` detection per part scored (``part_boxes`` (N, 4) frame px, or None: the whole frame;
        ``motion_axis`` as for :meth:`crop_box`)."""
        height, width = image.shape[:2]
        boxes = [None] if part_boxes is None else list(part_boxes)
        crops = [c for c in (self.crop_box(box, (width, height), motion_axis) for box in boxes) if c is not None]
        if not crops:
            return Detections.empty()
        results = self.model.score([image[y1:y2, x1:x2] for x1, y1, x2, y2 in crops])
        xyxy = np.array([np.asarray(r.peak_xyxy, dtype=np.float32) + np.array([x1, y1, x1, y1], dtype=np.float32)
                         for r, (x1, y1, _, _) in zip(results, crops)], dtype=np.float32).reshape(-1, 4)
        return Detections(xyxy=xyxy, confidence=np.array([r.confidence for r in results], dtype=np.float32),
                          class_id=np.full(len(results), self.class_id, dtype=np.int64))

    def score_of(self, confidence: float) -> float:
        """The raw score behind an ``anomaly`` detection's confidence (the event's ``anomaly_score``)."""
        # A float32 confidence can round up to 1 only for scores 10^7 times the reference; keep it invertible.
        return float(self.model.score_for_confidence(min(float(confidence), float(np.nextafter(1.0, 0.0)))))

    def shows(self, detections: Detections) -> bool:
        """Whether any of ``detections`` came from this stage."""
        return bool(np.any(detections.class_id == self.class_id))

    def heatmap(self, image: np.ndarray, part_box: np.ndarray | None, motion_axis: int | None = None) -> np.ndarray:
        """A copy of ``image`` with the anomaly map of the part (the whole frame for None) blended over the pixels
        that were scored; a part cut by the frame edge is blended over its visible pixels."""
        height, width = image.shape[:2]
        crop = self.crop_box(part_box, (width, height), motion_axis)
        if crop is None and part_box is not None:  # decided after it reached the edge: show what is in view
            x1, y1, x2, y2 = (int(round(float(v))) for v in part_box)
            crop = (max(0, x1), max(0, y1), min(width, x2), min(height, y2))
        out = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if crop is None or crop[2] - crop[0] < 2 or crop[3] - crop[1] < 2:
            return out
        x1, y1, x2, y2 = crop
        result = self.model.score([image[y1:y2, x1:x2]])[0]
        from yolodefect.anomaly import heat_levels

        level = heat_levels(result.anomaly_map, result.baseline, self.threshold_score, HEATMAP_FULL_SCALE)
        level = cv2.resize(level, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
        colour = cv2.applyColorMap(np.round(level * 255.0).astype(np.uint8), cv2.COLORMAP_JET)
        region = out[y1:y2, x1:x2]
        out[y1:y2, x1:x2] = cv2.addWeighted(region, 1.0 - HEATMAP_ALPHA, colour, HEATMAP_ALPHA, 0.0)
        return out


def appended(detections: Detections, found: Detections) -> Detections:
    """The detector's ``detections`` followed by the stage's ``found`` (which have no tracker ids: -1)."""
    if len(found) == 0:
        return detections
    tracker = None
    if detections.tracker_id is not None:
        tracker = np.concatenate([detections.tracker_id, np.full(len(found), -1, dtype=np.int64)])
    return Detections(np.concatenate([detections.xyxy, found.xyxy]),
                      np.concatenate([detections.confidence, found.confidence]),
                      np.concatenate([detections.class_id, found.class_id]), tracker_id=tracker)


def anomaly_threshold(options: WatchOptions, thresholds: Thresholds | None, model: AnomalyModel) -> float:
    """The ``anomaly`` class's confidence threshold: ``class_conf``'s anomaly entry, else the anomaly thresholds
    file's (``yolodefect eval ANOMALY_MODEL DATA --target-recall``), else the main thresholds file's, else the
    model's own (its reference: the highest score of its held-out good images)."""
    from yolodefect.anomaly import ANOMALY_CLASS

    if ANOMALY_CLASS in options.class_conf:
        return float(options.class_conf[ANOMALY_CLASS])
    if options.anomaly_thresholds is not None:
        own = read_thresholds_yaml(options.anomaly_thresholds)
        if ANOMALY_CLASS not in own.conf:
            raise UsageError(f"the anomaly thresholds file {options.anomaly_thresholds} has no {ANOMALY_CLASS!r} "
                             f"threshold (its classes: {', '.join(own.conf) or 'none'}); write it with "
                             "'yolodefect eval ANOMALY_MODEL DATA --target-recall R'")
        return float(own.conf[ANOMALY_CLASS])
    if thresholds is not None and ANOMALY_CLASS in thresholds.conf:
        return float(thresholds.conf[ANOMALY_CLASS])
    return float(model.threshold_confidence)


def with_anomaly_rule(rules: RejectRules, stage: AnomalyStage) -> RejectRules:
    """``rules`` where the ``anomaly`` class rejects at the stage's threshold (also when the reject classes are
    limited: running the anomaly model means its rejects count)."""
    reject = None if rules.reject_classes is None else rules.reject_classes | {stage.class_name}
    return replace(rules, reject_classes=reject,
                   conf_thresholds={**rules.conf_thresholds, stage.class_name: stage.threshold_confidence})


def open_anomaly_stage(options: WatchOptions, thresholds: Thresholds | None) -> AnomalyStage:
    """Load ``options.anomaly`` (errors name the file) at the run's ``anomaly`` threshold; ``thresholds`` is the
    run's main thresholds file, read. Call :meth:`AnomalyStage.for_classes` once the detector's classes are known."""
    from yolodefect.anomaly import ANOMALY_CLASS, load_anomaly_model

    path = options.anomaly
    if path is None:
        raise UsageError("no anomaly model: give --anomaly MODEL")
    model = load_anomaly_model(path)  # a missing or foreign file: an error naming it
    threshold = anomaly_threshold(options, thresholds, model)
    score = float(model.score_for_confidence(threshold)) if threshold < 1.0 else float("inf")
    stage = AnomalyStage(model=model, identity=ModelIdentity(name=path.name, sha256=file_sha256(path), precision="fp32"),
                         class_name=ANOMALY_CLASS, threshold_confidence=threshold, threshold_score=score)
    logger.info("anomaly model %s (imgsz %d): a part is also rejected when its anomaly confidence reaches %.3f "
                "(raw score %.4g)", path, model.imgsz, threshold, score)
    return stage
