"""One evaluator for every backend: a tiny trained .pt and its ONNX export must score the same.

Trains a YOLO11n from its yaml for two epochs at 64 px on a dataset written here (offline: no
pretrained weights, no fonts), so the model is poor; to also compare a non-trivial AP, a second
split is labelled with the .pt model's own confident predictions, where the .pt scores AP 1.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yolodefect.evaluate import evaluate
from yolodefect.data.yolo_dataset import load_data_config
from yolodefect.evaluation import evaluate_detections, load_ground_truth, predict_with_ultralytics

pytestmark = pytest.mark.slow

IMGSZ = 64
TOLERANCE = 1e-3


def write_dataset(root: Path, seed: int = 0) -> Path:
    """Bright rectangles on a dark background: class 0 long thin 'scratch', class 1 square 'dent'."""
    rng = np.random.default_rng(seed)
    for split, count, backgrounds in (("train", 16, 4), ("val", 8, 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            image = np.full((IMGSZ, IMGSZ, 3), 20, np.uint8)
            lines = []
            if i >= backgrounds:
                cls = i % 2
                if cls == 0:
                    w, h = int(rng.integers(24, 40)), int(rng.integers(4, 8))
                else:
                    w = h = int(rng.integers(12, 20))
                x, y = int(rng.integers(2, IMGSZ - 2 - w)), int(rng.integers(2, IMGSZ - 2 - h))
                image[y : y + h, x : x + w] = (230, 230, 230) if cls == 0 else (60, 220, 60)
                cx, cy = (x + w / 2) / IMGSZ, (y + h / 2) / IMGSZ
                lines.append(f"{cls} {cx:.6f} {cy:.6f} {w / IMGSZ:.6f} {h / IMGSZ:.6f}")
            Image.fromarray(image).save(root / "images" / split / f"{i:03d}.png")
            (root / "labels" / split / f"{i:03d}.txt").write_text("\n".join(lines))
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [scratch, dent]\n")
    return root / "data.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(data.yaml, best.pt, best.onnx)."""
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("backends")
    data = write_dataset(root / "ds")
    model = YOLO("yolo11n.yaml")
    model.train(
        data=str(data), epochs=2, imgsz=IMGSZ, batch=8, workers=0, device="cpu", plots=False, val=False,
        amp=False, seed=0, deterministic=True, project=str(root / "runs"), name="train", exist_ok=True, verbose=False,
    )
    weights = root / "runs" / "train" / "weights" / "last.pt"
    # simplify=False: onnxslim may be absent and Ultralytics would try to install it (no network here).
    onnx = Path(YOLO(str(weights)).export(format="onnx", imgsz=IMGSZ, simplify=False))
    return data, weights, onnx


def self_labelled_split(data: Path, weights: Path, root: Path, keep: int = 12) -> tuple[Path, float]:
    """A dataset whose labels are the model's ``keep`` most confident val predictions.

    Everything labelled outranks everything not labelled, so the .pt model scores AP 1 exactly and
    the ONNX model must come within numerical noise of it. Returns (data.yaml, the score cut), the
    cut being a threshold where precision and recall are 1.
    """
    images = sorted((data.parent / "images" / "val").glob("*.png"))
    predictions = predict_with_ultralytics(weights, images, imgsz=IMGSZ)
    scores = np.sort(np.concatenate([d.confidence for d in predictions]))[::-1]
    # Cut in the widest gap near the top so a tiny score change between backends cannot cross it.
    gaps = scores[: keep * 2][:-1] - scores[1 : keep * 2]
    cut = int(np.argmax(gaps[keep // 2 :]) + keep // 2)
    threshold = (scores[cut] + scores[cut + 1]) / 2
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for image, detections in zip(images, predictions):
        shutil.copy(image, root / "images" / "val" / image.name)
        kept = detections.filter(detections.confidence > threshold)
        lines = []
        for (x1, y1, x2, y2), cls in zip(kept.xyxy.tolist(), kept.class_id.tolist()):
            cx, cy, w, h = (x1 + x2) / 2 / IMGSZ, (y1 + y2) / 2 / IMGSZ, (x2 - x1) / IMGSZ, (y2 - y1) / IMGSZ
            lines.append(f"{cls} {cx:.8f} {cy:.8f} {w:.8f} {h:.8f}")
        (root / "labels" / "val" / f"{image.stem}.txt").write_text("\n".join(lines))
    (root / "data.yaml").write_text("train: images/val\nval: images/val\nnames: [scratch, dent]\n")
    return root / "data.yaml", float(threshold)


def assert_same_metrics(a, b) -> None:
    ma, mb = a.metrics, b.metrics
    assert ma.implementation == mb.implementation
    for key in ("map50", "map50_95", "precision", "recall", "f1"):
        va, vb = getattr(ma, key), getattr(mb, key)
        assert (va is None) == (vb is None), key
        if va is not None:
            assert va == pytest.approx(vb, abs=TOLERANCE), key
    for ca, cb in zip(ma.per_class, mb.per_class):
        for key in ("ap50", "ap50_95", "precision", "recall", "f1", "threshold"):
            va, vb = getattr(ca, key), getattr(cb, key)
            assert (va is None) == (vb is None), (ca.name, key)
            if va is not None:
                assert va == pytest.approx(vb, abs=TOLERANCE), (ca.name, key)
        assert (ca.instances, ca.true_positives) == (cb.instances, cb.true_positives)
    assert ma.confusion_matrix == mb.confusion_matrix
    da, db = ma.decisions.to_dict(), mb.decisions.to_dict()
    for key in ("defective", "good", "true_rejects", "escapes", "false_rejects"):
        assert da[key] == db[key], key


def test_pt_and_onnx_give_the_same_metrics(trained, tmp_path):
    data, weights, onnx = trained
    # val_rect=False: the .pt is validated on the full imgsz square, the inputs of its fixed-shape export.
    kwargs = dict(target_recall=0.99, val_rect=False)
    pt = evaluate(weights, data, out_dir=tmp_path / "pt", **kwargs)
    ox = evaluate(onnx, data, out_dir=tmp_path / "onnx", **kwargs)
    assert pt.imgsz == ox.imgsz == IMGSZ  # the training / export size, read from the model files
    assert_same_metrics(pt, ox)
    assert pt.thresholds.conf == pytest.approx(ox.thresholds.conf, abs=TOLERANCE)
    assert (tmp_path / "onnx" / "metrics.json").is_file() and (tmp_path / "onnx" / "thresholds.yaml").is_file()

    labelled, cut = self_labelled_split(data, weights, tmp_path / "self")
    pt = evaluate(weights, labelled, conf=cut, val_rect=False)
    ox = evaluate(onnx, labelled, conf=cut, val_rect=False)
    # A perfect ranking: Ultralytics' AP (the headline, as `yolo val` prints it) is 0.995 there, COCO's 1.
    assert pt.metrics.instances > 0
    # The labels are the station-style predictions above the cut, so those rank perfectly: Ultralytics' AP 0.995
    # (COCO's 1). The headline mAP uses the validator's multi-label predictions instead, which for this 2-epoch
    # model (every score near the 0.001 floor) rank differently.
    config = load_data_config(labelled)
    truth = load_ground_truth(config, "val")
    own = evaluate_detections(truth, predict_with_ultralytics(weights, [t.image_path for t in truth], imgsz=IMGSZ),
                              config.class_names)
    assert own.map50 == pytest.approx(0.995) and own.coco_map50 == pytest.approx(1.0)
    assert (pt.metrics.precision, pt.metrics.recall) == (1.0, 1.0)
    assert_same_metrics(pt, ox)


def test_predictions_follow_the_callers_image_order(trained):
    data, weights, _ = trained
    images = sorted((data.parent / "images" / "val").glob("*.png"))[:4]
    forward = predict_with_ultralytics(weights, images, imgsz=IMGSZ)
    backward = predict_with_ultralytics(weights, images[::-1], imgsz=IMGSZ)
    for a, b in zip(forward, backward[::-1]):
        assert np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.confidence, b.confidence)
