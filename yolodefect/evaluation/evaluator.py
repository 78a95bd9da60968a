"""``evaluate_detections``: every accuracy number of yolodefect, from ground truth and predictions.

Models are compared only through this function, so a .pt, an INT8 ONNX and an SSD are measured
by the same code on the same matching rules.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.evaluation.average_precision import AveragePrecision, average_precision
from yolodefect.evaluation.decisions import decision_metrics
from yolodefect.evaluation.ground_truth import GroundTruth
from yolodefect.evaluation.matching import MATCH_IOU, image_confusion, match_image
from yolodefect.evaluation.metrics import ClassMetrics, EvalMetrics, PrecisionRecallCurve
from yolodefect.inference.rules import RejectRules

logger = logging.getLogger(__name__)


def _check_inputs(
    ground_truth: Sequence[GroundTruth], predictions: Sequence[Detections], class_names: Sequence[str]
) -> None:
    if len(ground_truth) != len(predictions):
        raise UsageError(
            f"{len(predictions)} predictions for {len(ground_truth)} images: the predictor must return one "
            "Detections per image, in the order of the images it was given"
        )
    if not ground_truth:
        raise UsageError("nothing to evaluate: the split has no images")
    class_count = len(class_names)
    for truth, detections in zip(ground_truth, predictions):
        if len(detections) and (detections.class_id.min() < 0 or detections.class_id.max() >= class_count):
            raise UsageError(
                f"{truth.image_path}: a prediction has class id {int(detections.class_id.max())}, but the "
                f"dataset has {class_count} classes ({', '.join(class_names)}); does the model fit this dataset?"
            )


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _mean(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return float(np.mean(present)) if present else None


def _pr_curve(ap: AveragePrecision, class_names: Sequence[str]) -> PrecisionRecallCurve:
    precision = ap.precision_at_50
    with np.errstate(all="ignore"):
        valid = ~np.isnan(precision)
        mean = np.where(valid.any(axis=0), np.nansum(precision, axis=0) / np.maximum(valid.sum(axis=0), 1), np.nan)
    as_list = lambda row: [None if np.isnan(v) else float(v) for v in row]  # noqa: E731
    return PrecisionRecallCurve(
        recall=ap.recall_grid.tolist(),
        precision={name: as_list(precision[k]) for k, name in enumerate(class_names)},
        mean_precision=as_list(mean),
    )


def evaluate_detections(
    ground_truth: Sequence[GroundTruth],
    predictions: Sequence[Detections],
    class_names: Sequence[str],
    *,
    conf_thresholds: Mapping[str, float] | float = 0.25,
    reject_classes: set[str] | Sequence[str] | None = None,
    rules: RejectRules | None = None,
    ap_predictions: Sequence[Detections] | None = None,
) -> EvalMetrics:
    """Evaluate predictions (made at a low confidence, e.g. 0.001) against ground truth.

    AP uses every prediction, scored as Ultralytics' validator scores them (mAP50 and mAP50-95 agree with
    ``yolo val`` on the same predictions; COCO's figures are kept as ``coco_map50``/``coco_map50_95``).
    ``ap_predictions`` (one per image) are scored for AP instead of ``predictions`` when the model's AP
    is measured on other predictions than its operating point (Ultralytics' validator's). Precision/recall/F1, the confusion matrix and the part decisions use
    only the detections reaching ``conf_thresholds`` (one value, or one per class name).
    ``reject_classes`` are the classes that make a part a reject (None: all of them).
    ``rules`` (the station's reject rules, min box area and ROI included) replaces both: then only
    the detections the station could count make P/R/F1, the confusion matrix and the decisions.
    """
    class_names = list(class_names)
    _check_inputs(ground_truth, predictions, class_names)
    if rules is None:
        rules = RejectRules.per_class(class_names, conf_thresholds, reject_classes)
    rules.check_classes(class_names, owner="dataset")
    class_count = len(class_names)

    if ap_predictions is not None:
        _check_inputs(ground_truth, ap_predictions, class_names)
    ap = average_precision(ground_truth, predictions if ap_predictions is None else ap_predictions, class_names)

    confusion = np.zeros((class_count + 1, class_count + 1), dtype=np.int64)
    true_positives = np.zeros(class_count, dtype=np.int64)
    detections_passing = np.zeros(class_count, dtype=np.int64)
    instances = np.zeros(class_count, dtype=np.int64)
    images_with = np.zeros(class_count, dtype=np.int64)
    for truth, detections in zip(ground_truth, predictions):
        kept = detections.filter(rules.confident_mask(detections, class_names))
        match = match_image(truth.xyxy, truth.class_id, kept.xyxy, kept.confidence, kept.class_id, MATCH_IOU)
        confusion += image_confusion(match, truth.class_id, kept.class_id, class_count)
        true_positives += np.bincount(kept.class_id[match.same_class], minlength=class_count)
        detections_passing += np.bincount(kept.class_id, minlength=class_count)
        instances += np.bincount(truth.class_id, minlength=class_count)
        images_with[np.unique(truth.class_id)] += 1

    per_class = []
    for k, name in enumerate(class_names):
        tp, n_det, n_gt = int(true_positives[k]), int(detections_passing[k]), int(instances[k])
        fp, fn = n_det - tp, n_gt - tp
        per_class.append(
            ClassMetrics(
                name=name,
                instances=n_gt,
                images=int(images_with[k]),
                ap50=ap.ap50[k],
                ap50_95=ap.ap50_95[k],
                precision=_ratio(tp, n_det),
                recall=_ratio(tp, n_gt),
                # 2TP / (2TP + FP + FN) is F1 and stays defined when precision is not (no detections).
                f1=_ratio(2 * tp, 2 * tp + fp + fn),
                threshold=rules.threshold(name),
                true_positives=tp,
                false_positives=fp,
                false_negatives=fn,
            )
        )

    decisions = decision_metrics(ground_truth, predictions, class_names, rules)
    with_truth = [m for m in per_class if m.instances > 0]
    notes = list(decisions.notes)
    if not with_truth:
        notes.append("no ground-truth boxes in this split: AP, precision and recall cannot be measured")
    return EvalMetrics(
        implementation=ap.implementation,
        class_names=class_names,
        images=len(ground_truth),
        instances=int(instances.sum()),
        map50=ap.map50,
        map50_95=ap.map50_95,
        coco_map50=ap.coco_map50,
        coco_map50_95=ap.coco_map50_95,
        # A class the model never reports counts as precision 0 here, or missing it would raise the mean.
        precision=_mean([m.precision or 0.0 for m in with_truth]),
        recall=_mean([m.recall for m in with_truth]),
        f1=_mean([m.f1 for m in with_truth]),
        per_class=per_class,
        match_iou=MATCH_IOU,
        confusion_labels=[*class_names, "background"],
        confusion_matrix=confusion.tolist(),
        decisions=decisions,
        pr_curve=_pr_curve(ap, class_names),
        notes=notes,
    )
