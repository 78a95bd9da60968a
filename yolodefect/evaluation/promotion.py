"""Gated promotion: may a new model replace the one the line runs now (``yolodefect eval NEW --baseline OLD``)?

The line cares about two numbers, and one of them is fixed by the line: the false-reject rate (good parts
thrown away) it already lives with. So the new model is given the thresholds that reach its lowest escape
rate without rejecting more good parts than the old one does on the same split
(:func:`thresholds_at_false_reject_rate`), and then it must not let more defective parts through, overall
and for each reject class (a class's escapes: the parts carrying a defect of that class that are accepted).
Counts are compared, not rates: both models are scored on the same parts, so a count is exact where a
rate rounds. :func:`promotion_verdict` works on the evaluator's own results for both models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from yolodefect.detections import Detections
from yolodefect.evaluation.ground_truth import GroundTruth
from yolodefect.evaluation.metrics import EvalMetrics
from yolodefect.evaluation.thresholds import (
    RECALL_TOLERANCE,
    rejected_by_maxima,
    search_inputs,
    station_rates,
    with_margin,
)
from yolodefect.inference.thresholds_file import Thresholds

Verdict = Literal["promote", "keep"]


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _best_lowering(column: np.ndarray, current: float, rejected_by_others: np.ndarray, defective: np.ndarray,
                   allowed: int) -> float:
    """The threshold of one class, at or below ``current``, with the fewest escapes within the false-reject budget."""
    best, best_escapes = current, None
    for value in [current, *np.unique(column[(column > 0) & (column < current)])[::-1]]:
        rejected = rejected_by_others | (column.astype(np.float32) >= np.float32(value))
        if int((~defective & rejected).sum()) > allowed:
            break  # lower thresholds only reject more good parts
        escapes = int((defective & ~rejected).sum())
        if best_escapes is None or escapes < best_escapes:
            best, best_escapes = float(value), escapes
    return best


def thresholds_at_false_reject_rate(
    ground_truth: Sequence[GroundTruth],
    predictions: Sequence[Detections],
    class_names: Sequence[str],
    *,
    max_false_reject_rate: float,
    per_class: bool = False,
    reject_classes: Sequence[str] | set[str] | None = None,
    min_box_area_px: float = 0.0,
    roi_polygon: Any = None,
    split: str | None = None,
    model: str | None = None,
) -> Thresholds:
    """Thresholds with the lowest part escape rate that reject at most ``max_false_reject_rate`` of the good parts.

    A single threshold for every reject class first: the lowest observed part score whose false rejects stay
    within the budget (a lower threshold only rejects more; when even the highest score rejects too many
    good parts, nothing is rejected). With ``per_class`` each reject class's threshold is then lowered in turn
    while the budget allows and its escapes fall. Chosen values sit midway to the next score they must pass,
    as :func:`~yolodefect.evaluation.thresholds.choose_thresholds` places them; the result is measured with
    the station's own :class:`RejectRules`.
    """
    inputs = search_inputs(ground_truth, predictions, class_names, reject_classes=reject_classes,
                           min_box_area_px=min_box_area_px, roi_polygon=roi_polygon)
    class_names, reject_ids, defective, scores = inputs.class_names, inputs.reject_ids, inputs.defective, inputs.scores
    allowed = int(np.floor(max_false_reject_rate * int((~defective).sum()) + RECALL_TOLERANCE))
    part_score = scores[:, reject_ids].max(axis=1) if reject_ids else np.zeros(len(scores))

    candidates = np.unique(part_score[part_score > 0])
    # Above every score: rejects nothing (no false reject), the fallback when any rejection costs too many.
    chosen = float(np.nextafter(np.float32(candidates.max()), np.float32(2.0))) if candidates.size else 1.0
    for value in candidates:  # ascending: the first within the budget rejects the most defective parts
        if int((~defective & (part_score.astype(np.float32) >= np.float32(value))).sum()) <= allowed:
            chosen = float(value)
            break
    chosen = min(chosen, 1.0)
    thresholds = np.full(scores.shape[1], chosen, dtype=np.float64)
    if per_class and reject_ids:
        changed = True
        while changed:  # thresholds only go down over a finite set of scores, so this ends
            changed = False
            for r in reject_ids:
                others = [c for c in reject_ids if c != r]
                by_others = (rejected_by_maxima(scores, thresholds, others) if others
                             else np.zeros(len(scores), dtype=bool))
                lowered = _best_lowering(scores[:, r], thresholds[r], by_others, defective, allowed)
                if lowered < thresholds[r]:
                    thresholds[r], changed = lowered, True
    global_value = with_margin(chosen, float(part_score[part_score < chosen].max(initial=0.0)))
    if per_class and reject_ids:
        rejected = rejected_by_maxima(scores, thresholds, reject_ids)
        for r in reject_ids:
            thresholds[r] = with_margin(thresholds[r], float(scores[~rejected, r].max(initial=0.0)))
    other_ids = [k for k in range(scores.shape[1]) if not (per_class and k in reject_ids)]
    thresholds[other_ids] = global_value

    conf = {name: float(min(value, 1.0)) for name, value in zip(class_names, thresholds)}
    final = station_rates(inputs, conf)
    return Thresholds(
        conf=conf, target_recall=None, target_reached=True, recall=final.recall, escape_rate=final.escape_rate,
        false_reject_rate=final.false_reject_rate, reject_classes=[class_names[i] for i in reject_ids],
        per_class=per_class, split=split, model=model,
        notes=[(f"chosen on {split or 'the split'} for the lowest escape rate at a false-reject rate of at most "
                f"{max_false_reject_rate:.2%} (the baseline model's)")],
    )


@dataclass(frozen=True)
class ClassEscapes:
    """One reject class: its defective parts (those with a box of the class) and how many each model accepts."""

    name: str
    defective: int
    baseline_escapes: int
    candidate_escapes: int

    @property
    def worse(self) -> bool:
        return self.candidate_escapes > self.baseline_escapes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "baseline_escape_rate": _ratio(self.baseline_escapes, self.defective),
                "candidate_escape_rate": _ratio(self.candidate_escapes, self.defective), "worse": self.worse}


@dataclass(frozen=True)
class Promotion:
    """The verdict of ``eval --baseline``: ``promote`` (the candidate may replace the baseline) or ``keep``."""

    verdict: Verdict
    reasons: list[str]
    candidate: str
    baseline: str
    baseline_threshold_source: str
    baseline_thresholds: dict[str, float]
    candidate_thresholds: dict[str, float]
    defective: int
    good: int
    baseline_escapes: int
    candidate_escapes: int
    baseline_false_rejects: int
    candidate_false_rejects: int
    per_class: list[ClassEscapes] = field(default_factory=list)

    @property
    def promote(self) -> bool:
        return self.verdict == "promote"

    @property
    def baseline_escape_rate(self) -> float | None:
        return _ratio(self.baseline_escapes, self.defective)

    @property
    def candidate_escape_rate(self) -> float | None:
        return _ratio(self.candidate_escapes, self.defective)

    @property
    def baseline_false_reject_rate(self) -> float | None:
        return _ratio(self.baseline_false_rejects, self.good)

    @property
    def candidate_false_reject_rate(self) -> float | None:
        return _ratio(self.candidate_false_rejects, self.good)

    def to_dict(self) -> dict[str, Any]:
        data = {key: value for key, value in asdict(self).items() if key != "per_class"}
        return {**data, "baseline_escape_rate": self.baseline_escape_rate,
                "candidate_escape_rate": self.candidate_escape_rate,
                "baseline_false_reject_rate": self.baseline_false_reject_rate,
                "candidate_false_reject_rate": self.candidate_false_reject_rate,
                "per_class": [row.to_dict() for row in self.per_class]}


def _percent(count: int, total: int) -> str:
    return f"{count / total:.1%} ({count} of {total})" if total else f"{count} of 0"


def promotion_verdict(
    ground_truth: Sequence[GroundTruth],
    baseline: EvalMetrics,
    candidate: EvalMetrics,
    *,
    baseline_model: str,
    candidate_model: str,
    baseline_threshold_source: str,
) -> Promotion:
    """Whether ``candidate`` may replace ``baseline``: both evaluated on ``ground_truth`` with the same reject classes,
    the candidate at thresholds whose false-reject rate is no higher than the baseline's. It may when it rejects
    no more good parts and accepts no more defective parts, overall and in every reject class."""
    old, new = baseline.decisions, candidate.decisions
    if baseline.images != len(ground_truth) or candidate.images != len(ground_truth):
        raise ValueError("both models must be evaluated on the given split")
    if sorted(old.reject_classes) != sorted(new.reject_classes):
        raise ValueError(f"the models were scored with other reject classes: {old.reject_classes} and "
                         f"{new.reject_classes}")
    names = list(baseline.class_names)
    old_escaped, new_escaped = set(old.escaped_parts), set(new.escaped_parts)
    rows = []
    for name in old.reject_classes:
        class_id = names.index(name)
        parts = [str(t.image_path) for t in ground_truth if bool(np.isin(class_id, t.class_id))]
        rows.append(ClassEscapes(name, len(parts), sum(p in old_escaped for p in parts),
                                 sum(p in new_escaped for p in parts)))
    reasons = []
    if new.false_rejects > old.false_rejects:
        reasons.append(f"false-reject rate {_percent(new.false_rejects, new.good)} is higher than the baseline's "
                       f"{_percent(old.false_rejects, old.good)}")
    if new.escapes > old.escapes:
        reasons.append(f"escape rate {_percent(new.escapes, new.defective)} is higher than the baseline's "
                       f"{_percent(old.escapes, old.defective)}")
    reasons += [f"class {row.name}: {row.candidate_escapes} of its {row.defective} defective parts escape, the "
                f"baseline's {row.baseline_escapes}" for row in rows if row.worse]
    verdict: Verdict = "keep" if reasons else "promote"
    if not reasons:
        reasons.append(f"escape rate {_percent(new.escapes, new.defective)} against the baseline's "
                       f"{_percent(old.escapes, old.defective)}, no class escaping more, at a false-reject rate of "
                       f"{_percent(new.false_rejects, new.good)} against {_percent(old.false_rejects, old.good)}")
    return Promotion(
        verdict=verdict, reasons=reasons, candidate=candidate_model, baseline=baseline_model,
        baseline_threshold_source=baseline_threshold_source,
        baseline_thresholds={name: old.thresholds[name] for name in old.reject_classes},
        candidate_thresholds={name: new.thresholds[name] for name in new.reject_classes},
        defective=new.defective, good=new.good, baseline_escapes=old.escapes, candidate_escapes=new.escapes,
        baseline_false_rejects=old.false_rejects, candidate_false_rejects=new.false_rejects, per_class=rows,
    )
