"""``yolodefect eval`` reports the mAP50 / mAP50-95 that Ultralytics' validator (``yolo val``, the training log)
reports for the same model, data and size: within 0.005, for a .pt, its FP32 ONNX and its INT8 ONNX.

The model is the shipped demo model (trained, so AP is far from 0 and 1) on a small conveyor split
generated here; ``YOLO(model).val(...)`` with Ultralytics' defaults is the reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from yolodefect.detections import Detections
from yolodefect.evaluate import evaluate
from yolodefect.evaluation import GroundTruth, evaluate_detections
from yolodefect.evaluation.average_precision import IOU_THRESHOLDS, true_positives
from yolodefect.evaluation.matching import greedy_match_at
from yolodefect.shipped import SHIPPED_TILE, shipped_model_path

AGREEMENT = 0.005  # the largest |ours - Ultralytics val| allowed, in mAP (0..1)
BATCH = 16  # `yolo val`'s default batch: with rect batches, the letterbox of a .pt depends on it


def ultralytics_val(model: Path, data: Path, tmp_path: Path) -> tuple[float, float]:
    from ultralytics import YOLO

    metrics = YOLO(str(model)).val(data=str(data), imgsz=SHIPPED_TILE, batch=BATCH, device="cpu", plots=False,
                                   verbose=False, project=str(tmp_path / "val"), name="val")
    return float(metrics.box.map50), float(metrics.box.map)


def assert_agrees(model: Path, data: Path, tmp_path: Path) -> None:
    ours = evaluate(model, data, imgsz=SHIPPED_TILE, batch=BATCH).metrics
    theirs50, theirs50_95 = ultralytics_val(model, data, tmp_path)
    assert 0.2 < theirs50 < 0.95  # a trained model with room either way, or the comparison would prove little
    assert abs(ours.map50 - theirs50) <= AGREEMENT, (model.name, ours.map50, theirs50)
    assert abs(ours.map50_95 - theirs50_95) <= AGREEMENT, (model.name, ours.map50_95, theirs50_95)


@pytest.fixture(scope="module")
def conveyor(tmp_path_factory) -> Path:
    """Crops of a short synthetic conveyor video at the demo model's scale (about 50 val images)."""
    from yolodefect.data.station_dataset import StationOptions, synthesize_station

    out = tmp_path_factory.mktemp("agreement") / "conveyor"
    synthesize_station(out, StationOptions(parts=(1, 6, 0), frame_step=12, seed=0, balanced_classes=False))
    return out / "data.yaml"


@pytest.fixture(scope="module")
def demo_model() -> Path:
    path = shipped_model_path()
    if not path.exists():
        pytest.skip(f"the shipped demo model is not at {path}")
    return path


def test_pt_map_agrees_with_ultralytics_val(demo_model, conveyor, tmp_path):
    assert_agrees(demo_model, conveyor, tmp_path)


@pytest.mark.slow
def test_onnx_fp32_and_int8_map_agree_with_ultralytics_val(demo_model, conveyor, tmp_path):
    from yolodefect.export import ExportOptions, export

    exported = export(demo_model, conveyor, ExportOptions(int8=True, format="onnx", imgsz=SHIPPED_TILE, calib=16, latency_runs=2,
                                                          warmup=1, max_drop=100.0, out_dir=tmp_path / "export"))
    for model in (exported.fp32_path, exported.model_path):
        assert_agrees(model, conveyor, tmp_path / model.stem)


# --- the pieces: matching at ten IoU thresholds, AP on given predictions ----------------------------


def test_matching_at_each_iou_threshold_is_greedy_by_confidence():
    truth = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], dtype=float)
    # Detection 0 (conf 0.9) overlaps box 0 with IoU 0.6; detection 1 (conf 0.8) covers box 0 exactly.
    dets = np.array([[0, 0, 10, 6], [0, 0, 10, 10]], dtype=float)
    from yolodefect.evaluation.matching import box_iou

    matched = greedy_match_at(box_iou(dets, truth), np.array([0.9, 0.8]), IOU_THRESHOLDS)
    below_06 = IOU_THRESHOLDS <= 0.6 + 1e-9
    # Where the first detection reaches the threshold it claims box 0 and the exact one finds nothing left;
    # above 0.6 the first misses and the exact detection claims box 0 at every threshold.
    assert matched[0].tolist() == [0 if low else -1 for low in below_06]
    assert matched[1].tolist() == [-1 if low else 0 for low in below_06]


def test_ap_counts_a_detection_of_the_wrong_class_as_false_positive():
    truth = GroundTruth(Path("a.png"), (40, 20), [[0, 0, 10, 10]], [0])
    detections = Detections([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [1, 0])
    assert true_positives(truth, detections).tolist() == [[False] * 10, [True] * 10]
    metrics = evaluate_detections([truth], [detections], ["scratch", "dent"])
    # The class-0 box is found at rank 1 with precision 1: Ultralytics' perfect-ranking AP, 0.995.
    assert metrics.class_by_name("scratch").ap50 == pytest.approx(0.995)
    assert metrics.class_by_name("dent").ap50 is None  # no ground truth of that class


def test_ap_predictions_replace_the_operating_predictions_for_ap_only():
    truth = [GroundTruth(Path("a.png"), (40, 20), [[0, 0, 10, 10]], [0])]
    found = [Detections([[0, 0, 10, 10]], [0.9], [0])]
    missed = [Detections.empty()]
    metrics = evaluate_detections(truth, missed, ["scratch"], ap_predictions=found)
    assert metrics.map50 == pytest.approx(0.995)  # AP from the validator's predictions
    assert metrics.recall == 0.0 and metrics.decisions.escapes == 1  # the operating point from the station's


def test_eval_never_lets_the_validator_rewrite_a_dataset_jpeg(demo_data, tmp_path):
    # Ultralytics' dataset check re-saves, in place, any JPEG whose last two bytes are not the end marker, even a
    # whole one with NUL padding; eval must leave the dataset as it found it and say why its mAP is the station's.
    import shutil

    from tests.builders import nul_padded_jpeg
    from tests.conftest import DEMO_MODEL

    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    jpeg = nul_padded_jpeg(sorted((data / "images" / "val").glob("*.png"))[0], 256)
    before = jpeg.read_bytes()

    result = evaluate(DEMO_MODEL, data, imgsz=SHIPPED_TILE)

    assert jpeg.read_bytes() == before
    assert result.metrics.map50 is not None
    assert any("would re-save them in place" in note and jpeg.name in note for note in result.notes), result.notes
