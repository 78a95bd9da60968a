"""Which detections count as defects at the station: class, per-class confidence, size, region.

The confidence rule is the one the evaluator uses (``confidence >= threshold`` of the box's class),
so thresholds chosen by ``yolodefect eval --target-recall`` mean the same thing here.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from yolodefect.detections import Detections
from yolodefect.errors import UsageError

logger = logging.getLogger(__name__)

ClassNames = Mapping[int, str] | Sequence[str]


def names_dict(class_names: ClassNames) -> dict[int, str]:
    """Class names as ``{id: name}`` whether given as a list (Ultralytics datasets) or a dict (Ultralytics models)."""
    if isinstance(class_names, Mapping):
        return {int(k): str(v) for k, v in class_names.items()}
    return {i: str(name) for i, name in enumerate(class_names)}


def class_name(names: Mapping[int, str], class_id: int) -> str:
    # A model with more outputs than named classes still gets a printable, stable label.
    return names.get(int(class_id), str(int(class_id)))


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class RejectRules:
    """The defects that make a part a reject.

    Attributes:
        reject_classes: class names that reject; None means every class.
        conf_thresholds: per-class minimum confidence (from thresholds.yaml); other classes use ``default_conf``.
        default_conf: minimum confidence for classes without their own threshold.
        min_box_area_px: boxes smaller than this (width x height, pixels of the frame) are ignored.
        roi_polygon: only boxes whose centre lies inside (or on the edge of) this polygon count.
    """

    reject_classes: frozenset[str] | None = None
    conf_thresholds: Mapping[str, float] = field(default_factory=dict)
    default_conf: float = 0.25
    min_box_area_px: float = 0.0
    roi_polygon: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        if self.reject_classes is not None:
            object.__setattr__(self, "reject_classes", frozenset(str(c) for c in self.reject_classes))
            if not self.reject_classes:
                raise UsageError("reject classes are empty: name at least one class, or leave it unset for all classes")
        object.__setattr__(self, "conf_thresholds", {str(k): float(v) for k, v in dict(self.conf_thresholds).items()})
        for name, value in {**self.conf_thresholds, "default": self.default_conf}.items():
            if not 0.0 <= float(value) <= 1.0:
                raise UsageError(f"confidence threshold for {name!r} must lie in [0, 1], got {value}")
        if self.min_box_area_px < 0:
            raise UsageError(f"min box area must be >= 0 pixels, got {self.min_box_area_px}")
        if self.roi_polygon is not None:
            points = tuple((float(x), float(y)) for x, y in self.roi_polygon)
            if len(points) < 3:
                raise UsageError(f"the ROI polygon needs at least 3 points (x, y), got {len(points)}")
            object.__setattr__(self, "roi_polygon", points)

    def threshold(self, name: str) -> float:
        return float(self.conf_thresholds.get(name, self.default_conf))

    def min_threshold(self) -> float:
        """The lowest confidence any rule accepts: the model must not discard boxes below it."""
        return min([self.default_conf, *self.conf_thresholds.values()])

    def check_classes(self, class_names: ClassNames) -> None:
        """Fail before the line starts when a rule names a class the model does not have.

        A typo in a reject class would otherwise never match, and the station would pass every part.
        """
        known = sorted(set(names_dict(class_names).values()))
        named = set(self.reject_classes or ()) | set(self.conf_thresholds)
        for name in sorted(named - set(known)):
            raise UsageError(
                f"class {name!r} in the reject rules is not a class of the model{_suggest(name, known)}; "
                f"the model's classes are: {', '.join(known)}"
            )

    def mask(self, detections: Detections, class_names: ClassNames) -> np.ndarray:
        """(N,) True for the detections that count as defects."""
        n = len(detections)
        if n == 0:
            return np.zeros(0, dtype=bool)
        names = names_dict(class_names)
        labels = [class_name(names, c) for c in detections.class_id.tolist()]
        thresholds = np.array([self.threshold(label) for label in labels], dtype=np.float32)
        keep = detections.confidence >= thresholds
        if self.reject_classes is not None:
            keep &= np.array([label in self.reject_classes for label in labels], dtype=bool)
        if self.min_box_area_px > 0:
            wh = np.clip(detections.xyxy[:, 2:4] - detections.xyxy[:, 0:2], 0, None)
            keep &= (wh[:, 0] * wh[:, 1]) >= self.min_box_area_px
        if self.roi_polygon is not None:
            keep &= centres_in_polygon(detections.xyxy, self.roi_polygon)
        return keep

    def apply(self, detections: Detections, class_names: ClassNames) -> Detections:
        """The detections that count as defects (a new Detections; tracker ids kept)."""
        return detections.filter(self.mask(detections, class_names))


def centres_in_polygon(xyxy: np.ndarray, polygon: Sequence[tuple[float, float]]) -> np.ndarray:
    """(N,) True where the box centre is inside the polygon or on its edge."""
    contour = np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2)
    centres = (xyxy[:, 0:2] + xyxy[:, 2:4]) / 2.0
    return np.array(
        [cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in centres], dtype=bool
    )


@dataclass(frozen=True)
class ThresholdsFile:
    """What the station takes from a thresholds.yaml."""

    conf: dict[str, float]
    reject_classes: list[str]
    target_reached: bool


def load_thresholds(path: Path | str) -> ThresholdsFile:
    """Read the ``conf: {class: threshold}`` file written by ``yolodefect eval --target-recall`` (or by hand)."""
    from yolodefect.evaluation.thresholds import read_thresholds_yaml  # one parser for the file format

    data = read_thresholds_yaml(path)
    if not data.target_reached:
        logger.warning(
            "thresholds in %s did not reach their target recall on the evaluation split; "
            "the station may pass defective parts (see its 'achieved' section)", path,
        )
    return ThresholdsFile(conf=dict(data.conf), reject_classes=list(data.reject_classes), target_reached=data.target_reached)
