"""`yolodefect compare`: the SSD data adapter, model, training loop and predictor, the best-F1 sweep,
and a tiny end-to-end comparison scored by THE evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yolodefect.compare.best_f1 import best_f1_threshold
from yolodefect.compare.ssd_dataset import (
    TARGET_CONTRACT,
    YoloDetectionDataset,
    check_target,
    collate,
    eval_transforms,
    train_transforms,
)
from yolodefect.compare.ssd_model import ARCHITECTURES, SSDNetwork, build_ssd, load_ssd_model
from yolodefect.compare.ssd_predictor import CachedPredictor, SSDPredictor
from yolodefect.compare.ssd_train import CosineSchedule, SSDTrainOptions, train_one_epoch, train_ssd
from yolodefect.data.synth_dataset import SynthOptions, synthesize
from yolodefect.detections import Detections
from yolodefect.errors import DatasetError, UsageError
from yolodefect.evaluation.evaluator import evaluate_detections
from yolodefect.evaluation.ground_truth import GroundTruth

TINY_SSD = dict(architecture="ssdlite320", image_size=64, batch=8, workers=0, log_every=0)


@pytest.fixture(scope="module")
def steel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compare-steel") / "data"
    synthesize(out, SynthOptions(kind="steel", images=40, size_wh=(96, 96)))
    return out


@pytest.fixture()
def known(tmp_path) -> Path:
    """Two classes, one 100x80 image with two boxes whose pixel corners are known exactly."""
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        Image.fromarray(np.full((80, 100, 3), 90, np.uint8)).save(tmp_path / "images" / split / "part.png")
        # class 1 at centre (50, 40) size 20x20; class 0 at (10, 10) size 10x20
        (tmp_path / "labels" / split / "part.txt").write_text("1 0.5 0.5 0.2 0.25\n0 0.1 0.125 0.1 0.25\n")
    (tmp_path / "data.yaml").write_text(
        f"path: {tmp_path}\ntrain: images/train\nval: images/val\nnames: [pit, scratch]\n")
    return tmp_path


def test_adapter_gives_absolute_xyxy_and_labels_shifted_for_background(known):
    dataset = YoloDetectionDataset(known, split="train")
    image, target = dataset[0]
    assert dataset.class_names == ["pit", "scratch"]
    assert image.shape == (3, 80, 100) and image.dtype == torch.uint8
    assert torch.allclose(target["boxes"], torch.tensor([[40.0, 30.0, 60.0, 50.0], [5.0, 0.0, 15.0, 20.0]]))
    assert target["boxes"].dtype == torch.float32
    assert target["labels"].tolist() == [2, 1]  # dataset class k -> label k + 1, 0 is background


@pytest.mark.parametrize(
    "boxes, labels, message",
    [
        ([[0, 0, 10, 10]], [0], "outside 1..2"),  # background is never a box label
        ([[0, 0, 10, 10]], [3], "outside 1..2"),
        ([[5, 5, 5, 10]], [1], "degenerate"),
        ([[0, 0, 120, 10]], [1], "outside the 100x80 image"),
        ([[0, 0, 10, 10]], [1.0], "labels have dtype"),
    ],
)
def test_target_contract_is_checked(boxes, labels, message):
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}
    with pytest.raises(DatasetError, match=message) as caught:
        check_target(target, image_hw=(80, 100), class_count=2, where="part.png")
    assert "part.png" in str(caught.value) and TARGET_CONTRACT in str(caught.value)


def test_ssd_augmentation_keeps_the_contract(steel):
    torch.manual_seed(0)
    dataset = YoloDetectionDataset(steel, split="train",
                                   transforms=train_transforms(fill_rgb=ARCHITECTURES["ssdlite320"].fill_rgb()))
    for index in range(len(dataset)):  # check_target runs inside __getitem__
        image, target = dataset[index]
        assert image.dtype == torch.float32 and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        assert target["labels"].dtype == torch.int64


def test_scratch_build_has_torchvision_layout():
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    ours = build_ssd(architecture_name="ssdlite320", class_names=["a", "b", "c"])
    theirs = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_backbone_weights_come_from_a_local_file(tmp_path):
    from functools import partial

    from torchvision.models import mobilenet_v3_large

    torch.manual_seed(0)
    imagenet = mobilenet_v3_large(weights=None, norm_layer=partial(torch.nn.BatchNorm2d, eps=0.001, momentum=0.03))
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(imagenet.state_dict(), path)
    model = build_ssd(architecture_name="ssdlite320", class_names=["a"], backbone_weights=path)
    first_conv = model.backbone.features[0][0][0].weight
    assert torch.equal(first_conv, imagenet.features[0][0].weight)

    torch.save({"something.else": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(UsageError, match="mobilenet_v3_large-8738ca79.pth"):
        build_ssd(architecture_name="ssdlite320", class_names=["a"], backbone_weights=tmp_path / "wrong.pth")


@pytest.mark.parametrize("name, size, ok", [("ssdlite320", 128, True), ("ssdlite320", 100, False),
                                            ("ssd300", 256, False), ("nope", None, False)])
def test_ssd_sizes_and_names(name, size, ok):
    if ok:
        model = build_ssd(architecture_name=name, class_names=["a"], image_size=size).eval()
        assert model.transform.fixed_size == (size, size)
        logits, offsets = SSDNetwork(model)(torch.rand(1, 3, size, size))
        anchors = model.anchor_generator(model.transform([torch.rand(3, size, size)])[0],
                                         list(model.backbone(torch.rand(1, 3, size, size)).values()))[0]
        assert logits.shape == (1, len(anchors), 2) and offsets.shape == (1, len(anchors), 4)
    else:
        with pytest.raises(UsageError):
            build_ssd(architecture_name=name, class_names=["a"], image_size=size)


def _loss(model, images, targets) -> float:
    with torch.no_grad():
        return float(sum(model(images, targets).values()))


def test_training_steps_reduce_the_loss(steel):
    torch.manual_seed(0)
    dataset = YoloDetectionDataset(steel, split="train", transforms=eval_transforms())
    batch = collate([dataset[i] for i in range(8)])
    loader = [batch] * 6  # the same tiny batch: the loop must fit it
    model = build_ssd(architecture_name="ssdlite320", class_names=dataset.class_names, image_size=64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    targets = [{"boxes": t["boxes"].as_subclass(torch.Tensor), "labels": t["labels"]} for t in batch[1]]
    model.train()
    before = _loss(model, batch[0], targets)
    stats = train_one_epoch(model, optimizer, loader, torch.device("cpu"), epoch=1, log_every=0)  # no warm-up
    after = _loss(model, batch[0], targets)
    assert stats.iterations == 6 and np.isfinite(stats.loss)
    assert after < before * 0.9


def test_warm_up_then_cosine():
    schedule = CosineSchedule(epochs=10)
    assert schedule(0) == 1.0 and schedule(10) == pytest.approx(0.01) and schedule(5) == pytest.approx(0.505)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    model = torch.nn.Module()
    model.forward = lambda images, targets: {"bbox_regression": (parameter - 1).pow(2).sum(),
                                            "classification": parameter.sum() * 0}
    loader = [([torch.zeros(3, 8, 8)], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])] * 5
    train_one_epoch(model, optimizer, loader, torch.device("cpu"), epoch=0, log_every=0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # warmed up over len - 1 iterations


class FakeSSD(torch.nn.Module):
    def forward(self, images):
        boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
        return [{"boxes": boxes, "scores": torch.tensor([0.9, 0.2]), "labels": torch.tensor([1, 2])} for _ in images]


def test_ssd_predictor_maps_labels_back_to_class_ids(known):
    model = FakeSSD().train()
    predictor = SSDPredictor(model, class_names=["pit", "scratch"], batch=2)
    detections = predictor([known / "images" / "train" / "part.png"] * 3)
    assert len(detections) == 3 and detections[0].class_id.tolist() == [0, 1]
    assert detections[0].xyxy.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert model.training  # mode restored for the training loop


def test_cached_predictor_predicts_once():
    calls = []

    def predictor(images):
        calls.append(list(images))
        return [Detections.empty() for _ in images]

    cached = CachedPredictor(predictor, class_names=["a"])
    images = [Path("a.png"), Path("b.png")]
    assert cached(images) is cached(list(images))
    assert len(calls) == 1 and cached.class_names == ["a"]


def _random_case(seed: int, images: int = 12, classes: int = 3):
    rng = np.random.default_rng(seed)
    truths, predictions = [], []
    for index in range(images):
        n = int(rng.integers(0, 4))
        xy = rng.uniform(0, 60, (n, 2))
        xyxy = np.hstack([xy, xy + rng.uniform(10, 40, (n, 2))])
        cls = rng.integers(0, classes, n)
        truths.append(GroundTruth(Path(f"{index}.png"), (100, 100), xyxy, cls))
        jitter = xyxy + rng.normal(0, 4, xyxy.shape)
        noise_xy = rng.uniform(0, 60, (3, 2))
        det_xyxy = np.vstack([jitter, np.hstack([noise_xy, noise_xy + 20])])
        det_cls = np.concatenate([np.where(rng.random(n) < 0.8, cls, (cls + 1) % classes), rng.integers(0, classes, 3)])
        conf = np.round(rng.uniform(0.01, 1.0, n + 3), 2)  # rounded: ties at thresholds are exercised
        predictions.append(Detections(det_xyxy, conf, det_cls))
    return truths, predictions, [f"c{k}" for k in range(classes)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_f1_threshold_agrees_with_the_evaluator(seed):
    truths, predictions, names = _random_case(seed)
    best = best_f1_threshold(truths, predictions, names)
    at_best = evaluate_detections(truths, predictions, names, conf_thresholds=best.threshold)
    assert at_best.f1 == pytest.approx(best.f1)
    for threshold in (0.05, 0.3, 0.5, 0.77, 0.95):  # the whole curve, not only its maximum
        index = int(np.argmin(np.abs(best.thresholds - threshold)))
        metrics = evaluate_detections(truths, predictions, names, conf_thresholds=float(best.thresholds[index]))
        assert metrics.f1 == pytest.approx(best.mean_f1[index])
        assert metrics.f1 <= best.f1 + 1e-12


@pytest.mark.slow
def test_ssd_training_resumes_from_its_checkpoint(steel, tmp_path, monkeypatch):
    from yolodefect.compare import ssd_train

    options = SSDTrainOptions(epochs=2, **TINY_SSD)
    real_validate, calls = ssd_train.validate, []

    def crash_on_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("power cut")
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(ssd_train, "validate", crash_on_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_ssd(steel, tmp_path / "ssd", options)
    assert (tmp_path / "ssd" / "checkpoint.pt").is_file() and not (tmp_path / "ssd" / "done.json").exists()
    first_epoch = json.loads((tmp_path / "ssd" / "history.json").read_text())
    result = train_ssd(steel, tmp_path / "ssd", options)
    assert result.epochs_trained == 2 and [r.epoch for r in result.history] == [1, 2]
    assert result.history[0].loss == first_epoch[0]["loss"]  # epoch 1 was not redone
    model, info = load_ssd_model(result.best_model)
    assert info.image_size == 64 and info.epoch == result.best_epoch
    with pytest.raises(UsageError, match="other settings"):
        train_ssd(steel, tmp_path / "ssd", SSDTrainOptions(epochs=3, **TINY_SSD))


@pytest.mark.slow
def test_tiny_comparison_scores_both_with_the_one_evaluator(steel, tmp_path, monkeypatch):
    import yolodefect.evaluate as evaluate_module
    from yolodefect.compare import CompareOptions, compare
    from yolodefect.compare import yolo_side

    real_evaluate, scored = evaluate_module.evaluate, []

    def spy(model, data, **kwargs):
        result = real_evaluate(model, data, **kwargs)
        predictor = type(kwargs.get("predictor")).__name__
        scored.append((Path(model).name, Path(model).parent.name, kwargs.get("split"), predictor,
                       result.metrics.implementation))
        return result

    monkeypatch.setattr(evaluate_module, "evaluate", spy)
    options = CompareOptions(out=tmp_path / "cmp", epochs=1, yolo="yolo11n.yaml", yolo_imgsz=64, ssd_imgsz=64, batch=8,
                             latency_runs=3, latency_warmup=1, plots=False)
    result = compare(steel, options)

    on_test = [entry for entry in scored if entry[2] == "test"]
    assert {entry[1] for entry in on_test} == {"weights", "ssd"}  # YOLO best.pt and SSD best.pt
    assert {entry[3] for entry in on_test} == {"CachedPredictor"}
    assert len({entry[4] for entry in scored}) == 1 and result.evaluator == scored[0][4]
    assert [side.key for side in result.sides] == ["yolo", "ssd"]
    for side in result.sides:
        assert side.pretrained is None and side.epochs_trained == 1 and side.imgsz == 64
        assert side.evaluation.metrics.decisions.thresholds["pit"] == side.best_f1_threshold
        assert set(side.speed.latency) == {"pytorch", "onnxruntime"} and side.speed.onnx_file.is_file()
        assert side.speed.parameters > 1e6 and side.speed.gflops > 0
        assert side.speed.onnx_max_abs_diff < 1e-3
    # The YOLO ONNX timed is the graph `yolodefect export` ships (DFL's Softmax over axis 1 rewritten; attention's
    # Softmax over the last axis stays), timed as export times it.
    import onnx

    yolo_graph = onnx.load(str(result.side("yolo").speed.onnx_file)).graph
    softmax_axes = [next((a.i for a in node.attribute if a.name == "axis"), -1)
                    for node in yolo_graph.node if node.op_type == "Softmax"]
    assert 1 not in softmax_axes and any(node.name.endswith("/ReduceMax") for node in yolo_graph.node)
    assert result.side("yolo").speed.latency["pytorch"].settings.startswith("Ultralytics AutoBackend")
    for name in ("json", "markdown", "plot"):
        assert result.files[name].is_file()
    saved = json.loads(result.files["json"].read_text())
    assert saved["verdict"] == result.verdict and "accuracy" in result.verdict and "speed" in result.verdict
    assert "both models trained from scratch" in result.files["markdown"].read_text()
    header, rows = result.table()
    assert header == ["", "YOLO yolo11n", "SSD ssdlite320"] and all(len(row) == 3 for row in rows)

    # A rerun reuses both trained models (done markers) and only re-scores them.
    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr("yolodefect.train.train", no_training)
    monkeypatch.setattr("yolodefect.compare.ssd_train.train_one_epoch", no_training)
    again = compare(steel, options)
    assert again.side("ssd").best_model == result.side("ssd").best_model
    assert again.side("yolo").evaluation.metrics.map50 == result.side("yolo").evaluation.metrics.map50
    assert yolo_side.DONE_MARKER == "done.json" and (tmp_path / "cmp" / "yolo" / "done.json").is_file()


def test_ssd_time_budget_stops_training(steel, tmp_path):
    options = SSDTrainOptions(epochs=1000, time_budget_min=0.001, **TINY_SSD)  # 60 ms: one iteration, then stop
    result = train_ssd(steel, tmp_path / "ssd", options)
    assert result.epochs_trained == 1 and result.best_model.is_file()
    assert json.loads((tmp_path / "ssd" / "done.json").read_text())["args"]["time_budget_min"] == 0.001
