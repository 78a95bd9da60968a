"""The accuracy gate: an export ships only if it keeps mAP50 within ``max_drop`` points of its reference."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from yolodefect.evaluation.metrics import EvalMetrics

# Float noise in AP must not decide a gate set exactly at the measured drop.
TOLERANCE_POINTS = 1e-6
WORST_SHOWN = 3


@dataclass(frozen=True)
class ClassChange:
    name: str
    reference_ap50: float
    candidate_ap50: float

    @property
    def drop_points(self) -> float:
        return (self.reference_ap50 - self.candidate_ap50) * 100.0

    def to_dict(self) -> dict:
        return {**asdict(self), "drop_points": round(self.drop_points, 3)}


@dataclass(frozen=True)
class GateResult:
    passed: bool
    max_drop: float  # mAP50 points
    map50_drop: float  # mAP50 points, reference minus candidate (negative: the candidate scored higher)
    worst: list[ClassChange] = field(default_factory=list)  # classes that lost most AP50, worst first
    message: str = ""

    def to_dict(self) -> dict:
        return {"passed": self.passed, "max_drop": self.max_drop, "map50_drop": round(self.map50_drop, 3),
                "worst_classes": [change.to_dict() for change in self.worst], "message": self.message}


def class_changes(reference: EvalMetrics, candidate: EvalMetrics) -> list[ClassChange]:
    """Per-class AP50 of both, largest loss first; classes without val boxes (AP None) are left out."""
    theirs = {metrics.name: metrics.ap50 for metrics in candidate.per_class}
    changes = [
        ClassChange(metrics.name, float(metrics.ap50), float(theirs.get(metrics.name) or 0.0))
        for metrics in reference.per_class
        if metrics.ap50 is not None
    ]
    return sorted(changes, key=lambda change: change.drop_points, reverse=True)


def _named(changes: list[ClassChange]) -> str:
    return ", ".join(
        f"{c.name} (AP50 {c.reference_ap50 * 100:.1f} -> {c.candidate_ap50 * 100:.1f}, {-c.drop_points:+.1f})"
        for c in changes
    )


def apply_gate(reference: EvalMetrics, candidate: EvalMetrics, max_drop: float, *, reference_label: str,
               candidate_label: str) -> GateResult:
    """Pass when candidate mAP50 >= reference mAP50 - ``max_drop`` points."""
    if reference.map50 is None or candidate.map50 is None:
        raise ValueError("mAP50 cannot be measured on this split (no labelled boxes)")
    drop = (reference.map50 - candidate.map50) * 100.0
    passed = drop <= max_drop + TOLERANCE_POINTS
    worst = class_changes(reference, candidate)[:WORST_SHOWN]
    summary = (f"{candidate_label} mAP50 {candidate.map50 * 100:.2f} vs {reference_label} {reference.map50 * 100:.2f}: "
               f"{'drop' if drop >= 0 else 'gain'} of {abs(drop):.2f} points (max drop {max_drop:g})")
    if passed:
        message = f"passed: {summary}"
    else:
        message = (f"FAILED: {summary}. Classes that lost most: {_named(worst) or 'none measurable'}. "
                   "Try more calibration images (--calib), another --calibration method, or deploy the FP32 model; "
                   "raise --max-drop only if that loss is acceptable on the line")
    return GateResult(passed, float(max_drop), drop, worst, message)
