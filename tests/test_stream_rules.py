"""Reject rules: per-class confidence, reject classes, min area, ROI, thresholds.yaml, class-name checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.stream.rules import RejectRules, load_thresholds

NAMES = ["scratch", "pit", "inclusion", "patch"]


def make_detections(*rows: tuple[str, float, tuple[float, float, float, float]], track_ids: list[int] | None = None) -> Detections:
    """Detections from (class name, confidence, xyxy) rows."""
    if not rows:
        return Detections.empty()
    return Detections(
        xyxy=np.array([r[2] for r in rows], dtype=np.float32),
        confidence=np.array([r[1] for r in rows], dtype=np.float32),
        class_id=np.array([NAMES.index(r[0]) for r in rows]),
        tracker_id=None if track_ids is None else np.array(track_ids),
    )


BOX = (10.0, 10.0, 30.0, 30.0)  # 20 x 20 = 400 px, centre (20, 20)


@pytest.mark.parametrize(
    ("rules", "row", "counts"),
    [
        (RejectRules(), ("scratch", 0.25, BOX), True),  # default conf, >= is inclusive
        (RejectRules(), ("scratch", 0.24, BOX), False),
        (RejectRules(conf_thresholds={"scratch": 0.6}), ("scratch", 0.59, BOX), False),
        (RejectRules(conf_thresholds={"scratch": 0.6}), ("scratch", 0.6, BOX), True),
        (RejectRules(conf_thresholds={"scratch": 0.6}), ("pit", 0.3, BOX), True),  # other classes: default_conf
        (RejectRules(conf_thresholds={"pit": 0.1}, default_conf=0.5), ("pit", 0.15, BOX), True),
        (RejectRules(reject_classes=frozenset({"pit"})), ("scratch", 0.99, BOX), False),
        (RejectRules(reject_classes=frozenset({"pit"})), ("pit", 0.99, BOX), True),
        (RejectRules(min_box_area_px=400), ("pit", 0.9, BOX), True),
        (RejectRules(min_box_area_px=401), ("pit", 0.9, BOX), False),
        (RejectRules(roi_polygon=((0, 0), (50, 0), (50, 50), (0, 50))), ("pit", 0.9, BOX), True),
        (RejectRules(roi_polygon=((25, 0), (50, 0), (50, 50), (25, 50))), ("pit", 0.9, BOX), False),  # centre x=20
        (RejectRules(roi_polygon=((20, 0), (50, 0), (50, 50), (20, 50))), ("pit", 0.9, BOX), True),  # on the edge
        (RejectRules(roi_polygon=((0, 0), (100, 0), (0, 100))), ("pit", 0.9, (60, 60, 80, 80)), False),  # triangle
    ],
)
def test_one_rule(rules: RejectRules, row: tuple, counts: bool) -> None:
    mask = rules.mask(make_detections(row), NAMES)
    assert mask.tolist() == [counts]


def test_apply_keeps_order_and_tracker_ids() -> None:
    detections = make_detections(
        ("scratch", 0.9, BOX), ("pit", 0.1, BOX), ("patch", 0.8, (0, 0, 2, 2)), ("inclusion", 0.7, BOX),
        track_ids=[7, 8, 9, 10],
    )
    kept = RejectRules(min_box_area_px=10).apply(detections, NAMES)
    assert kept.tracker_id.tolist() == [7, 10]
    assert kept.class_id.tolist() == [0, 2]


def test_empty_detections() -> None:
    assert len(RejectRules(roi_polygon=((0, 0), (1, 0), (1, 1)), min_box_area_px=5).apply(Detections.empty(), NAMES)) == 0


def test_class_names_as_dict_and_unknown_ids() -> None:
    detections = Detections(np.array([BOX, BOX]), np.array([0.9, 0.9]), np.array([1, 9]))
    rules = RejectRules(reject_classes=frozenset({"pit", "9"}))
    assert rules.mask(detections, {0: "scratch", 1: "pit"}).tolist() == [True, True]


def test_min_threshold() -> None:
    assert RejectRules(conf_thresholds={"pit": 0.05}, default_conf=0.3).min_threshold() == pytest.approx(0.05)
    assert RejectRules(default_conf=0.3).min_threshold() == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"conf_thresholds": {"pit": 1.5}}, "[0, 1]"),
        ({"default_conf": -0.1}, "[0, 1]"),
        ({"min_box_area_px": -1}, "min box area"),
        ({"roi_polygon": ((0, 0), (1, 1))}, "3 points"),
        ({"reject_classes": frozenset()}, "empty"),
    ],
)
def test_invalid_rules(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RejectRules(**kwargs)


def test_misspelt_class_is_caught_with_a_suggestion() -> None:
    with pytest.raises(UsageError, match="did you mean 'scratch'"):
        RejectRules(reject_classes=frozenset({"scrach"})).check_classes(NAMES)
    with pytest.raises(UsageError, match="'dent'"):
        RejectRules(conf_thresholds={"dent": 0.5}).check_classes(NAMES)
    RejectRules(reject_classes=frozenset({"pit"}), conf_thresholds={"patch": 0.4}).check_classes(NAMES)


def test_load_thresholds_file(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump({"conf": {"scratch": 0.4, "pit": 0.2}, "reject_classes": ["pit"],
                                    "target_reached": True}))
    loaded = load_thresholds(path)
    assert loaded.conf == {"scratch": 0.4, "pit": 0.2}
    assert loaded.reject_classes == ["pit"]


def test_load_thresholds_hand_written_and_bad(tmp_path: Path) -> None:
    good = tmp_path / "t.yaml"
    good.write_text("conf:\n  scratch: 0.5\n")
    assert load_thresholds(good).reject_classes == ["scratch"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("conf:\n  scratch: 2\n")
    with pytest.raises(Exception, match="scratch"):
        load_thresholds(bad)
    with pytest.raises(UsageError, match="does not exist"):
        load_thresholds(tmp_path / "missing.yaml")
