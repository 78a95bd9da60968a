"""mAP50 and mAP50-95 as Ultralytics' validator computes them, on any model's predictions.

Users read Ultralytics' numbers everywhere (training logs, results.csv, ``yolo val``, papers), so the
headline AP is Ultralytics' own ``ap_per_class`` (101-point interpolation of the precision envelope,
mean over the classes with ground truth) fed with our matching, which is the validator's rule. COCO's
figure (pycocotools' step interpolation, by faster-coco-eval) is kept beside it, labelled, for
comparison with COCO-style publications.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from yolodefect.detections import Detections
from yolodefect.evaluation.coco_metrics import coco_average_precision
from yolodefect.evaluation.ground_truth import GroundTruth
from yolodefect.evaluation.matching import box_iou, greedy_match_at

logger = logging.getLogger(__name__)

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # AP50-95: the mean over these ten IoU thresholds
RECALL_GRID = np.linspace(0.0, 1.0, 101)  # where the precision-recall curve is reported


@dataclass(frozen=True)
class AveragePrecision:
    """AP over a split. Per-class values are None for classes with no ground-truth box (as is the mean without any)."""

    implementation: str
    map50: float | None
    map50_95: float | None
    ap50: list[float | None]
    ap50_95: list[float | None]
    recall_grid: np.ndarray  # (101,)
    precision_at_50: np.ndarray  # (classes, 101) precision envelope at IoU 0.5, NaN without ground truth
    coco_map50: float | None  # the same predictions scored by COCO's rules
    coco_map50_95: float | None


def implementation_name() -> str:
    import faster_coco_eval
    import ultralytics

    return f"ultralytics {ultralytics.__version__} (validator's AP), faster-coco-eval {faster_coco_eval.__version__} (COCO's)"


def true_positives(truth: GroundTruth, detections: Detections) -> np.ndarray:
    """(detections, 10) whether each detection is a true positive at each IoU threshold 0.5:0.95."""
    if len(truth) == 0 or len(detections) == 0:
        return np.zeros((len(detections), len(IOU_THRESHOLDS)), dtype=bool)
    iou = box_iou(detections.xyxy, truth.xyxy)
    same_class = np.where(detections.class_id[:, None] == truth.class_id[None, :], iou, 0.0)
    return greedy_match_at(same_class, detections.confidence, IOU_THRESHOLDS) >= 0


def average_precision(
    ground_truth: Sequence[GroundTruth], predictions: Sequence[Detections], class_names: Sequence[str]
) -> AveragePrecision:
    """Per-class AP50 / AP50-95 and their means over the classes with ground truth, Ultralytics' way."""
    from ultralytics.utils.metrics import ap_per_class

    class_count = len(class_names)
    tp = np.concatenate([true_positives(t, d) for t, d in zip(ground_truth, predictions)]
                        + [np.zeros((0, len(IOU_THRESHOLDS)), dtype=bool)])
    confidence = np.concatenate([d.confidence.astype(np.float64) for d in predictions] + [np.zeros(0)])
    predicted = np.concatenate([d.class_id.astype(np.float64) for d in predictions] + [np.zeros(0)])
    target = np.concatenate([t.class_id.astype(np.float64) for t in ground_truth] + [np.zeros(0)])

    ap50: list[float | None] = [None] * class_count
    ap50_95: list[float | None] = [None] * class_count
    curves = np.full((class_count, len(RECALL_GRID)), np.nan)
    if len(target):
        *_, ap, classes, _p, _r, _f1, recall_x, precision_y = ap_per_class(tp, confidence, predicted, target)
        for row, k in enumerate(classes.astype(int)):
            ap50[k], ap50_95[k] = float(ap[row, 0]), float(ap[row].mean())
            curves[k] = np.interp(RECALL_GRID, recall_x, precision_y[row])
    present = [k for k in range(class_count) if ap50[k] is not None]
    coco_map50, coco_map50_95 = coco_average_precision(list(ground_truth), list(predictions), list(class_names))
    return AveragePrecision(
        implementation=implementation_name(),
        map50=float(np.mean([ap50[k] for k in present])) if present else None,
        map50_95=float(np.mean([ap50_95[k] for k in present])) if present else None,
        ap50=ap50,
        ap50_95=ap50_95,
        recall_grid=RECALL_GRID.copy(),
        precision_at_50=curves,
        coco_map50=coco_map50,
        coco_map50_95=coco_map50_95,
    )
