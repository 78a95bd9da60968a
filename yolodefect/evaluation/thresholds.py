"""Choosing the confidence thresholds the inspection station runs at, and their YAML file.

The objective is the station's, not mAP's: reject at least ``target_recall`` of the defective
parts (recall = 1 - escape rate) while rejecting as few good parts as possible.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from yolodefect.detections import Detections
from yolodefect.errors import FormatError, UsageError
from yolodefect.evaluation.decisions import (
    NO_GOOD_PARTS,
    defective_parts,
    part_rates,
    reject_class_ids,
    reject_scores,
    rejected_parts,
)
from yolodefect.evaluation.ground_truth import GroundTruth

logger = logging.getLogger(__name__)

# Lowest threshold offered when the model detected nothing at all; matches the predictor's floor.
MIN_CONF = 0.001
# Recall is a ratio of counts; a tolerance keeps 99/100 >= 0.99 true despite float rounding.
RECALL_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Thresholds:
    """Per-class confidence thresholds and what they achieved on the split they were chosen on."""

    conf: dict[str, float]
    target_recall: float | None  # None in a hand-written file that states no target
    target_reached: bool
    recall: float | None
    escape_rate: float | None
    false_reject_rate: float | None
    reject_classes: list[str]
    per_class: bool = False
    split: str | None = None
    model: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The thresholds.yaml layout the inspection station reads."""
        return {
            "conf": {name: float(value) for name, value in self.conf.items()},
            "target_recall": self.target_recall,
            "target_reached": bool(self.target_reached),
            "achieved": {
                "recall": self.recall,
                "escape_rate": self.escape_rate,
                "false_reject_rate": self.false_reject_rate,
            },
            "reject_classes": list(self.reject_classes),
            "per_class": bool(self.per_class),
            "split": self.split,
            "model": self.model,
            "notes": list(self.notes),
        }


def _rates(defective: np.ndarray, rejected: np.ndarray) -> tuple[float, float | None]:
    rates = part_rates(defective, rejected)
    return float(rates.recall or 0.0), rates.false_reject_rate


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
    options = []
    for value in candidates:
        recall, frr = _rates(defective, part_score >= value)
        options.append((float(value), recall, frr))
    best = _best(options, target, bool((~defective).any()))
    if best is None:
        return float(candidates[0]), False  # lowest threshold: the most recall there is
    return options[best][0], True


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
                rejected_parts(scores, thresholds, others) if others else np.zeros(len(scores), dtype=bool)
            )
            column = scores[:, r]
            higher = np.unique(column[column > thresholds[r]])
            options = []
            for value in [thresholds[r], *higher]:
                recall, frr = _rates(defective, rejected_by_others | (column >= value))
                options.append((float(value), recall, frr))
            best = _best(options, target, has_good)
            if best is not None and options[best][0] > thresholds[r]:
                thresholds[r] = options[best][0]
                changed = True
    return thresholds


def _with_margin(value: float, below: float) -> float:
    """Halfway between a chosen score and the highest score it must let pass.

    Every threshold in (below, value] makes the same decisions on this split; the middle is the
    one least likely to flip them when scores shift a little (another precision, new images).
    """
    middle = (value + below) / 2
    return middle if np.float32(middle) > np.float32(below) else value


def choose_thresholds(
    ground_truth: Sequence[GroundTruth],
    predictions: Sequence[Detections],
    class_names: Sequence[str],
    *,
    target_recall: float = 0.99,
    per_class: bool = False,
    reject_classes: set[str] | Sequence[str] | None = None,
    split: str | None = None,
    model: str | None = None,
) -> Thresholds:
    """Confidence thresholds reaching part-level recall >= ``target_recall`` with the fewest false rejects.

    A global sweep over every observed part score comes first; with ``per_class`` each reject
    class's threshold is then raised in turn while recall stays at the target. When even the
    lowest threshold misses the target, the lowest is returned and ``target_reached`` is False.
    Non-reject classes get the global threshold (it only affects their precision/recall).
    """
    if not 0 < target_recall <= 1:
        raise UsageError(f"target recall must lie in (0, 1], got {target_recall}")
    if len(ground_truth) != len(predictions):
        raise UsageError(f"{len(predictions)} predictions for {len(ground_truth)} images")
    class_names = list(class_names)
    reject_ids = reject_class_ids(class_names, reject_classes)
    defective = defective_parts(ground_truth, reject_ids)
    if not defective.any():
        raise UsageError(
            "this split has no defective images (no box of a reject class), so no threshold can be "
            "chosen for a recall target; choose thresholds on a split with defects"
        )
    scores = reject_scores(predictions, len(class_names))
    part_score = scores[:, reject_ids].max(axis=1)
    notes: list[str] = []

    chosen, reached = _global_sweep(part_score, defective, target_recall)
    thresholds = np.full(len(class_names), chosen, dtype=np.float64)
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
        # Global value from the global sweep: the images it must pass are those scoring below it.
        global_value = _with_margin(chosen, float(part_score[part_score < chosen].max(initial=0.0)))
        if per_class:
            rejected = rejected_parts(scores, thresholds, reject_ids)
            for r in reject_ids:
                thresholds[r] = _with_margin(thresholds[r], float(scores[~rejected, r].max(initial=0.0)))
        other_ids = [k for k in range(len(class_names)) if not (per_class and k in reject_ids)]
        thresholds[other_ids] = global_value

    final = part_rates(defective, rejected_parts(scores, thresholds, reject_ids))
    logger.debug("chose thresholds %s: recall %s, FRR %s", thresholds.tolist(), final.recall, final.false_reject_rate)
    return Thresholds(
        conf={name: float(value) for name, value in zip(class_names, thresholds)},
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


def write_thresholds_yaml(path: Path | str, thresholds: Thresholds) -> Path:
    """Write thresholds.yaml (the file the inspection station loads); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(thresholds.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _optional_rate(data: dict, key: str, path: Path) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise FormatError(path, f"achieved.{key} must be a number in [0, 1] or null, got {value!r}")
    return float(value)


def read_thresholds_yaml(path: Path | str) -> Thresholds:
    """Read a thresholds.yaml written by :func:`write_thresholds_yaml` (or by hand: only ``conf`` is required)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"thresholds file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise FormatError(path, f"not valid YAML: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("conf"), dict) or not data["conf"]:
        raise FormatError(path, "expected a mapping with 'conf: {class_name: threshold, ...}'")
    conf: dict[str, float] = {}
    for name, value in data["conf"].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise FormatError(path, f"threshold for {name!r} must be a number in [0, 1], got {value!r}", where="conf")
        conf[str(name)] = float(value)
    achieved = data.get("achieved") or {}
    if not isinstance(achieved, dict):
        raise FormatError(path, "'achieved' must be a mapping of recall, escape_rate, false_reject_rate")
    reject = data.get("reject_classes")
    if reject is not None and (not isinstance(reject, list) or not all(isinstance(x, str) for x in reject)):
        raise FormatError(path, "'reject_classes' must be a list of class names")
    target = data.get("target_recall")
    if target is not None and (not isinstance(target, (int, float)) or not 0 < target <= 1):
        raise FormatError(path, f"'target_recall' must be a number in (0, 1], got {target!r}")
    return Thresholds(
        conf=conf,
        target_recall=float(target) if target is not None else None,
        target_reached=bool(data.get("target_reached", True)),
        recall=_optional_rate(achieved, "recall", path),
        escape_rate=_optional_rate(achieved, "escape_rate", path),
        false_reject_rate=_optional_rate(achieved, "false_reject_rate", path),
        reject_classes=list(reject) if reject is not None else list(conf),
        per_class=bool(data.get("per_class", False)),
        split=data.get("split"),
        model=data.get("model"),
        notes=[str(note) for note in data.get("notes") or []],
    )
