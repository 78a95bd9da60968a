"""The evaluator on hand-built cases whose right answers are known exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yolodefect.adapters import from_ultralytics
from yolodefect.detections import Detections
from yolodefect.errors import FormatError, UsageError
from yolodefect.evaluate import evaluate
from yolodefect.evaluation import GroundTruth, evaluate_detections, load_ground_truth
from yolodefect.evaluation.decisions import NO_GOOD_PARTS
from yolodefect.evaluation.matching import box_iou, greedy_match
from yolodefect.data.yolo_dataset import load_data_config
from tests.builders import detections

NAMES = ["scratch", "dent"]
SCRATCH, DENT = 0, 1
# AP is Ultralytics' (what `yolo val` and training logs print): its precision envelope falls to 0 at the
# recall reached and is interpolated linearly over 101 recall points, so recall 1/2 at precision 1 scores
# 0.495 and a perfect ranking 0.995 (COCO's step interpolation: 51/101 and 1.0, kept as coco_map50).
AP_HALF_RECALL = 0.495
AP_PERFECT = 0.995


def truth(name: str, boxes: list[list[float]] | None = None, classes: list[int] | None = None) -> GroundTruth:
    xyxy = np.array(boxes or [], dtype=float).reshape(-1, 4)
    return GroundTruth(Path(f"{name}.png"), (100, 100), xyxy, classes or [])


def as_predictions(ground_truth: list[GroundTruth]) -> list[Detections]:
    return [Detections(t.xyxy, np.ones(len(t)), t.class_id) for t in ground_truth]


A = [10, 10, 30, 30]
B = [50, 50, 90, 70]
C = [60, 10, 90, 40]


@pytest.fixture
def split() -> list[GroundTruth]:
    """Two defective parts with three boxes, and two good parts."""
    return [
        truth("a", [A, B], [SCRATCH, DENT]),
        truth("b", [C], [SCRATCH]),
        truth("good1"),
        truth("good2"),
    ]


# --- Detections container -------------------------------------------------------------------------


def test_detections_validates_and_filters():
    d = Detections([[0, 0, 1, 1], [1, 1, 2, 2]], [0.9, 0.1], [0, 1])
    assert d.xyxy.dtype == np.float32 and d.class_id.dtype == np.int64 and len(d) == 2
    kept = d.filter(d.confidence > 0.5)
    assert len(kept) == 1 and kept.class_id.tolist() == [0]
    assert len(d[np.array([False, False])]) == 0
    assert len(d[1]) == 1 and d[1].confidence[0] == pytest.approx(0.1)
    assert len(Detections.empty()) == 0
    assert Detections([], [], []).xyxy.shape == (0, 4)
    with pytest.raises(ValueError, match="array lengths"):
        Detections([[0, 0, 1, 1]], [0.5, 0.6], [0])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        Detections([[0, 0, 1]], [0.5], [0])
    with pytest.raises(ValueError, match="whole numbers"):
        Detections([[0, 0, 1, 1]], [0.5], [0.5])


def test_from_ultralytics_results():
    from ultralytics.engine.results import Results

    boxes = torch.tensor([[1.0, 2.0, 30.0, 40.0, 0.8, 1.0], [5.0, 5.0, 9.0, 9.0, 0.3, 0.0]])
    result = Results(np.zeros((50, 60, 3), np.uint8), path="x.png", names={0: "scratch", 1: "dent"}, boxes=boxes)
    d = from_ultralytics(result)
    assert d.xyxy.tolist() == [[1, 2, 30, 40], [5, 5, 9, 9]]
    assert d.confidence.tolist() == pytest.approx([0.8, 0.3])
    assert d.class_id.tolist() == [1, 0] and d.tracker_id is None
    empty = Results(np.zeros((5, 5, 3), np.uint8), path="y.png", names={0: "a"}, boxes=torch.zeros((0, 6)))
    assert len(from_ultralytics(empty)) == 0
    with pytest.raises(UsageError, match="no boxes"):
        from_ultralytics(Results(np.zeros((5, 5, 3), np.uint8), path="z.png", names={0: "a"}))


# --- matching ------------------------------------------------------------------------------------


def test_box_iou_and_greedy_match():
    iou = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert iou[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0])
    # Two detections on one box: the more confident claims it, the other stays unmatched.
    iou = np.array([[0.9], [0.95]])
    assert greedy_match(iou, np.array([0.8, 0.6])).tolist() == [0, -1]


# --- evaluate_detections: exact answers ----------------------------------------------------------


def test_ground_truth_as_predictions_is_perfect(split):
    m = evaluate_detections(split, as_predictions(split), NAMES)
    assert m.map50 == pytest.approx(AP_PERFECT) and m.map50_95 == pytest.approx(AP_PERFECT)
    assert [c.ap50 for c in m.per_class] == [pytest.approx(AP_PERFECT)] * 2
    assert (m.coco_map50, m.coco_map50_95) == (1.0, 1.0)
    assert [(c.precision, c.recall, c.f1) for c in m.per_class] == [(1.0, 1.0, 1.0)] * 2
    assert [(c.instances, c.images) for c in m.per_class] == [(2, 2), (1, 1)]
    d = m.decisions
    assert (d.escape_rate, d.false_reject_rate) == (0.0, 0.0)
    assert (d.defective, d.good, d.true_rejects, d.escapes, d.false_rejects, d.correct_accepts) == (2, 2, 2, 0, 0, 2)
    assert m.confusion_matrix == [[2, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert m.implementation.startswith("ultralytics ") and "faster-coco-eval" in m.implementation
    json.dumps(m.to_dict(), allow_nan=False)


def test_one_missed_box_gives_exact_ap_and_recall(split):
    predictions = as_predictions(split)
    predictions[1] = Detections.empty()  # the scratch on part b is missed
    m = evaluate_detections(split, predictions, NAMES)
    scratch = m.class_by_name("scratch")
    assert scratch.ap50 == pytest.approx(AP_HALF_RECALL)
    assert scratch.ap50_95 == pytest.approx(AP_HALF_RECALL)
    assert (scratch.precision, scratch.recall, scratch.f1) == (1.0, 0.5, pytest.approx(2 / 3))
    assert (scratch.true_positives, scratch.false_positives, scratch.false_negatives) == (1, 0, 1)
    assert m.map50 == pytest.approx((AP_HALF_RECALL + AP_PERFECT) / 2)
    assert m.coco_map50 == pytest.approx((51 / 101 + 1) / 2)
    d = m.decisions
    assert (d.defective, d.escapes, d.escape_rate, d.recall) == (2, 1, 0.5, 0.5)
    assert m.confusion_matrix == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]


def test_false_positive_on_good_part_gives_exact_false_reject_rate(split):
    predictions = as_predictions(split)
    predictions[2] = detections([[40, 40, 60, 60]], [0.9], [DENT])
    m = evaluate_detections(split, predictions, NAMES, conf_thresholds=0.5)
    d = m.decisions
    assert (d.good, d.false_rejects, d.false_reject_rate, d.correct_accepts) == (2, 1, 0.5, 1)
    assert d.escape_rate == 0.0
    dent = m.class_by_name("dent")
    assert (dent.precision, dent.recall) == (0.5, 1.0)
    # The false positive sits in the dent row, background column.
    assert m.confusion_matrix == [[2, 0, 0], [0, 1, 1], [0, 0, 0]]
    # Above its confidence it no longer rejects anything; AP is unaffected by thresholds either way.
    strict = evaluate_detections(split, predictions, NAMES, conf_thresholds={"scratch": 0.5, "dent": 0.95})
    assert strict.decisions.false_reject_rate == 0.0 and strict.decisions.escape_rate == 0.0
    assert strict.class_by_name("dent").precision == 1.0
    assert strict.map50 == m.map50


def test_split_without_good_parts_has_no_false_reject_rate():
    ground_truth = [truth("a", [A], [SCRATCH]), truth("b", [B], [DENT])]
    m = evaluate_detections(ground_truth, as_predictions(ground_truth), NAMES)
    assert m.decisions.false_reject_rate is None and m.decisions.good == 0
    assert NO_GOOD_PARTS in m.decisions.notes and NO_GOOD_PARTS in m.notes
    assert NO_GOOD_PARTS == "no defect-free images in this split: false-reject rate cannot be measured"
    json.dumps(m.to_dict(), allow_nan=False)


def test_confusion_matrix_counts():
    ground_truth = [
        truth("a", [A, B], [SCRATCH, DENT]),
        truth("b", [C], [SCRATCH]),
        truth("c", [A], [DENT]),
        truth("good"),
    ]
    predictions = [
        detections([A, B], [0.9, 0.8], [SCRATCH, DENT]),  # two correct
        detections([C], [0.7], [DENT]),  # scratch called dent
        detections([[0, 0, 5, 5]], [0.6], [SCRATCH]),  # dent missed, scratch on background
        detections([B, C, A], [0.9, 0.2, 0.3], [SCRATCH, DENT, SCRATCH]),  # one false positive above 0.25
    ]
    m = evaluate_detections(ground_truth, predictions, NAMES, conf_thresholds=0.25)
    #                          true: scratch dent background
    assert m.confusion_matrix == [[1, 0, 3], [1, 1, 0], [0, 1, 0]]
    assert m.confusion_labels == ["scratch", "dent", "background"]
    scratch, dent = m.per_class
    # Diagonal equals the true positives of the per-class precision/recall.
    assert (scratch.true_positives, scratch.false_positives, scratch.false_negatives) == (1, 3, 1)
    assert (dent.true_positives, dent.false_positives, dent.false_negatives) == (1, 1, 1)
    assert (scratch.precision, scratch.recall) == (0.25, 0.5)


def test_detection_below_threshold_counts_for_ap_only(split):
    predictions = as_predictions(split)
    predictions[1] = detections([C], [0.1], [SCRATCH])
    m = evaluate_detections(split, predictions, NAMES, conf_thresholds=0.25)
    assert m.class_by_name("scratch").ap50 == pytest.approx(AP_PERFECT)  # ranking is perfect
    assert m.class_by_name("scratch").recall == 0.5  # but at 0.25 one box is missed
    assert m.decisions.escapes == 1


def test_reject_classes_subset(split):
    predictions = as_predictions(split)
    predictions[1] = Detections.empty()
    predictions[3] = detections([A], [0.9], [SCRATCH])
    # Only dents reject: part a is the one defective part, b (scratch only) counts as good.
    m = evaluate_detections(split, predictions, NAMES, reject_classes={"dent"})
    d = m.decisions
    assert d.reject_classes == ["dent"]
    assert (d.defective, d.good, d.escapes, d.false_rejects) == (1, 3, 0, 0)
    with pytest.raises(UsageError, match="crack"):
        evaluate_detections(split, predictions, NAMES, reject_classes={"crack"})


def test_input_errors(split):
    with pytest.raises(UsageError, match="3 predictions for 4 images"):
        evaluate_detections(split, as_predictions(split)[:3], NAMES)
    with pytest.raises(UsageError, match="missing"):
        evaluate_detections(split, as_predictions(split), NAMES, conf_thresholds={"scratch": 0.3})
    bad = as_predictions(split)
    bad[0] = detections([A], [0.9], [5])
    with pytest.raises(UsageError, match="class id 5"):
        evaluate_detections(split, bad, NAMES)


def test_class_without_ground_truth_has_no_ap():
    ground_truth = [truth("a", [A], [SCRATCH]), truth("good")]
    predictions = [detections([A], [0.9], [SCRATCH]), detections([B], [0.8], [DENT])]
    m = evaluate_detections(ground_truth, predictions, NAMES)
    dent = m.class_by_name("dent")
    assert dent.ap50 is None and dent.recall is None and dent.precision == 0.0
    assert m.map50 == pytest.approx(AP_PERFECT)  # the mean runs over classes with ground truth, as in Ultralytics


# --- ground truth from a YOLO dataset ------------------------------------------------------------


def write_dataset(root: Path, labels: dict[str, str], size=(80, 40)) -> Path:
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for stem, text in labels.items():
        Image.new("RGB", size).save(root / "images" / "val" / f"{stem}.png")
        if text is not None:
            (root / "labels" / "val" / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text("train: images/val\nval: images/val\nnames: [scratch, dent]\n")
    return root / "data.yaml"


def test_load_ground_truth_converts_to_pixels(tmp_path):
    data = write_dataset(
        tmp_path,
        {"a": "0 0.5 0.5 0.5 0.5\n", "b": "1 0.1 0.25 0.3 0.25 0.3 0.75\n", "c": ""},
    )
    gt = load_ground_truth(load_data_config(data), "val")
    assert [t.image_path.name for t in gt] == ["a.png", "b.png", "c.png"]
    assert gt[0].image_size_wh == (80, 40)
    assert gt[0].xyxy.tolist() == [[20, 10, 60, 30]] and gt[0].class_id.tolist() == [0]
    assert gt[1].xyxy.tolist() == [[8, 10, 24, 30]] and gt[1].class_id.tolist() == [1]  # polygon -> its box
    assert len(gt[2]) == 0


def test_load_ground_truth_rejects_unknown_class(tmp_path):
    data = write_dataset(tmp_path, {"a": "3 0.5 0.5 0.1 0.1\n"})
    with pytest.raises(FormatError, match="class id 3"):
        load_ground_truth(load_data_config(data), "val")


# --- evaluate() with a plug-in predictor (no model needed) ---------------------------------------


class LabelPredictor:
    """A perfect 'model' that reads the labels back, plus one false positive on the first good image."""

    class_names = NAMES

    def __init__(self, data: Path):
        self.truth = {t.image_path: t for t in load_ground_truth(load_data_config(data), "val")}

    def __call__(self, images: list[Path]) -> list[Detections]:
        out = []
        for path in images:
            t = self.truth[path]
            if len(t):
                out.append(Detections(t.xyxy, np.full(len(t), 0.9), t.class_id))
            else:
                out.append(detections([[1, 1, 9, 9]], [0.4 if path.stem == "c" else 0.05], [SCRATCH]))
        return out


def test_evaluate_with_plugin_predictor_writes_files(tmp_path):
    data = write_dataset(tmp_path / "ds", {"a": "0 0.5 0.5 0.5 0.5\n", "b": "1 0.2 0.5 0.2 0.4\n", "c": "", "d": ""})
    result = evaluate(
        "fake.pt", data, target_recall=1.0, out_dir=tmp_path / "out", predictor=LabelPredictor(data)
    )
    assert result.metrics.map50 == pytest.approx(AP_PERFECT)
    assert result.thresholds is not None and result.thresholds.target_reached
    # Both defective parts score 0.9, the good parts 0.4 and 0.05: any threshold in (0.4, 0.9] is optimal.
    assert result.thresholds.conf == {"scratch": pytest.approx(0.65), "dent": pytest.approx(0.65)}
    assert result.metrics.decisions.false_reject_rate == 0.0
    for name in ("metrics", "thresholds", "pr_curve", "operating_curve", "confusion_matrix"):
        assert result.files[name].is_file(), name
    saved = json.loads(result.files["metrics"].read_text())
    assert saved["metrics"]["map50"] == pytest.approx(AP_PERFECT) and saved["split"] == "val"
    # The thresholds file written here drives a second run at exactly that operating point.
    again = evaluate(
        "fake.pt", data, thresholds=result.files["thresholds"], predictor=LabelPredictor(data)
    )
    assert again.metrics.decisions.to_dict() == result.metrics.decisions.to_dict()


def test_evaluate_checks_class_names_and_options(tmp_path):
    data = write_dataset(tmp_path / "ds", {"a": "0 0.5 0.5 0.5 0.5\n"})

    class WrongNames(LabelPredictor):
        class_names = ["dent", "scratch"]

    with pytest.raises(UsageError, match=r"model \['dent', 'scratch'\], dataset \['scratch', 'dent'\]"):
        evaluate("m.pt", data, predictor=WrongNames(data))
    with pytest.raises(UsageError, match="not both"):
        evaluate("m.pt", data, thresholds=tmp_path / "t.yaml", target_recall=0.9, predictor=LabelPredictor(data))
    with pytest.raises(UsageError, match="target_recall"):
        evaluate("m.pt", data, per_class_thresholds=True, predictor=LabelPredictor(data))
