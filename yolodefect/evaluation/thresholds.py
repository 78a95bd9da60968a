"""Choosing the confidence thresholds the inspection station runs at.

The objective is the station's, not mAP's: reject at least ``target_recall`` of the defective
parts (recall = 1 - escape rate) while rejecting as few good parts as possible. The search runs on
per-class score maxima for speed; the result is then measured with the station's own
:class:`~yolodefect.inference.rules.RejectRules`, so what thresholds.yaml says it achieved is what
``eval --thresholds`` and ``watch --thresholds`` decide. The file itself is
:mod:`yolodefect.inference.thresholds_file`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.evaluation.decisions import (
    NO_GOOD_PARTS,
    PartRates,
    defective_parts,
    eligible_predictions,
    part_rates,
    reject_scores,
    rejected_parts,
)
from yolodefect.evaluation.ground_truth import GroundTruth
from yolodefect.inference.rules import RejectRules, build_reject_rules
from yolodefect.inference.runner import VALIDATION_CONF
from yolodefect.inference.thresholds_file import Thresholds

logger = logging.getLogger(__name__)

# Lowest threshold offered when the model detected nothing at all: the predictor's floor.
MIN_CONF = VALIDATION_CONF
# Recall is a ratio of counts; a tolerance keeps 99/100 >= 0.99 true despite float rounding.
RECALL_TOLERANCE = 1e-9


def rejected_by_maxima(scores: np.ndarray, thresholds: np.ndarray, reject_ids: Sequence[int]) -> np.ndarray:
    """(images,) the search's fast form of the station's decision, from per-class score maxima.

    Compares in float32 like :meth:`RejectRules.mask`, so both give the same decision at a boundary.
    """
    ids = list(reject_ids)
    selected = scores[:, ids].astype(np.float32)
    return ((selected > 0) & (selected >= thresholds[ids].astype(np.float32))).any(axis=1)


def _best(options: list[tuple[float, float, float | None]], target: float, has_good: bool) -> int | None:
    """Index of the best (threshold, recall, frr) option reaching the target, None if none does.

    With good parts: lowest false-reject rate, then highest recall, then the lowest threshold (the
    smallest change). Without good parts the false-reject rate is unmeasurable, so the highest
    threshold reaching the target stands in for "fewest false alarms".
    """
    feasible = [i for i, (_, recall, _) in enumerate(options) if recall >= target - RECALL_TOLERANCE]
    if not feasible:
        return None
    if has_good:
        return min(feasible, key=lambda i: (options[i][2], -options[i][1], options[i][0]))
    return max(feasible, key=lambda i: options[i][0])


def _global_sweep(
    part_score: np.ndarray, defective: np.ndarray, target: float
) -> tuple[float, bool]:
    """Best single threshold over every observed part score; (threshold, target reached)."""
    candidates = np.unique(part_score[part_score > 0])
    if candidates.size == 0:
        return MIN_CONF, False
    options = _sweep_options(candidates, part_score, np.zeros(len(part_score), dtype=bool), defective)
    best = _best(options, target, bool((~defective).any()))
    if best is None:
        return float(candidates[0]), False  # lowest threshold: the most recall there is
    return options[best][0], True


def _sweep_options(values: np.ndarray, column: np.ndarray, rejected_anyway: np.ndarray,
                   defective: np.ndarray) -> list[tuple[float, float, float | None]]:
    """(threshold, recall, false-reject rate) for each of ``values`` (ascending), a part being rejected when
    ``rejected_anyway`` or ``column >= threshold``: the counts of every threshold at once from sorted scores,
    the same numbers :func:`part_rates` gives one threshold at a time (calibrate runs this search thousands of times)."""
    n_defective, n_good = int(defective.sum()), int((~defective).sum())
    open_bad = np.sort(column[defective & ~rejected_anyway])
    open_good = np.sort(column[~defective & ~rejected_anyway])
    escapes = np.searchsorted(open_bad, values, side="left")  # scores below the threshold pass
    false_rejects = int((~defective & rejected_anyway).sum()) + len(open_good) - np.searchsorted(
        open_good, values, side="left")
    options = []
    for value, missed, wrong in zip(values, escapes, false_rejects):
        recall = 1.0 - int(missed) / n_defective if n_defective else 0.0
        options.append((float(value), recall, int(wrong) / n_good if n_good else None))
    return options


def _coordinate_ascent(
    scores: np.ndarray, thresholds: np.ndarray, reject_ids: list[int], defective: np.ndarray, target: float
) -> np.ndarray:
    """Raise one reject class's threshold at a time while recall stays at the target.

    Only observed scores of that class are tried, so a class is never switched off entirely
    (its most confident detection still rejects), and a raise is kept only when it lowers the
    false-reject rate. Thresholds only go up over a finite set, so the loop ends.
    """
    thresholds = thresholds.copy()
    has_good = bool((~defective).any())
    changed = True
    while changed:
        changed = False
        for r in reject_ids:
            others = [c for c in reject_ids if c != r]
            rejected_by_others = (
                rejected_by_maxima(scores, thresholds, others) if others else np.zeros(len(scores), dtype=bool)
            )
            column = scores[:, r]
            values = np.concatenate([[thresholds[r]], np.unique(column[column > thresholds[r]])])
            options = _sweep_options(values, column, rejected_by_others, defective)
            best = _best(options, target, has_good)
            if best is not None and options[best][0] > thresholds[r]:
                thresholds[r] = options[best][0]
                changed = True
    return thresholds


def with_margin(value: float, below: float) -> float:
    """Halfway between a chosen score and the highest score it must let pass.

    Every threshold in (below, value] makes the same decisions on this split; the middle is the
    one least likely to flip them when scores shift a little (another precision, new images).
    """
    middle = (value + below) / 2
    return middle if np.float32(middle) > np.float32(below) else value


def search_thresholds(
    scores: np.ndarray, defective: np.ndarray, reject_ids: list[int], target_recall: float, *, per_class: bool = False,
) -> tuple[np.ndarray, bool, list[str]]:
    """Thresholds (classes,) from part scores: ``scores`` (parts, classes) is each part's score per class (0: none),
    a part is rejected when a reject class's score reaches its threshold. Returns (thresholds, target reached, notes).

    ``choose_thresholds`` feeds it per-image maxima; ``yolodefect calibrate`` feeds it, for a line rule
    "k of a part's frames", each part's k-th best frame per class: one search for both."""
    part_score = scores[:, reject_ids].max(axis=1) if reject_ids else np.zeros(len(scores))
    notes: list[str] = []
    chosen, reached = _global_sweep(part_score, defective, target_recall)
    thresholds = np.full(scores.shape[1], chosen, dtype=np.float64)
    if not reached:
        missing = int((defective & (part_score <= 0)).sum())
        notes.append(
            f"target recall {target_recall} cannot be reached: {missing} of {int(defective.sum())} defective "
            f"parts have no detection of a reject class at any confidence; using the lowest threshold {chosen:.4g}"
        )
    if not (~defective).any():
        how = "; chose the highest threshold that reaches the target recall" if reached else ""
        notes.append(NO_GOOD_PARTS + how)

    if per_class and reached:
        thresholds = _coordinate_ascent(scores, thresholds, reject_ids, defective, target_recall)
    elif per_class:
        notes.append("per-class thresholds skipped: the target is not reached even with one low threshold")

    if reached:
        # Global value from the global sweep: the parts it must pass are those scoring below it.
        global_value = with_margin(chosen, float(part_score[part_score < chosen].max(initial=0.0)))
        if per_class:
            rejected = rejected_by_maxima(scores, thresholds, reject_ids)
            for r in reject_ids:
                thresholds[r] = with_margin(thresholds[r], float(scores[~rejected, r].max(initial=0.0)))
        other_ids = [k for k in range(scores.shape[1]) if not (per_class and k in reject_ids)]
        thresholds[other_ids] = global_value
    return thresholds, reached, notes


@dataclass(frozen=True)
class SearchInputs:
    """What a threshold search works on: the station's rules without thresholds, the reject class ids, the
    predictions its ROI and min area let count, which parts are defective, and per part the top score per class."""

    class_names: list[str]
    base: RejectRules
    reject_ids: list[int]
    predictions: list[Detections]
    defective: np.ndarray
    scores: np.ndarray


def search_inputs(ground_truth: Sequence[GroundTruth], predictions: Sequence[Detections], class_names: Sequence[str],
                  *, reject_classes: set[str] | Sequence[str] | None, min_box_area_px: float,
                  roi_polygon: Any) -> SearchInputs:
    """The inputs every threshold search starts from (:func:`choose_thresholds`, promotion's search)."""
    if len(ground_truth) != len(predictions):
        raise UsageError(f"{len(predictions)} predictions for {len(ground_truth)} images")
    class_names = list(class_names)
    base = build_reject_rules(reject_classes=reject_classes, min_box_area_px=min_box_area_px, roi_polygon=roi_polygon)
    base.check_classes(class_names, owner="dataset")
    reject_ids = base.reject_ids(class_names)
    predictions = eligible_predictions(predictions, base)
    return SearchInputs(class_names, base, reject_ids, list(predictions),
                        defective_parts(ground_truth, reject_ids), reject_scores(predictions, len(class_names)))


def station_rates(inputs: SearchInputs, conf: dict[str, float]) -> PartRates:
    """What chosen thresholds achieve, measured by the station's rule itself, not by the search's shortcut."""
    station = RejectRules(inputs.base.reject_classes, conf, min_box_area_px=inputs.base.min_box_area_px,
                          roi_polygon=inputs.base.roi_polygon)
    return part_rates(inputs.defective, rejected_parts(inputs.predictions, inputs.class_names, station))


def choose_thresholds(
    ground_truth: Sequence[GroundTruth],
    predictions: Sequence[Detections],
    class_names: Sequence[str],
    *,
    target_recall: float = 0.99,
    per_class: bool = False,
    reject_classes: set[str] | Sequence[str] | None = None,
    min_box_area_px: float = 0.0,
    roi_polygon: Any = None,
    split: str | None = None,
    model: str | None = None,
) -> Thresholds:
    """Confidence thresholds reaching part-level recall >= ``target_recall`` with the fewest false rejects.

    A global sweep over every observed part score comes first; with ``per_class`` each reject
    class's threshold is then raised in turn while recall stays at the target. When even the
    lowest threshold misses the target, the lowest is returned and ``target_reached`` is False.
    Non-reject classes get the global threshold (it only affects their precision/recall).
    ``min_box_area_px`` and ``roi_polygon`` are the station's: detections they exclude cannot
    reject at any threshold, so they are left out of the search.
    """
    if not 0 < target_recall <= 1:
        raise UsageError(f"target recall must lie in (0, 1], got {target_recall}")
    inputs = search_inputs(ground_truth, predictions, class_names, reject_classes=reject_classes,
                           min_box_area_px=min_box_area_px, roi_polygon=roi_polygon)
    class_names, base, reject_ids, defective = inputs.class_names, inputs.base, inputs.reject_ids, inputs.defective
    if not defective.any():
        raise UsageError(
            "this split has no defective images (no box of a reject class), so no threshold can be "
            "chosen for a recall target; choose thresholds on a split with defects"
        )
    thresholds, reached, notes = search_thresholds(inputs.scores, defective, reject_ids, target_recall,
                                                   per_class=per_class)

    conf = {name: float(value) for name, value in zip(class_names, thresholds)}
    final = station_rates(inputs, conf)
    if base.min_box_area_px > 0 or base.roi_polygon is not None:
        notes.append(
            f"chosen for a station with min box area {base.min_box_area_px:g} px and ROI "
            f"{base.to_dict()['roi_polygon']}: run it with the same --min-area and --roi"
        )
    logger.debug("chose thresholds %s: recall %s, FRR %s", thresholds.tolist(), final.recall, final.false_reject_rate)
    return Thresholds(
        conf=conf,
        target_recall=float(target_recall),
        target_reached=reached,
        recall=final.recall,
        escape_rate=final.escape_rate,
        false_reject_rate=final.false_reject_rate,
        reject_classes=[class_names[i] for i in reject_ids],
        per_class=per_class,
        split=split,
        model=model,
        notes=notes,
    )
