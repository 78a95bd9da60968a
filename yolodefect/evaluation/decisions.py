"""Part-level accept/reject decisions: what the inspection station actually does with detections.

One image is one part. A part is defective when it has a ground-truth box of a reject class, and
the station rejects it when any detection of a reject class reaches that class's confidence
threshold (``confidence >= threshold``). Localisation does not matter for the decision: a defect
found in the wrong place still stops a bad part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.evaluation.ground_truth import GroundTruth

NO_GOOD_PARTS = "no defect-free images in this split: false-reject rate cannot be measured"
NO_DEFECTIVE_PARTS = "no defective images in this split: escape rate cannot be measured"


def reject_class_ids(class_names: Sequence[str], reject_classes: Sequence[str] | set[str] | None) -> list[int]:
    """Class indices that make a part a reject; None means every class is a defect."""
    if reject_classes is None:
        return list(range(len(class_names)))
    unknown = sorted(set(reject_classes) - set(class_names))
    if unknown:
        raise UsageError(
            f"reject classes {unknown} are not classes of this dataset (classes: {', '.join(class_names)})"
        )
    if not reject_classes:
        raise UsageError("the reject classes are empty: name at least one class that makes a part a reject")
    return [index for index, name in enumerate(class_names) if name in set(reject_classes)]


def thresholds_array(class_names: Sequence[str], conf: Mapping[str, float] | float) -> np.ndarray:
    """Per-class confidence thresholds in class order, from one value or a name -> value mapping."""
    if isinstance(conf, Mapping):
        missing = [name for name in class_names if name not in conf]
        unknown = sorted(set(conf) - set(class_names))
        if missing or unknown:
            raise UsageError(
                "the confidence thresholds do not fit the classes: "
                + (f"missing {missing}; " if missing else "")
                + (f"unknown {unknown}; " if unknown else "")
                + f"expected one threshold for each of {list(class_names)}"
            )
        values = np.array([float(conf[name]) for name in class_names], dtype=np.float64)
    else:
        values = np.full(len(class_names), float(conf), dtype=np.float64)
    if np.any((values < 0) | (values > 1)):
        raise UsageError(f"confidence thresholds must lie in [0, 1], got {values.tolist()}")
    return values


def passing_mask(detections: Detections, thresholds: np.ndarray) -> np.ndarray:
    """Detections whose confidence reaches their class's threshold."""
    if len(detections) == 0:
        return np.zeros(0, dtype=bool)
    return detections.confidence >= thresholds[detections.class_id].astype(np.float32)


def defective_parts(ground_truth: Sequence[GroundTruth], reject_ids: Sequence[int]) -> np.ndarray:
    """(images,) True where the part carries a ground-truth box of a reject class."""
    return np.array([bool(np.isin(truth.class_id, reject_ids).any()) for truth in ground_truth], dtype=bool)


def reject_scores(predictions: Sequence[Detections], class_count: int) -> np.ndarray:
    """(images, classes) highest confidence of each class on each image, 0 where the class is absent.

    The decision for any set of per-class thresholds depends only on these maxima, which lets the
    threshold search evaluate thousands of candidates with array operations.
    """
    scores = np.zeros((len(predictions), class_count), dtype=np.float64)
    for index, detections in enumerate(predictions):
        if len(detections):
            np.maximum.at(scores[index], detections.class_id, detections.confidence.astype(np.float64))
    return scores


def rejected_parts(scores: np.ndarray, thresholds: np.ndarray, reject_ids: Sequence[int]) -> np.ndarray:
    """(images,) True where a reject class's best detection reaches its threshold.

    Compares in float32 like :func:`passing_mask`, so both give the same decision at a boundary.
    """
    ids = list(reject_ids)
    selected = scores[:, ids].astype(np.float32)
    return ((selected > 0) & (selected >= thresholds[ids].astype(np.float32))).any(axis=1)


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
    defective: int
    good: int
    true_rejects: int
    escapes: int
    false_rejects: int
    correct_accepts: int
    escape_rate: float | None
    false_reject_rate: float | None
    recall: float | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def decision_metrics(
    ground_truth: Sequence[GroundTruth],
    predictions: Sequence[Detections],
    class_names: Sequence[str],
    thresholds: np.ndarray,
    reject_ids: Sequence[int],
) -> DecisionMetrics:
    """Escape rate, false-reject rate and counts for one set of per-class thresholds."""
    defective = defective_parts(ground_truth, reject_ids)
    rejected = rejected_parts(reject_scores(predictions, len(class_names)), thresholds, reject_ids)
    rates = part_rates(defective, rejected)
    notes = []
    if rates.good == 0:
        notes.append(NO_GOOD_PARTS)
    if rates.defective == 0:
        notes.append(NO_DEFECTIVE_PARTS)
    return DecisionMetrics(
        reject_classes=[class_names[i] for i in reject_ids],
        thresholds={name: float(value) for name, value in zip(class_names, thresholds)},
        recall=rates.recall,
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
