"""Part-level accept/reject decisions: what the inspection station actually does with detections.

One image is one part. A part is defective when it has a ground-truth box of a reject class, and
the station rejects it when any detection counts under the station's :class:`RejectRules` (reject
class, ``confidence >= threshold`` of its class, min box area, ROI). Localisation does not matter
for the decision: a defect found in the wrong place still stops a bad part. Ground truth is not
filtered by the ROI or min area: a labelled defect the rules cannot see is an escape, which is what
the line would do with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from yolodefect.detections import Detections
from yolodefect.evaluation.ground_truth import GroundTruth
from yolodefect.inference.rules import RejectRules

NO_GOOD_PARTS = "no defect-free images in this split: false-reject rate cannot be measured"
NO_DEFECTIVE_PARTS = "no defective images in this split: escape rate cannot be measured"


def defective_parts(ground_truth: Sequence[GroundTruth], reject_ids: Sequence[int]) -> np.ndarray:
    """(images,) True where the part carries a ground-truth box of a reject class."""
    return np.array([bool(np.isin(truth.class_id, reject_ids).any()) for truth in ground_truth], dtype=bool)


def rejected_parts(predictions: Sequence[Detections], class_names: Sequence[str], rules: RejectRules) -> np.ndarray:
    """(images,) the station's decision on each part: True where it rejects."""
    return np.array([rules.rejects(detections, class_names) for detections in predictions], dtype=bool)


def eligible_predictions(predictions: Sequence[Detections], rules: RejectRules) -> list[Detections]:
    """The detections the rules can count at some confidence: outside the ROI or too small, none can."""
    if rules.min_box_area_px <= 0 and rules.roi_polygon is None:
        return list(predictions)
    return [detections.filter(rules.eligible_mask(detections)) for detections in predictions]


def reject_scores(predictions: Sequence[Detections], class_count: int) -> np.ndarray:
    """(images, classes) highest confidence of each class on each image, 0 where the class is absent.

    The decision for any set of per-class thresholds depends only on these maxima (of the eligible
    detections), which lets the threshold search evaluate thousands of candidates with array operations.
    """
    scores = np.zeros((len(predictions), class_count), dtype=np.float64)
    for index, detections in enumerate(predictions):
        if len(detections):
            np.maximum.at(scores[index], detections.class_id, detections.confidence.astype(np.float64))
    return scores


@dataclass(frozen=True)
class PartRates:
    """Escape and false-reject rates with the counts behind them; a rate is None when its base is 0."""

    defective: int
    good: int
    true_rejects: int
    escapes: int
    false_rejects: int
    correct_accepts: int
    escape_rate: float | None
    false_reject_rate: float | None

    @property
    def recall(self) -> float | None:
        """Part-level recall, the share of defective parts rejected."""
        return None if self.escape_rate is None else 1.0 - self.escape_rate


def part_rates(defective: np.ndarray, rejected: np.ndarray) -> PartRates:
    """Count the four outcomes of accept/reject against defective/good."""
    n_defective = int(defective.sum())
    n_good = int((~defective).sum())
    escapes = int((defective & ~rejected).sum())
    false_rejects = int((~defective & rejected).sum())
    return PartRates(
        defective=n_defective,
        good=n_good,
        true_rejects=n_defective - escapes,
        escapes=escapes,
        false_rejects=false_rejects,
        correct_accepts=n_good - false_rejects,
        escape_rate=escapes / n_defective if n_defective else None,
        false_reject_rate=false_rejects / n_good if n_good else None,
    )


@dataclass(frozen=True)
class DecisionMetrics:
    """How the station would have sorted this split's parts at the given thresholds."""

    reject_classes: list[str]
    thresholds: dict[str, float]
    min_box_area_px: float
    roi_polygon: list[list[float]] | None  # frame pixels; None: the whole image
    defective: int
    good: int
    true_rejects: int
    escapes: int
    false_rejects: int
    correct_accepts: int
    escape_rate: float | None
    false_reject_rate: float | None
    recall: float | None
    escaped_parts: list[str] = field(default_factory=list)  # images of defective parts the station accepts
    false_rejected_parts: list[str] = field(default_factory=list)  # images of good parts it rejects
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def decision_metrics(
    ground_truth: Sequence[GroundTruth],
    predictions: Sequence[Detections],
    class_names: Sequence[str],
    rules: RejectRules,
) -> DecisionMetrics:
    """Escape rate, false-reject rate and counts when the station sorts these parts with ``rules``."""
    class_names = list(class_names)
    reject_ids = rules.reject_ids(class_names)
    defective = defective_parts(ground_truth, reject_ids)
    rejected = rejected_parts(predictions, class_names, rules)
    rates = part_rates(defective, rejected)
    images = [str(truth.image_path) for truth in ground_truth]
    notes = []
    if rates.good == 0:
        notes.append(NO_GOOD_PARTS)
    if rates.defective == 0:
        notes.append(NO_DEFECTIVE_PARTS)
    return DecisionMetrics(
        reject_classes=[class_names[i] for i in reject_ids],
        thresholds={name: rules.threshold(name) for name in class_names},
        min_box_area_px=rules.min_box_area_px,
        roi_polygon=rules.to_dict()["roi_polygon"],
        recall=rates.recall,
        escaped_parts=[image for image, bad, out in zip(images, defective, rejected) if bad and not out],
        false_rejected_parts=[image for image, bad, out in zip(images, defective, rejected) if out and not bad],
        notes=notes,
        **asdict(rates),
    )


@dataclass(frozen=True)
class OperatingCurve:
    """Escape and false-reject rate for one confidence threshold shared by all reject classes."""

    thresholds: np.ndarray
    escape_rate: np.ndarray  # NaN when the split has no defective part
    false_reject_rate: np.ndarray  # NaN when the split has no good part


def operating_curve(
    ground_truth: Sequence[GroundTruth],
    predictions: Sequence[Detections],
    class_count: int,
    reject_ids: Sequence[int],
    points: int = 201,
) -> OperatingCurve:
    """Rates on an even grid of global thresholds in [0, 1], plus every observed part score.

    Observed scores are included so the steps of the curve sit exactly where decisions change.
    Give the :func:`eligible_predictions` when the station has an ROI or a min box area.
    """
    defective = defective_parts(ground_truth, reject_ids)
    part_score = reject_scores(predictions, class_count)[:, list(reject_ids)].max(axis=1, initial=0.0)
    grid = np.unique(np.concatenate([np.linspace(0.0, 1.0, points), part_score[part_score > 0]]))
    grid = grid[grid > 0]
    rejected = part_score[None, :] >= grid[:, None]  # (thresholds, images)
    n_defective, n_good = int(defective.sum()), int((~defective).sum())
    escapes = (~rejected & defective[None, :]).sum(axis=1)
    false_rejects = (rejected & ~defective[None, :]).sum(axis=1)
    return OperatingCurve(
        thresholds=grid,
        escape_rate=escapes / n_defective if n_defective else np.full(len(grid), np.nan),
        false_reject_rate=false_rejects / n_good if n_good else np.full(len(grid), np.nan),
    )
