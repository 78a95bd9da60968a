"""The records the evaluator returns; plain data that serialises to JSON and renders as tables."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from yolodefect.evaluation.decisions import DecisionMetrics


def jsonable(value: object) -> object:
    """``value`` with numpy arrays and scalars as Python lists and numbers, NaN as None: ready for json.dumps."""
    # NaN is not valid JSON; the metrics use None for "cannot be measured" instead.
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value


@dataclass(frozen=True)
class ClassMetrics:
    """One class. AP needs no threshold; precision/recall/F1 and the counts are at ``threshold``.

    A value is None when it cannot be measured: AP and recall without ground-truth boxes of the
    class, precision when no detection of the class passes the threshold.
    """

    name: str
    instances: int  # ground-truth boxes
    images: int  # images holding at least one such box
    ap50: float | None
    ap50_95: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    threshold: float
    true_positives: int
    false_positives: int
    false_negatives: int


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """The precision envelope at IoU 0.5 on 101 recall points (as Ultralytics' AP uses it), per class and averaged."""

    recall: list[float]
    precision: dict[str, list[float | None]]
    mean_precision: list[float | None]


@dataclass(frozen=True)
class EvalMetrics:
    """Everything measured on one split for one model at one set of thresholds.

    ``confusion_matrix[predicted][true]`` with ``confusion_labels`` = class names + "background":
    the background row counts missed boxes, the background column counts false positives.
    ``precision``/``recall``/``f1`` are means over the classes with ground-truth boxes (a class with
    no passing detection counts as precision 0 in the mean).
    """

    implementation: str
    class_names: list[str]
    images: int
    instances: int
    map50: float | None  # Ultralytics' validator's AP (what training logs and ``yolo val`` print)
    map50_95: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    per_class: list[ClassMetrics]
    match_iou: float
    confusion_labels: list[str]
    confusion_matrix: list[list[int]]
    decisions: DecisionMetrics
    pr_curve: PrecisionRecallCurve
    notes: list[str] = field(default_factory=list)
    coco_map50: float | None = None  # the same predictions scored by COCO's rules (pycocotools' interpolation)
    coco_map50_95: float | None = None

    def to_dict(self) -> dict:
        """JSON-serialisable form (NaN becomes None)."""
        return jsonable(asdict(self))  # type: ignore[return-value]

    def class_by_name(self, name: str) -> ClassMetrics:
        for metrics in self.per_class:
            if metrics.name == name:
                return metrics
        raise KeyError(f"no class {name!r} (classes: {', '.join(self.class_names)})")

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows (class by class, then 'all') formatted for a console table."""
        header = ["class", "images", "instances", "AP50", "AP50-95", "P", "R", "F1", "conf"]
        rows = [
            [
                m.name,
                str(m.images),
                str(m.instances),
                _fmt(m.ap50),
                _fmt(m.ap50_95),
                _fmt(m.precision),
                _fmt(m.recall),
                _fmt(m.f1),
                f"{m.threshold:.3f}",
            ]
            for m in self.per_class
        ]
        rows.append([
            "all",
            str(self.images),
            str(self.instances),
            _fmt(self.map50),
            _fmt(self.map50_95),
            _fmt(self.precision),
            _fmt(self.recall),
            _fmt(self.f1),
            "",
        ])
        return header, rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
