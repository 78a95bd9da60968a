"""``yolodefect export``: FP32/INT8 ONNX on a tiny model, the gate, the card, and every bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from yolodefect.errors import DatasetError, FormatError, UsageError
from yolodefect.export import ExportOptions, ExportResult, Precision, export
from yolodefect.exporting.calibration import BACKGROUND, CalibrationReader, preprocess, select_calibration_images
from yolodefect.exporting.card import CARD_FIELDS
from yolodefect.exporting.formats import ExportFormat, export_formats
from yolodefect.exporting.graph import decompose_inner_softmax, find_head_tail
from yolodefect.data.yolo_dataset import load_data_config

IMGSZ = 64
# Small and fast: a handful of calibration images and latency runs are enough to exercise every step.
FAST = dict(imgsz=IMGSZ, calib=12, latency_runs=5, warmup=1)


@pytest.fixture(scope="module")
def pcb(tmp_path_factory) -> Path:
    """40 synthetic PCB images, 96x96 (30 train / 5 val / 5 test); returns the data.yaml."""
    from yolodefect.data.synth_dataset import SynthOptions, synthesize

    out = tmp_path_factory.mktemp("export-data") / "pcb"
    synthesize(out, SynthOptions(kind="pcb", images=40, size_wh=(96, 96), seed=0))
    return out / "data.yaml"


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    """A YOLO11n checkpoint with random weights (no training): enough for input checks and graph surgery."""
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("untrained") / "untrained.pt"
    YOLO("yolo11n.yaml").save(str(path))
    return path


@pytest.fixture(scope="module")
def tiny(pcb, tmp_path_factory) -> Path:
    """YOLO11n trained 2 epochs at 64 px on the PCB images: the model every export test uses."""
    from ultralytics import YOLO

    project = tmp_path_factory.mktemp("export-train")
    YOLO("yolo11n.yaml").train(data=str(pcb), imgsz=IMGSZ, epochs=2, batch=8, workers=0, plots=False, device="cpu",
                               project=str(project), name="tiny", verbose=False, amp=False)
    return project / "tiny" / "weights" / "best.pt"


@pytest.fixture(scope="module")
def int8(tiny, pcb, tmp_path_factory) -> ExportResult:
    # --format onnx: these tests are about the single ONNX path (auto --int8 is in test_export_candidates.py)
    return export(tiny, pcb, ExportOptions(int8=True, format="onnx", out_dir=tmp_path_factory.mktemp("int8"), **FAST))


# --- the INT8 export ------------------------------------------------------------------------------


@pytest.mark.slow
def test_int8_export_writes_fp32_int8_and_card(int8):
    assert int8.deployable and int8.exit_code == 0 and int8.gate.passed
    assert int8.precision is Precision.INT8 and int8.format is ExportFormat.ONNX
    assert int8.model_path.name == "best_int8.onnx" and int8.model_path.is_file()
    assert int8.fp32_path is not None and int8.fp32_path.name == "best.onnx" and int8.fp32_path.is_file()
    assert int8.card_json.name == "best_int8.card.json" and int8.card_md.is_file()
    assert int8.simplified is True
    assert int8.candidate.size_bytes < int8.reference.size_bytes / 2  # int8 weights
    assert int8.calibration is not None and len(int8.calibration.images) == 12


@pytest.mark.slow
def test_fp32_and_int8_load_in_onnxruntime_and_ultralytics(int8, pcb):
    import onnxruntime as ort
    from ultralytics import YOLO

    image = load_data_config(pcb).images("val")[0]
    for path in (int8.fp32_path, int8.model_path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        shape = session.get_inputs()[0].shape
        assert shape == [1, 3, IMGSZ, IMGSZ]  # static by default
        outputs = session.run(None, {session.get_inputs()[0].name: preprocess(image, IMGSZ)})
        assert np.isfinite(outputs[0]).all()
        results = YOLO(str(path), task="detect").predict(str(image), imgsz=IMGSZ, verbose=False, save=False)
        assert len(results) == 1 and results[0].names == {i: n for i, n in enumerate(load_data_config(pcb).class_names)}


@pytest.mark.slow
def test_int8_graph_is_quantized_and_keeps_the_head_tail_in_float(int8):
    model = onnx.load(str(int8.model_path))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    dequantized = {node.output[0] for node in model.graph.node if node.op_type == "DequantizeLinear"}
    tail = find_head_tail(onnx.load(str(int8.fp32_path)))
    by_name = {node.name: node for node in model.graph.node}
    # The Detect head's last convolutions are quantized like the body...
    for name in tail.last_convs:
        assert by_name[name].input[1] in dequantized
    # ...and everything after them (DFL, decoding, sigmoid, concat) runs in float: every tail node is still
    # there, and no QuantizeLinear reads a tail node's output.
    assert all(name in by_name for name in tail.tail)
    tail_outputs = {out for name in tail.tail for out in by_name[name].output}
    assert not [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in tail_outputs]
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["task"] == "detect" and "names" in metadata and metadata["imgsz"] == f"[{IMGSZ}, {IMGSZ}]"


@pytest.mark.slow
def test_both_models_are_evaluated_and_timed_side_by_side(int8):
    for report in (int8.reference, int8.candidate):
        assert report.metrics.images == 5 and report.metrics.map50 is not None
        assert report.metrics.decisions is not None
        assert report.latency.runs == 5 and report.latency.median_ms > 0 and report.latency.p95_ms >= report.latency.median_ms
        assert report.latency.threads == 2
    assert int8.reference.precision is Precision.FP32 and int8.candidate.precision is Precision.INT8
    assert int8.speedup is not None and int8.speedup > 0
    header, rows = int8.table()
    assert header == ["", "FP32 ONNX", "INT8 ONNX", "change"]
    labels = [row[0] for row in rows]
    for wanted in ("mAP50", "mAP50-95", "escape rate %", "false-reject rate %", "latency median ms", "latency p95 ms",
                   "file MB"):
        assert wanted in labels
    assert sum(label.startswith("  AP50 ") for label in labels) == 6  # one row per class
    json.dumps(int8.to_dict())  # serialisable for --json
    assert int8.headline().startswith("best_int8.onnx: INT8 ONNX, imgsz 64, ") and int8.headline().endswith("DEPLOYABLE")


@pytest.mark.slow
def test_card_has_every_field(int8, tiny):
    card = json.loads(int8.card_json.read_text())
    assert set(CARD_FIELDS) <= set(card)
    from yolodefect.inference.identity import file_sha256, load_model_card

    assert load_model_card(int8.model_path) == card  # the station finds it next to the model
    assert card["deployable"] is True and card["precision"] == "int8" and card["format"] == "onnx"
    assert card["source_checkpoint"]["sha256"] == file_sha256(tiny)
    assert card["sha256"] == file_sha256(int8.model_path)
    assert card["class_names"] == ["open", "short", "mousebite", "spur", "spurious_copper", "pin_hole"]
    assert card["imgsz"] == IMGSZ
    assert card["calibration"]["images"] == 12 and card["calibration"]["seed"] == 0
    assert "onnxruntime" in card["backend"]["versions"] and "U8 activations" in card["backend"]["quantization"]
    validation = card["validation"]
    for side in ("reference", "exported"):
        for key in ("map50", "map50_95", "per_class_ap50", "escape_rate", "false_reject_rate", "latency", "size_bytes"):
            assert key in validation[side]
    assert validation["thresholds"].startswith("conf 0.25")
    assert card["latency"]["median_ms"] > 0 and card["latency"]["speedup"] > 0
    assert card["machine"]["line"].startswith("machine: ")
    assert "DEPLOYABLE" in int8.card_md.read_text()


@pytest.mark.slow
def test_gate_failure_keeps_the_model_aside_and_names_classes(tiny, pcb, tmp_path):
    result = export(tiny, pcb, ExportOptions(int8=True, format="onnx", max_drop=-1.0, out_dir=tmp_path, **FAST))
    assert result.failed and not result.deployable and result.exit_code == 1 and not result.gate.passed
    assert result.model_path.name == "best_int8.rejected.onnx" and result.model_path.is_file()
    assert not (tmp_path / "best_int8.onnx").exists()  # nothing deployable-looking is left behind
    assert "FAILED" in result.gate.message and result.gate.worst and "REJECTED" in result.headline()
    assert all(change.name in result.gate.message for change in result.gate.worst)
    card = json.loads(result.card_json.read_text())
    assert result.card_json.name == "best_int8.rejected.card.json"
    assert card["deployable"] is False and card["validation"]["gate"]["passed"] is False
    assert "NOT DEPLOYABLE" in result.card_md.read_text()


@pytest.mark.slow
def test_fp32_dynamic_export_is_validated_against_pytorch(tiny, pcb, tmp_path):
    result = export(tiny, pcb, ExportOptions(dynamic=True, out_dir=tmp_path, **FAST))
    assert result.deployable and result.precision is Precision.FP32
    assert result.reference.label == "FP32 PyTorch" and result.reference.path == tiny
    assert result.model_path == tmp_path / "best.onnx"
    dims = onnx.load(str(result.model_path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
    # Same network, same inputs: ONNX FP32 must agree with PyTorch well within the gate.
    assert abs(result.gate.map50_drop) < 0.5
    assert json.loads(result.card_json.read_text())["precision"] == "fp32"


@pytest.mark.slow
def test_openvino_int8_export(tiny, pcb, tmp_path):
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    pytest.importorskip("nncf", reason="the openvino extra is not installed")
    caches = sorted(pcb.parent.rglob("*.cache"))
    result = export(tiny, pcb, ExportOptions(int8=True, format="openvino", max_drop=100.0, out_dir=tmp_path, **FAST))
    assert result.deployable and result.model_path == tmp_path / "best_int8_openvino_model"
    assert result.fp32_path == tmp_path / "best_openvino_model" and result.model_path.is_dir()
    assert result.card_json == tmp_path / "best_int8_openvino_model.card.json"
    assert result.candidate.latency.precision  # the precision OpenVINO really used is recorded
    card = json.loads(result.card_json.read_text())
    assert card["backend"]["inference_precision"] == result.candidate.latency.precision
    assert card["calibration"]["images"] == 12
    # Calibrated on our images: no cache file lands in the dataset.
    assert sorted(pcb.parent.rglob("*.cache")) == caches


# --- bad input: each a clear error before any export work -----------------------------------------


def test_missing_model(pcb, tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        export(tmp_path / "nope.pt", pcb, ExportOptions(int8=True, out_dir=tmp_path))


def test_corrupt_model(pcb, tmp_path):
    corrupt = tmp_path / "best.pt"
    corrupt.write_bytes(b"this is not a checkpoint" * 100)
    with pytest.raises(FormatError, match="is not a readable model: it is not a PyTorch checkpoint"):
        export(corrupt, pcb, ExportOptions(int8=True, out_dir=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_an_export_is_not_a_source(pcb, tmp_path):
    onnx_file = tmp_path / "best.onnx"
    onnx_file.write_bytes(b"x")
    with pytest.raises(UsageError, match="not a PyTorch checkpoint"):
        export(onnx_file, pcb, ExportOptions(out_dir=tmp_path))


def test_data_yaml_without_images(untrained, tmp_path):
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
    data = tmp_path / "data.yaml"
    data.write_text("train: images/train\nval: images/val\nnames:\n  0: scratch\n")
    with pytest.raises(DatasetError, match=r"val folder .* holds no images"):
        export(untrained, data, ExportOptions(int8=True, imgsz=IMGSZ, out_dir=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_classes_must_match_the_dataset(untrained, pcb, tmp_path):
    with pytest.raises(UsageError, match="do not match"):
        export(untrained, pcb, ExportOptions(imgsz=IMGSZ, out_dir=tmp_path))


def test_tensorrt_needs_a_gpu(untrained, pcb, tmp_path):
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("tensorrt"):
        pytest.skip("this machine can build TensorRT engines")
    with pytest.raises(UsageError, match="needs an NVIDIA GPU and tensorrt"):
        export(untrained, pcb, ExportOptions(int8=True, format="engine", out_dir=tmp_path))


def test_openvino_missing_names_the_extra(monkeypatch, untrained, pcb, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in {"openvino", "nncf"} else real(name, *a))
    with pytest.raises(UsageError, match=r"pip install 'yolodefect\[openvino\]'"):
        export(untrained, pcb, ExportOptions(int8=True, format="openvino", out_dir=tmp_path))


@pytest.mark.parametrize("given, message", [
    (dict(format="tflite"), "unknown export format 'tflite'"),
    (dict(int8=True, format="openvino", calibration="entropy"), "needs --int8 and --format onnx"),
    (dict(int8=False, calibration="minmax"), "needs --int8"),
    (dict(int8=True, calibration="kl"), "choose one of minmax, percentile, entropy"),
    (dict(calib=0), "--calib must be a whole number >= 1"),
    (dict(threads=0), "--threads must be"),
    (dict(imgsz=-64), "--imgsz must be a positive"),
    (dict(format="openvino", simplify=False), "--no-simplify applies to ONNX"),
])
def test_unsupported_options_are_refused_when_built(given, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        ExportOptions(**given)


def test_format_table():
    table = export_formats()
    assert list(table) == [ExportFormat.ONNX, ExportFormat.OPENVINO, ExportFormat.ENGINE]
    onnx_spec = table[ExportFormat.ONNX]
    folder = Path("out")
    assert onnx_spec.model_path(folder, "best", Precision.INT8) == folder / "best_int8.onnx"
    assert onnx_spec.model_path(folder, "best", Precision.INT8, rejected=True) == folder / "best_int8.rejected.onnx"
    assert onnx_spec.model_path(folder, "best", Precision.FP32) == folder / "best.onnx"
    ov = table[ExportFormat.OPENVINO]
    assert ov.model_path(folder, "best", Precision.INT8) == folder / "best_int8_openvino_model"
    assert ov.model_path(folder, "best", Precision.INT8, rejected=True) == folder / "best_int8_rejected_openvino_model"
    assert table[ExportFormat.ENGINE].needs_cuda and ov.extra == "openvino"


# --- calibration images ---------------------------------------------------------------------------


def test_calibration_is_stratified_seeded_and_includes_background(pcb):
    config = load_data_config(pcb)
    chosen = select_calibration_images(config, 10, seed=0)
    assert len(chosen.images) == 10 and chosen.available == 30 and chosen.split == "train"
    assert BACKGROUND in chosen.per_stratum  # defect-free parts are part of what the line sees
    assert len(chosen.per_stratum) >= 6  # every stratum with images gets one before any gets two
    assert select_calibration_images(config, 10, seed=0).images == chosen.images
    assert select_calibration_images(config, 10, seed=1).images != chosen.images
    everything = select_calibration_images(config, 300, seed=0)
    assert len(everything.images) == 30 and sum(everything.per_stratum.values()) == 30


def test_calibration_preprocessing_matches_ultralytics_inference(untrained, tmp_path):
    """The tensor we calibrate on is the tensor Ultralytics feeds the model at predict time (letterbox and all)."""
    import cv2
    from ultralytics import YOLO
    from ultralytics.utils.patches import imread

    image = tmp_path / "wide.png"  # not square: the letterbox pads top and bottom
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (50, 120, 3), dtype=np.uint8))
    model = YOLO(str(untrained), task="detect")
    model.predict(str(image), imgsz=IMGSZ, rect=False, verbose=False, save=False)
    expected = model.predictor.preprocess([imread(str(image))]).numpy()
    assert np.array_equal(preprocess(image, IMGSZ), expected)
    reader = CalibrationReader([image, image, image], 64)
    assert len(reader) == 3
    reader.set_range(1, 3)
    assert [item["images"].shape for item in reader] == [(1, 3, 64, 64)] * 2


# --- graph surgery --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def untrained_onnx(untrained) -> onnx.ModelProto:
    from ultralytics import YOLO

    produced = YOLO(str(untrained)).export(format="onnx", imgsz=IMGSZ, simplify=False, verbose=False)
    return onnx.load(produced)


def test_head_tail_is_found_by_walking_the_graph(untrained_onnx):
    tail = find_head_tail(untrained_onnx)
    assert len(tail.last_convs) == 6  # box and class branch of each of the 3 scales
    ops = {node.name: node.op_type for node in untrained_onnx.graph.node}
    tail_ops = {ops[name] for name in tail.tail}
    assert {"Softmax", "Sigmoid", "Concat"} <= tail_ops
    assert "Conv" in tail_ops  # DFL's fixed 1x1 conv belongs to the decoding, not to the learned layers
    assert all(ops[name] == "Conv" for name in tail.last_convs)


def test_inner_softmax_rewrite_keeps_outputs(untrained_onnx):
    import onnxruntime as ort

    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(untrained_onnx)
    assert decompose_inner_softmax(rewritten) == [n.name for n in untrained_onnx.graph.node
                                                  if n.op_type == "Softmax" and "dfl" in n.name]
    onnx.checker.check_model(rewritten)
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    before = ort.InferenceSession(untrained_onnx.SerializeToString()).run(None, {"images": x})[0]
    after = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"images": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-3)
