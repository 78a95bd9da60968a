"""Choosing operating thresholds on constructed splits whose optimum is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yolodefect.detections import Detections
from yolodefect.errors import FormatError, UsageError
from yolodefect.evaluation import GroundTruth, choose_thresholds, evaluate_detections
from yolodefect.inference.thresholds_file import read_thresholds_yaml, write_thresholds_yaml
from yolodefect.evaluation.decisions import NO_GOOD_PARTS

NAMES = ["scratch", "dent"]
BOX = [10.0, 10.0, 40.0, 40.0]


def part(defect: int | None, scores: dict[int, float], index: int) -> tuple[GroundTruth, Detections]:
    """One part: a ground-truth box of class ``defect`` (None: good) and one detection per scored class."""
    gt = GroundTruth(
        Path(f"{index}.png"), (64, 64), [BOX] if defect is not None else np.zeros((0, 4)),
        [defect] if defect is not None else [],
    )
    classes = list(scores)
    if not classes:
        return gt, Detections.empty()
    detections = Detections([BOX] * len(classes), [scores[c] for c in classes], classes)
    return gt, detections


def split(parts: list[tuple[int | None, dict[int, float]]]) -> tuple[list[GroundTruth], list[Detections]]:
    built = [part(defect, scores, i) for i, (defect, scores) in enumerate(parts)]
    return [b[0] for b in built], [b[1] for b in built]


# Defective parts score 0.9, 0.8, 0.7, 0.4; good parts 0.6, 0.3 and 0.2.
GLOBAL_CASE = [
    (0, {0: 0.9}), (0, {0: 0.8}), (1, {1: 0.7}), (1, {1: 0.4}),
    (None, {0: 0.6}), (None, {1: 0.3}), (None, {0: 0.2}),
]


def test_global_threshold_known_optimum():
    gt, preds = split(GLOBAL_CASE)
    # Recall 3/4: the best score catching 3 defective parts is 0.7, which rejects no good part. Every
    # threshold in (0.6, 0.7] does the same on this split; the chosen one is the middle, 0.65.
    t = choose_thresholds(gt, preds, NAMES, target_recall=0.75)
    assert t.target_reached and t.conf == {"scratch": pytest.approx(0.65), "dent": pytest.approx(0.65)}
    assert (t.recall, t.escape_rate, t.false_reject_rate) == (0.75, 0.25, 0.0)
    # Recall 1 needs 0.4, which also rejects the good part at 0.6: interval (0.3, 0.4] -> 0.35.
    t = choose_thresholds(gt, preds, NAMES, target_recall=1.0)
    assert t.conf["scratch"] == pytest.approx(0.35)
    assert (t.recall, t.false_reject_rate) == (1.0, pytest.approx(1 / 3))
    # The evaluator agrees with what the chooser says it achieved.
    m = evaluate_detections(gt, preds, NAMES, conf_thresholds=t.conf)
    assert (m.decisions.recall, m.decisions.false_reject_rate) == (t.recall, t.false_reject_rate)


def test_unreachable_target_picks_lowest_threshold_and_says_so():
    gt, preds = split([(0, {0: 0.9}), (1, {}), (None, {0: 0.5}), (None, {0: 0.2})])
    t = choose_thresholds(gt, preds, NAMES, target_recall=0.99)
    assert not t.target_reached
    assert t.conf == {"scratch": pytest.approx(0.2), "dent": pytest.approx(0.2)}
    assert t.recall == 0.5
    assert any("cannot be reached" in note and "1 of 2 defective" in note for note in t.notes)


def test_per_class_thresholds_beat_global():
    gt, preds = split([
        (0, {0: 0.9}), (0, {0: 0.85}), (1, {1: 0.5}),
        (None, {0: 0.6}), (None, {1: 0.3}),
    ])
    # One global threshold must be <= 0.5 for the dent part, so the 0.6 scratch on a good part is rejected.
    global_t = choose_thresholds(gt, preds, NAMES, target_recall=1.0)
    assert global_t.false_reject_rate == 0.5
    # Raising scratch alone to 0.85 keeps recall 1 and rejects no good part.
    t = choose_thresholds(gt, preds, NAMES, target_recall=1.0, per_class=True)
    assert t.per_class and t.target_reached
    assert (t.recall, t.false_reject_rate) == (1.0, 0.0)
    # Middles of the equivalent intervals: scratch (0.6, 0.85], dent (0.3, 0.5].
    assert t.conf == {"scratch": pytest.approx(0.725), "dent": pytest.approx(0.4)}
    m = evaluate_detections(gt, preds, NAMES, conf_thresholds=t.conf)
    assert (m.decisions.escapes, m.decisions.false_rejects) == (0, 0)


def test_without_good_parts_takes_the_highest_threshold_reaching_target():
    gt, preds = split([(0, {0: 0.9}), (0, {0: 0.8}), (1, {1: 0.3})])
    t = choose_thresholds(gt, preds, NAMES, target_recall=0.6)
    assert t.conf["scratch"] == pytest.approx(0.55)  # 2 of 3 needs 0.8; (0.3, 0.8] -> 0.55
    assert t.false_reject_rate is None and any(NO_GOOD_PARTS in note for note in t.notes)


def test_no_defective_parts_is_an_error():
    gt, preds = split([(None, {0: 0.5})])
    with pytest.raises(UsageError, match="no defective images"):
        choose_thresholds(gt, preds, NAMES)


def test_reject_classes_limit_the_search():
    gt, preds = split([(0, {0: 0.9}), (1, {1: 0.2}), (None, {1: 0.95})])
    # Dents do not reject: the dent part counts as good and dent detections never reject.
    t = choose_thresholds(gt, preds, NAMES, target_recall=1.0, reject_classes=["scratch"])
    assert t.reject_classes == ["scratch"] and (t.recall, t.false_reject_rate) == (1.0, 0.0)


def test_yaml_round_trip(tmp_path):
    gt, preds = split(GLOBAL_CASE)
    t = choose_thresholds(gt, preds, NAMES, target_recall=0.75, split="val", model="best.pt")
    path = write_thresholds_yaml(tmp_path / "thresholds.yaml", t)
    text = path.read_text()
    assert text.startswith("conf:\n  scratch: ") and "achieved:" in text and "model: best.pt" in text
    assert read_thresholds_yaml(path) == t


def test_yaml_by_hand_and_errors(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("conf: {scratch: 0.3, dent: 0.5}\n")
    t = read_thresholds_yaml(path)
    assert t.conf == {"scratch": 0.3, "dent": 0.5} and t.reject_classes == ["scratch", "dent"]
    assert t.target_recall is None
    path.write_text("conf: {scratch: 1.5}\n")
    with pytest.raises(FormatError, match="scratch"):
        read_thresholds_yaml(path)
    path.write_text("thresholds: 0.3\n")
    with pytest.raises(FormatError, match="conf"):
        read_thresholds_yaml(path)
    with pytest.raises(UsageError, match="does not exist"):
        read_thresholds_yaml(tmp_path / "missing.yaml")


def test_the_sweep_counts_every_threshold_at_once_as_part_rates_counts_one() -> None:
    """The search's vectorised sweep (calibrate runs it thousands of times) gives exactly part_rates' numbers."""
    from yolodefect.evaluation.decisions import part_rates
    from yolodefect.evaluation.thresholds import _sweep_options

    rng = np.random.default_rng(7)
    for _ in range(50):
        count = int(rng.integers(1, 60))
        column = np.round(rng.random(count) * (rng.random(count) < 0.7), 2)
        rejected_anyway = rng.random(count) < 0.2
        defective = rng.random(count) < rng.random()
        values = np.unique(np.concatenate([[0.0], column]))
        for value, recall, frr in _sweep_options(values, column, rejected_anyway, defective):
            rates = part_rates(defective, rejected_anyway | (column >= value))
            assert recall == (rates.recall if rates.recall is not None else 0.0)
            assert frr == rates.false_reject_rate
