"""Which detections count as defects, and so which parts are rejected: the one rule of ``eval`` and ``watch``.

A detection counts when its class is a reject class, its confidence reaches its class's threshold
(``confidence >= threshold``), its box is at least ``min_box_area_px`` square pixels, and its centre
lies inside the ROI polygon (edges included). A part is rejected when any detection on it counts.
``yolodefect eval`` scores its decisions with these rules and ``yolodefect watch`` makes its
decisions with them, so thresholds chosen by ``eval --target-recall`` mean the same thing at the line.

Sizes and the ROI are in frame pixels: they mean the same in eval only when eval's images are the
station's frames (same camera, same resolution, not tiles).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.inference.names import ClassNames, class_name, names_dict
from yolodefect.inference.thresholds_file import Thresholds

logger = logging.getLogger(__name__)

# Confidence a detection needs when nothing sets its class's own threshold (Ultralytics' predict default).
DEFAULT_CONF = 0.25

Polygon = tuple[tuple[float, float], ...]


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_conf(value: float, what: str) -> float:
    """A confidence threshold in [0, 1]; ``what`` names it in the error (e.g. "for class 'pit'", "(conf)")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise UsageError(f"confidence threshold {what} must lie in [0, 1], got {value!r}")
    return float(value)


def parse_roi(value: Any) -> Polygon:
    """An ROI polygon from ``'x,y x,y x,y'`` (or ``;``-separated, the CLI form) or a list of ``[x, y]`` pairs."""
    points: Any = value
    if isinstance(value, str):
        points = [pair.split(",") for pair in value.replace(";", " ").split()]
    try:
        polygon = tuple((float(x), float(y)) for x, y in points)
    except (TypeError, ValueError):
        raise UsageError(
            f"the ROI must be a list of [x, y] points in frame pixels (or 'x,y x,y x,y'), got {value!r}"
        ) from None
    if len(polygon) < 3:
        raise UsageError(f"the ROI polygon needs at least 3 points (x, y), got {len(polygon)}: {value!r}")
    return polygon


def centres_in_polygon(xyxy: np.ndarray, polygon: Sequence[tuple[float, float]]) -> np.ndarray:
    """(N,) True where the box centre is inside the polygon or on its edge."""
    contour = np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2)
    centres = (xyxy[:, 0:2] + xyxy[:, 2:4]) / 2.0
    return np.array(
        [cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in centres], dtype=bool
    )


@dataclass(frozen=True)
class RejectRules:
    """The defects that make a part a reject.

    Attributes:
        reject_classes: class names that reject; None means every class.
        conf_thresholds: per-class minimum confidence (e.g. from thresholds.yaml); other classes use ``default_conf``.
        default_conf: minimum confidence for classes without their own threshold.
        min_box_area_px: boxes smaller than this (width x height, pixels of the frame) are ignored.
        roi_polygon: only boxes whose centre lies inside (or on the edge of) this polygon count.
    """

    reject_classes: frozenset[str] | None = None
    conf_thresholds: Mapping[str, float] = field(default_factory=dict)
    default_conf: float = DEFAULT_CONF
    min_box_area_px: float = 0.0
    roi_polygon: Polygon | None = None

    def __post_init__(self) -> None:
        if self.reject_classes is not None:
            if isinstance(self.reject_classes, str):  # one class name, not its letters
                object.__setattr__(self, "reject_classes", (self.reject_classes,))
            object.__setattr__(self, "reject_classes", frozenset(str(c) for c in self.reject_classes))
            if not self.reject_classes:
                raise UsageError(
                    "the reject classes are empty: name at least one class that makes a part a reject "
                    "(or leave them unset: every class rejects)"
                )
        conf = {str(k): check_conf(v, f"for class {str(k)!r}") for k, v in dict(self.conf_thresholds).items()}
        object.__setattr__(self, "conf_thresholds", conf)
        object.__setattr__(self, "default_conf", check_conf(self.default_conf, "(conf)"))
        area = self.min_box_area_px
        if isinstance(area, bool) or not isinstance(area, (int, float)) or not area >= 0:
            raise UsageError(f"min box area must be >= 0 pixels, got {area!r}")
        object.__setattr__(self, "min_box_area_px", float(area))
        if self.roi_polygon is not None:
            object.__setattr__(self, "roi_polygon", parse_roi(self.roi_polygon))

    @classmethod
    def per_class(
        cls,
        class_names: ClassNames,
        conf: Mapping[str, float] | float,
        reject_classes: Sequence[str] | set[str] | None = None,
    ) -> RejectRules:
        """Rules from one threshold for every class, or one per class name (then every class needs one).

        A per-class mapping has nothing to fall back on for a class it leaves out, so a missing or
        unknown name is an error rather than a silent default.
        """
        names = list(names_dict(class_names).values())
        if not isinstance(conf, Mapping):
            return cls(reject_classes=_as_set(reject_classes), default_conf=conf)
        missing = [name for name in names if name not in conf]
        unknown = sorted(set(conf) - set(names))
        if missing or unknown:
            raise UsageError(
                "the confidence thresholds do not fit the classes: "
                + (f"missing {missing}; " if missing else "")
                + (f"unknown {unknown}; " if unknown else "")
                + f"expected one threshold for each of {names}"
            )
        return cls(reject_classes=_as_set(reject_classes), conf_thresholds=conf)

    def threshold(self, name: str) -> float:
        return float(self.conf_thresholds.get(name, self.default_conf))

    def min_threshold(self) -> float:
        """The lowest confidence any rule accepts: the model must not discard boxes below it."""
        return min([self.default_conf, *self.conf_thresholds.values()])

    def rejects_class(self, name: str) -> bool:
        return self.reject_classes is None or name in self.reject_classes

    def check_classes(self, class_names: ClassNames, owner: str = "model") -> None:
        """Fail before any work when a rule names a class that ``owner`` (the model, the dataset) lacks.

        A typo in a reject class would otherwise never match, and the station would pass every part.
        """
        known = sorted(set(names_dict(class_names).values()))
        named = set(self.reject_classes or ()) | set(self.conf_thresholds)
        for name in sorted(named - set(known)):
            raise UsageError(
                f"class {name!r} in the reject rules is not a class of the {owner}{_suggest(name, known)}; "
                f"the {owner}'s classes are: {', '.join(known)}"
            )

    def reject_ids(self, class_names: ClassNames) -> list[int]:
        """Class ids whose detections can reject a part, in id order."""
        return [k for k, name in sorted(names_dict(class_names).items()) if self.rejects_class(name)]

    def eligible_mask(self, detections: Detections) -> np.ndarray:
        """(N,) True for boxes the rules look at at all: large enough and centred inside the ROI."""
        keep = np.ones(len(detections), dtype=bool)
        if len(detections) == 0:
            return keep
        if self.min_box_area_px > 0:
            wh = np.clip(detections.xyxy[:, 2:4] - detections.xyxy[:, 0:2], 0, None)
            keep &= (wh[:, 0] * wh[:, 1]) >= self.min_box_area_px
        if self.roi_polygon is not None:
            keep &= centres_in_polygon(detections.xyxy, self.roi_polygon)
        return keep

    def _class_rules(self, detections: Detections, class_names: ClassNames) -> tuple[np.ndarray, np.ndarray]:
        """Per detection: its class's threshold (float32) and whether its class rejects; looked up once per class."""
        names = names_dict(class_names)
        ids, inverse = np.unique(detections.class_id, return_inverse=True)
        labels = [class_name(names, c) for c in ids.tolist()]
        inverse = inverse.reshape(-1)
        thresholds = np.array([self.threshold(label) for label in labels], dtype=np.float32)[inverse]
        rejecting = np.array([self.rejects_class(label) for label in labels], dtype=bool)[inverse]
        return thresholds, rejecting

    def confident_mask(self, detections: Detections, class_names: ClassNames) -> np.ndarray:
        """(N,) eligible boxes reaching their class's threshold, whatever the class (eval's P/R/F1 count these)."""
        if len(detections) == 0:
            return np.zeros(0, dtype=bool)
        thresholds, _ = self._class_rules(detections, class_names)
        # float32 on both sides: the decision at a boundary is the same wherever it is computed.
        return (detections.confidence.astype(np.float32) >= thresholds) & self.eligible_mask(detections)

    def mask(self, detections: Detections, class_names: ClassNames) -> np.ndarray:
        """(N,) True for the detections that count as defects."""
        if len(detections) == 0:
            return np.zeros(0, dtype=bool)
        thresholds, rejecting = self._class_rules(detections, class_names)
        confident = detections.confidence.astype(np.float32) >= thresholds
        return confident & rejecting & self.eligible_mask(detections)

    def apply(self, detections: Detections, class_names: ClassNames) -> Detections:
        """The detections that count as defects (a new Detections; tracker ids kept)."""
        return detections.filter(self.mask(detections, class_names))

    def rejects(self, detections: Detections, class_names: ClassNames) -> bool:
        """The part decision: True when any detection on the part counts as a defect."""
        return bool(self.mask(detections, class_names).any())

    def to_dict(self) -> dict:
        return {
            "reject_classes": sorted(self.reject_classes) if self.reject_classes is not None else None,
            "conf_thresholds": dict(self.conf_thresholds),
            "default_conf": self.default_conf,
            "min_box_area_px": self.min_box_area_px,
            "roi_polygon": [list(point) for point in self.roi_polygon] if self.roi_polygon is not None else None,
        }


def _as_set(reject_classes: Sequence[str] | set[str] | None) -> frozenset[str] | None:
    if reject_classes is None:
        return None
    return frozenset([reject_classes] if isinstance(reject_classes, str) else reject_classes)


def build_reject_rules(
    *,
    thresholds: Thresholds | None = None,
    conf: float = DEFAULT_CONF,
    class_conf: Mapping[str, float] | None = None,
    reject_classes: Sequence[str] | set[str] | None = None,
    min_box_area_px: float = 0.0,
    roi_polygon: Any = None,
) -> RejectRules:
    """The rules from the settings ``eval`` and ``watch`` share, resolved the same way for both.

    Per-class thresholds come from the thresholds file, then ``class_conf`` overrides; every other
    class uses ``conf``. Reject classes default to the file's, else every class.
    """
    per_class: dict[str, float] = {}
    if thresholds is not None:
        per_class.update(thresholds.conf)
        if reject_classes is None:
            reject_classes = thresholds.reject_classes
    per_class.update(class_conf or {})
    return RejectRules(
        reject_classes=_as_set(reject_classes),
        conf_thresholds=per_class,
        default_conf=conf,
        min_box_area_px=min_box_area_px,
        roi_polygon=roi_polygon,
    )
