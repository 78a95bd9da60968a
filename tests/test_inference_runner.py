"""The inference core: one ModelFile record (what events carry comes from it) and one Ultralytics runner serving
both the evaluator (paths) and the station (frames), with the predict arguments built in one place."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.evaluation.predictors import UltralyticsPredictor
from yolodefect.inference.identity import card_path
from yolodefect.inference.model_file import read_model_file
from yolodefect.inference.runner import ULTRALYTICS_MAX_DET, PredictSettings, UltralyticsRunner
from yolodefect.stream.detector import UltralyticsDetector
from yolodefect.stream.events import ModelIdentity
from yolodefect.stream.options import WatchOptions
from yolodefect.stream.watch import watch


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained yolo11n (random weights, 80 classes): it finds plenty of boxes at conf 0, nothing downloaded."""
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    YOLO("yolo11n.yaml", task="detect").save(str(path))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, (height, width) in enumerate([(90, 120), (64, 64), (50, 100)]):
        path = folder / f"img{i}.png"
        cv2.imwrite(str(path), np.random.default_rng(i).integers(0, 255, (height, width, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def test_predict_arguments_spell_half_precision_once() -> None:
    half = PredictSettings(conf=0.25, half=True).arguments(320)
    assert half["quantize"] == 16 and "half" not in half  # Ultralytics 8.4 dropped ``half``
    assert "quantize" not in PredictSettings(conf=0.25).arguments(320)
    plain = PredictSettings(conf=0.25).arguments((320, 256))
    assert plain == {"imgsz": (320, 256), "device": "cpu", "conf": 0.25, "iou": 0.7, "max_det": ULTRALYTICS_MAX_DET,
                     "rect": True, "batch": 1, "verbose": False, "save": False}
    with pytest.raises(UsageError, match="confidence floor"):
        PredictSettings(conf=1.5)


def test_evaluator_and_station_call_ultralytics_through_the_same_arguments(tiny_model: Path, images: list[Path],
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    predictor = UltralyticsPredictor(tiny_model, imgsz=64, conf=0.01, iou=0.6, half=True)
    detector = UltralyticsDetector(tiny_model, imgsz=64, conf_floor=0.02, iou=0.6, half=True)
    calls: list[tuple[str, dict]] = []
    for who, runner in (("eval", predictor.runner), ("watch", detector.runner)):
        real = runner.yolo.predict

        def spy(*args, _who=who, _real=real, **kwargs):
            calls.append((_who, kwargs))
            return _real(*args, **kwargs)

        monkeypatch.setattr(runner.yolo, "predict", spy)
    predictor(images[:2])
    detector(cv2.imread(str(images[0])))
    (_, evaluating), (_, watching) = calls
    shared = ("imgsz", "device", "iou", "quantize", "verbose", "save")
    assert {key: evaluating[key] for key in shared} == {key: watching[key] for key in shared}
    assert evaluating["quantize"] == 16 and evaluating["imgsz"] == 64
    # What differs is stated by each caller: the evaluator ranks everything on full letterboxed squares.
    assert (evaluating["conf"], evaluating["rect"], evaluating["max_det"], evaluating["batch"]) == (
        0.01, False, ULTRALYTICS_MAX_DET, 8)
    assert (watching["conf"], watching["rect"], watching["max_det"]) == (0.02, True, ULTRALYTICS_MAX_DET)


def test_one_runner_gives_a_frame_and_its_file_the_same_detections(tiny_model: Path, images: list[Path]) -> None:
    runner = UltralyticsRunner(tiny_model, PredictSettings(conf=0.0, rect=False), imgsz=64)
    by_path = runner.predict_paths([images[2], images[0], images[2]])  # caller's order, duplicates kept
    by_frame = [runner.predict_frame(cv2.imread(str(path))) for path in (images[2], images[0])]
    assert len(by_frame[0]) > 0 and len(by_frame[1]) > 0  # random weights at conf 0: plenty of boxes to compare
    for got, expected in zip(by_path, [by_frame[0], by_frame[1], by_frame[0]]):
        np.testing.assert_allclose(got.xyxy, expected.xyxy, atol=1e-3)
        np.testing.assert_array_equal(got.class_id, expected.class_id)
    seen: list[tuple[int, int]] = []
    runner.predict_paths(images, lambda stage, done, total: seen.append((done, total)))
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
    tracked = runner.track_frame(cv2.imread(str(images[0])))
    assert tracked.tracker_id is not None and len(tracked.tracker_id) == len(tracked)


def test_the_model_file_is_what_events_carry(tiny_model: Path, tmp_path: Path) -> None:
    card_path(tiny_model).write_text(json.dumps({"precision": "fp16"}))
    try:
        model = read_model_file(tiny_model)
        sha256 = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
        assert (model.format, model.stride, len(model.class_names), model.class_names[79]) == ("pt", 32, 80, "79")
        assert (model.sha256, model.precision, model.card) == (sha256, "fp16", {"precision": "fp16"})
        assert ModelIdentity.of(model).to_dict() == {"name": "tiny.pt", "sha256": sha256, "precision": "fp16"}
        detector = UltralyticsDetector(tiny_model, imgsz=64)
        assert detector.model_info == ModelIdentity.of(model) and detector.card == {"precision": "fp16"}

        # A custom detector run with --model still records that file's identity in every event.
        folder = tmp_path / "parts"
        folder.mkdir()
        cv2.imwrite(str(folder / "p0.png"), np.zeros((32, 32, 3), np.uint8))
        options = WatchOptions(camera_faults=False, source=str(folder), model=tiny_model, conf=0.5, emit_pass=True,
                               sinks=(str(tmp_path / "events.jsonl"),), outbox=tmp_path / "outbox.sqlite")
        watch(options, detector=lambda image: Detections.empty(), class_names=["scratch"])
        events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
        assert [event["model"] for event in events] == [ModelIdentity.of(model).to_dict()]
    finally:
        card_path(tiny_model).unlink()


def test_a_fixed_shape_export_describes_itself_and_runs_at_its_own_size(tiny_model: Path) -> None:
    from ultralytics import YOLO

    from yolodefect.inference.runner import open_model

    onnx = Path(YOLO(str(tiny_model)).export(format="onnx", imgsz=64, dynamic=False, simplify=False, verbose=False))
    model = read_model_file(onnx)
    assert (model.format, model.imgsz, model.fixed_shape, model.stride) == ("onnx", 64, True, 32)
    assert model.class_names == read_model_file(tiny_model).class_names and model.precision == "fp32"
    opened = open_model(onnx, 128)
    assert opened.imgsz == 64 and opened.notes == [
        f"{onnx.name} was exported for imgsz 64 (a fixed shape): running at that size, not 128"]
    assert open_model(onnx, [64, 64]).notes == []  # the same size, asked as a pair
