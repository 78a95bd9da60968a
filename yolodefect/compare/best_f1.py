"""The one global confidence threshold at which a model's mean F1 is highest.

Each model is compared at its own best operating point, so neither is judged at a threshold that
only suits the other. F1 is counted exactly as ``evaluate_detections`` counts it (class-aware
greedy matching at IoU 0.5, ``confidence >= threshold`` in float32, mean over classes with
ground truth), from one matching of all detections: greedy matching in descending confidence
means the matches above any threshold are a prefix of the full matching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from yolodefect.detections import Detections
from yolodefect.evaluation.ground_truth import GroundTruth
from yolodefect.evaluation.matching import MATCH_IOU, match_image

THRESHOLD_GRID = np.round(np.arange(1, 1000) / 1000, 3)  # 0.001 ... 0.999
FALLBACK_THRESHOLD = 0.25


@dataclass(frozen=True)
class BestF1:
    """The chosen threshold, the mean F1 there, and the whole curve (for plots and checks)."""

    threshold: float
    f1: float | None  # None when the split has no ground-truth box
    thresholds: np.ndarray
    mean_f1: np.ndarray  # (len(thresholds),) NaN when it cannot be measured
    note: str | None = None  # set when no threshold finds anything and a default was used

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "f1": self.f1, "note": self.note}


def mean_f1_curve(
    ground_truth: Sequence[GroundTruth],
    predictions: Sequence[Detections],
    class_count: int,
    thresholds: np.ndarray = THRESHOLD_GRID,
) -> np.ndarray:
    """Mean over classes with ground truth of F1 = 2TP / (detections + ground truth), per threshold."""
    confidence, class_id, true_positive = [], [], []
    instances = np.zeros(class_count, dtype=np.int64)
    for truth, detections in zip(ground_truth, predictions):
        instances += np.bincount(truth.class_id, minlength=class_count)
        if not len(detections):
            continue
        match = match_image(truth.xyxy, truth.class_id, detections.xyxy, detections.confidence,
                            detections.class_id, MATCH_IOU)
        confidence.append(detections.confidence.astype(np.float32))
        class_id.append(detections.class_id)
        true_positive.append(match.same_class)
    grid = np.asarray(thresholds, dtype=np.float32)
    if not (instances > 0).any():
        return np.full(len(grid), np.nan)
    all_conf = np.concatenate(confidence) if confidence else np.zeros(0, np.float32)
    all_class = np.concatenate(class_id) if class_id else np.zeros(0, np.int64)
    all_tp = np.concatenate(true_positive) if true_positive else np.zeros(0, bool)
    f1 = []
    for k in np.flatnonzero(instances > 0):
        conf_k = np.sort(all_conf[all_class == k])
        tp_conf_k = np.sort(all_conf[(all_class == k) & all_tp])
        passing = len(conf_k) - np.searchsorted(conf_k, grid, side="left")  # confidence >= threshold
        tp = len(tp_conf_k) - np.searchsorted(tp_conf_k, grid, side="left")
        f1.append(2 * tp / (passing + instances[k]))
    return np.mean(f1, axis=0)


def best_f1_threshold(
    ground_truth: Sequence[GroundTruth],
    predictions: Sequence[Detections],
    class_names: Sequence[str],
    thresholds: np.ndarray = THRESHOLD_GRID,
) -> BestF1:
    """The threshold of highest mean F1 (the lowest one on a tie: fewer escapes at the same F1)."""
    curve = mean_f1_curve(ground_truth, predictions, len(class_names), thresholds)
    if np.all(np.isnan(curve)):
        return BestF1(FALLBACK_THRESHOLD, None, np.asarray(thresholds), curve,
                      f"no ground-truth boxes: rates at the default threshold {FALLBACK_THRESHOLD}")
    best = int(np.nanargmax(curve))
    if curve[best] <= 0:
        return BestF1(FALLBACK_THRESHOLD, 0.0, np.asarray(thresholds), curve,
                      f"no true positive at any threshold: rates at the default threshold {FALLBACK_THRESHOLD}")
    return BestF1(float(thresholds[best]), float(curve[best]), np.asarray(thresholds), curve)
