"""The reject rules eval and watch share: per-class confidence, reject classes, min area, ROI, thresholds.yaml, class-name checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.inference.rules import RejectRules, build_reject_rules
from yolodefect.inference.thresholds_file import read_thresholds_yaml
from tests import builders

NAMES = ["scratch", "pit", "inclusion", "patch"]


def from_rows(*rows: tuple[str, float, tuple[float, float, float, float]], track_ids: list[int] | None = None) -> Detections:
    """Detections from (class name, confidence, xyxy) rows."""
    return builders.detections([r[2] for r in rows], [r[1] for r in rows], [r[0] for r in rows], names=NAMES, track_ids=track_ids)


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
    mask = rules.mask(from_rows(row), NAMES)
    assert mask.tolist() == [counts]


def test_apply_keeps_order_and_tracker_ids() -> None:
    detections = from_rows(
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
    loaded = read_thresholds_yaml(path)
    assert loaded.conf == {"scratch": 0.4, "pit": 0.2}
    assert loaded.reject_classes == ["pit"]


def test_load_thresholds_hand_written_and_bad(tmp_path: Path) -> None:
    good = tmp_path / "t.yaml"
    good.write_text("conf:\n  scratch: 0.5\n")
    assert read_thresholds_yaml(good).reject_classes == ["scratch"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("conf:\n  scratch: 2\n")
    with pytest.raises(Exception, match="scratch"):
        read_thresholds_yaml(bad)
    with pytest.raises(UsageError, match="does not exist"):
        read_thresholds_yaml(tmp_path / "missing.yaml")


def test_confident_mask_ignores_the_reject_classes_but_not_size_or_roi() -> None:
    """Eval's P/R/F1 count every class at its threshold, but only boxes the station could see."""
    rules = RejectRules(reject_classes=frozenset({"pit"}), default_conf=0.5, min_box_area_px=100,
                        roi_polygon=((0, 0), (50, 0), (50, 50), (0, 50)))
    detections = from_rows(("scratch", 0.9, BOX), ("pit", 0.9, BOX), ("pit", 0.9, (10, 10, 15, 15)),
                                 ("pit", 0.9, (60, 60, 80, 80)), ("pit", 0.4, BOX))
    assert rules.eligible_mask(detections).tolist() == [True, True, False, False, True]
    assert rules.confident_mask(detections, NAMES).tolist() == [True, True, False, False, False]
    assert rules.mask(detections, NAMES).tolist() == [False, True, False, False, False]
    assert rules.rejects(detections, NAMES) and not rules.rejects(detections.filter(np.array([1, 0, 1, 1, 1], bool)), NAMES)
    assert rules.reject_ids(NAMES) == [1]


def test_build_reject_rules_resolves_file_overrides_and_default(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"conf": {"scratch": 0.4, "pit": 0.2}, "reject_classes": ["pit"]}))
    rules = build_reject_rules(thresholds=read_thresholds_yaml(path), conf=0.6, class_conf={"pit": 0.3},
                               min_box_area_px=9, roi_polygon="0,0 10,0 10,10")
    assert rules.conf_thresholds == {"scratch": 0.4, "pit": 0.3} and rules.threshold("patch") == 0.6
    assert rules.reject_classes == frozenset({"pit"}) and rules.roi_polygon == ((0, 0), (10, 0), (10, 10))
    assert build_reject_rules(thresholds=read_thresholds_yaml(path), reject_classes=["scratch"]).reject_classes == {"scratch"}
    assert build_reject_rules().reject_classes is None


def test_per_class_rules_need_every_class() -> None:
    with pytest.raises(UsageError, match="missing \\['inclusion', 'patch'\\]"):
        RejectRules.per_class(NAMES, {"scratch": 0.3, "pit": 0.3})
    assert RejectRules.per_class(NAMES, 0.4, ["pit"]).threshold("patch") == pytest.approx(0.4)
