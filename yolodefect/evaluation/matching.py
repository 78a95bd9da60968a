"""Greedy one-to-one matching of detections to ground truth, and the confusion matrix built on it.

The rule is COCO's and Ultralytics' validator's: detections in descending confidence claim the
unclaimed ground-truth box with the highest IoU, if that IoU is at least the threshold. Per-class
precision/recall and the confusion-matrix diagonal come from the same matching, so their counts
always agree; AP uses it at each of the ten IoU thresholds 0.5:0.95.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from yolodefect.detections import box_iou

__all__ = ["MATCH_IOU", "ImageMatch", "box_iou", "greedy_match", "greedy_match_at", "image_confusion", "match_image"]

MATCH_IOU = 0.5


def greedy_match_at(iou: np.ndarray, confidence: np.ndarray, iou_thresholds: Sequence[float]) -> np.ndarray:
    """(detections, thresholds): the ground-truth index each detection (rows of ``iou``) claims at each IoU
    threshold, or -1.

    Detections in descending confidence claim the unclaimed box with the highest IoU if it reaches the
    threshold, independently at each threshold. This is both COCO's rule and Ultralytics' validator's
    (``match_predictions``), so AP50-95 counts the same true positives as theirs. Ties in confidence keep
    input order (stable sort), so the result is deterministic.
    """
    thresholds = np.atleast_1d(np.asarray(iou_thresholds, dtype=np.float64))
    n_det, n_gt = iou.shape
    matched_gt = np.full((n_det, len(thresholds)), -1, dtype=np.int64)
    if n_det == 0 or n_gt == 0:
        return matched_gt
    claimed = np.zeros((n_gt, len(thresholds)), dtype=bool)
    columns = np.arange(len(thresholds))
    # Only detections reaching the lowest threshold with some box can claim one; skipping the rest keeps
    # this fast with the hundreds of low-confidence predictions AP is computed from.
    reaching = iou.max(axis=1) >= thresholds.min()
    for det in np.argsort(-np.asarray(confidence), kind="stable"):
        if not reaching[det]:
            continue
        available = np.where(claimed, -1.0, iou[det][:, None])  # (boxes, thresholds)
        best = available.argmax(axis=0)
        hit = available[best, columns] >= thresholds
        matched_gt[det, hit] = best[hit]
        claimed[best[hit], columns[hit]] = True
    return matched_gt


def greedy_match(iou: np.ndarray, confidence: np.ndarray, iou_threshold: float = MATCH_IOU) -> np.ndarray:
    """For each detection (rows of ``iou``), the index of the ground truth it claims at ``iou_threshold``, or -1."""
    return greedy_match_at(iou, confidence, [iou_threshold])[:, 0]


@dataclass(frozen=True)
class ImageMatch:
    """Outcome of matching one image's thresholded detections to its ground truth.

    ``det_gt`` maps each detection to the ground-truth index it was paired with (-1: none) and
    ``same_class`` says whether that pairing is a true positive or a misclassification.
    """

    det_gt: np.ndarray
    same_class: np.ndarray


def match_image(
    gt_xyxy: np.ndarray,
    gt_class: np.ndarray,
    det_xyxy: np.ndarray,
    det_conf: np.ndarray,
    det_class: np.ndarray,
    iou_threshold: float = MATCH_IOU,
) -> ImageMatch:
    """Class-aware matching first (true positives), then class-agnostic matching of the leftovers.

    The second pass finds detections that hit a box of another class: Ultralytics' confusion
    matrix counts those as confusions rather than as a false positive plus a miss.
    """
    n_det = len(det_conf)
    det_gt = np.full(n_det, -1, dtype=np.int64)
    same_class = np.zeros(n_det, dtype=bool)
    if n_det == 0 or len(gt_class) == 0:
        return ImageMatch(det_gt, same_class)
    iou = box_iou(det_xyxy, gt_xyxy)
    class_aware = np.where(det_class[:, None] == gt_class[None, :], iou, 0.0)
    first = greedy_match(class_aware, det_conf, iou_threshold)
    det_gt[first >= 0] = first[first >= 0]
    same_class[first >= 0] = True

    left_det = np.flatnonzero(first < 0)
    left_gt = np.setdiff1d(np.arange(len(gt_class)), first[first >= 0])
    if len(left_det) and len(left_gt):
        second = greedy_match(iou[np.ix_(left_det, left_gt)], det_conf[left_det], iou_threshold)
        hit = second >= 0
        det_gt[left_det[hit]] = left_gt[second[hit]]
    return ImageMatch(det_gt, same_class)


def image_confusion(match: ImageMatch, gt_class: np.ndarray, det_class: np.ndarray, class_count: int) -> np.ndarray:
    """One image's confusion counts: rows = predicted, columns = true, index ``class_count`` = background."""
    matrix = np.zeros((class_count + 1, class_count + 1), dtype=np.int64)
    claimed = np.zeros(len(gt_class), dtype=bool)
    for det, gt in enumerate(match.det_gt):
        if gt >= 0:
            matrix[det_class[det], gt_class[gt]] += 1
            claimed[gt] = True
        else:
            matrix[det_class[det], class_count] += 1  # false positive: predicted on background
    for gt in np.flatnonzero(~claimed):
        matrix[class_count, gt_class[gt]] += 1  # missed box: background predicted
    return matrix
