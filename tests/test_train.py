"""`yolodefect train`: presets decided from the data, Ultralytics trains, our evaluator scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from yolodefect.cli import app
from yolodefect.data.check import check_dataset
from yolodefect.data.records import Box, ImageRecord, SourceDataset
from yolodefect.data.convert import ConvertOptions, build_dataset
from yolodefect.data.synth_dataset import SynthOptions, synthesize
from yolodefect.errors import UsageError, YoloDefectError
from yolodefect.train import (TrainOptions, defect_presets, load_model, nominal_batch_preset, plan_training, train,
                              weight_updates)

TINY = dict(epochs=1, imgsz=64, batch=8, workers=0, device="cpu", plots=False, patience=5)


@pytest.fixture(scope="module")
def steel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("steel") / "data"
    synthesize(out, SynthOptions(kind="steel", images=40, size_wh=(96, 96)))
    return out


def presets_by_key(options: TrainOptions, data: Path) -> dict:
    return {p.key: p.value for p in defect_presets(options, check_dataset(data), data / "data.yaml", "cpu")}


def test_presets_for_grayscale_defects_on_cpu(steel):
    presets = presets_by_key(TrainOptions(), steel)
    assert "flipud" not in presets  # Ultralytics' 0: vertical flips measured no gain on NEU-DET
    assert presets["hsv_h"] == 0.0 and presets["hsv_s"] == 0.0  # synthetic steel is grayscale
    assert presets["batch"] == 16
    assert presets["imgsz"] == check_dataset(steel).imgsz.suggested_imgsz
    assert "cls_pw" not in presets  # balanced classes: no re-weighting


def test_small_sets_update_the_weights_every_batch_from_scratch(steel):
    scratch = TrainOptions(model="yolo11n.yaml", epochs=30)
    presets = {p.key: p for p in defect_presets(scratch, check_dataset(steel), steel / "data.yaml", "cpu")}
    train_images = check_dataset(steel).splits["train"].images
    assert presets["nbs"].value == presets["batch"].value == 16
    assert f"{train_images} train images x 30 epochs" in presets["nbs"].reason
    assert presets_by_key(TrainOptions(model="yolo11n.yaml", nbs=64), steel)["nbs"] == 64  # --nbs wins


@pytest.mark.parametrize("model", [None, "yolo11n.pt", "runs/train/weights/best.pt"])
def test_fine_tuning_keeps_ultralytics_nominal_batch(steel, model):
    # From trained weights, 4x the steps at Ultralytics' fitted learning rate cost mAP50 on NEU-DET transfer
    # (bench/train_transfer_ablation.py), so no nbs preset: Ultralytics accumulates to 64 images.
    presets = presets_by_key(TrainOptions(model=model, epochs=30), steel)
    assert "nbs" not in presets
    assert presets_by_key(TrainOptions(model=model, nbs=16), steel)["nbs"] == 16  # still the user's to choose


def test_fine_tuning_on_balanced_grayscale_data_trains_as_plain_ultralytics(steel, monkeypatch):
    """#20 item 5: from a checkpoint on NEU-like data (grayscale, balanced) no preset with measured harm is left:
    besides the run's own settings, only no-op colour shifts (a grey pixel has no hue or saturation) and patience."""
    import yolodefect.train as train_module

    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: False)
    plan = plan_training(steel, TrainOptions(model="yolo11n.pt", epochs=10, imgsz=96, batch=16, device="cpu"))
    run_settings = {"data", "epochs", "device", "seed", "project", "name", "exist_ok", "plots", "verbose", "imgsz",
                    "batch"}
    assert {key: value for key, value in plan.arguments.items() if key not in run_settings} == {
        "hsv_h": 0.0, "hsv_s": 0.0, "patience": 30}


def test_weight_updates_follow_ultralytics_accumulation():
    # NEU-DET's train split at batch 16: 91 batches per epoch, Ultralytics steps every round(64 / 16) = 4 of them.
    assert weight_updates(1442, 30, 16, 64) == 91 * 30 // 4 == 682
    assert weight_updates(1442, 30, 16, 16) == 91 * 30
    assert weight_updates(1442, 30, 128, 64) == 12 * 30  # a batch above nbs never accumulates
    # A run with many updates keeps Ultralytics' nominal batch of 64.
    scratch = dict(model="yolo11n.yaml", epochs=300)
    assert nominal_batch_preset(TrainOptions(**scratch), 16, 5000) is None
    assert nominal_batch_preset(TrainOptions(**scratch), 64, 500) is None
    assert nominal_batch_preset(TrainOptions(**scratch), 16, 500).value == 16


def test_class_weights_turn_on_for_imbalanced_data(tmp_path):
    from tests.test_convert import write_image

    records = [ImageRecord(write_image(tmp_path / "src" / f"c{i}.png", seed=i, mode="RGB"),
                           [Box("common" if i >= 4 else "rare", (5, 5, 40, 40))]) for i in range(60)]
    build_dataset(SourceDataset("t", records, ["common", "rare"]), tmp_path / "data", ConvertOptions(), source_label="m")
    presets = presets_by_key(TrainOptions(), tmp_path / "data")
    assert presets["cls_pw"] == 0.5
    assert "hsv_h" not in presets  # colour noise images: hue augmentation stays
    assert presets_by_key(TrainOptions(class_weights=0.0), tmp_path / "data")["cls_pw"] == 0.0


def test_every_preset_can_be_overridden(steel):
    options = TrainOptions(imgsz=96, flipud=0.0, grayscale=False, batch=4, overrides={"mosaic": 0.0})
    plan = plan_training(steel, options)
    arguments = plan.arguments
    assert (arguments["imgsz"], arguments["flipud"], arguments["batch"]) == (96, 0.0, 4)
    assert "hsv_h" not in arguments and arguments["mosaic"] == 0.0


def test_unknown_ultralytics_argument_is_refused_with_a_suggestion(steel):
    with pytest.raises(UsageError, match="did you mean 'mosaic'"):
        plan_training(steel, TrainOptions(overrides={"mosiac": 0.0}))


def test_offline_without_weights_explains_the_two_ways_forward(monkeypatch, tmp_path):
    from ultralytics.utils import downloads

    def offline(*args, **kwargs):
        raise ConnectionError("Download failure: environment may be offline")

    monkeypatch.setattr(downloads, "safe_download", offline)
    monkeypatch.chdir(tmp_path)  # no yolo26n.pt lying in the working directory
    with pytest.raises(YoloDefectError) as caught:
        load_model("yolo26n.pt")
    message = str(caught.value)
    assert "could not download yolo26n.pt" in message
    assert "--model path/to/checkpoint.pt" in message and "--model yolo26n.yaml" in message


def test_cli_offline_message_is_one_line_not_a_traceback(monkeypatch, steel, tmp_path):
    from ultralytics.utils import downloads

    monkeypatch.setattr(downloads, "safe_download", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", str(steel), "--model", "yolo11n.pt", "--epochs", "1"])
    assert result.exit_code == 1
    assert "could not download yolo11n.pt" in result.output and "Traceback" not in result.output


def test_check_errors_stop_training(steel, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(steel, broken, symlinks=False)
    label = next((broken / "labels" / "train").glob("*.txt"))
    label.write_text("7 0.5 0.5 0.2 0.2\n")  # class id out of range
    with pytest.raises(YoloDefectError, match="check found 1 error"):
        plan_training(broken, TrainOptions())
    plan_training(broken, TrainOptions(run_check=False))  # --no-check trains anyway


@pytest.mark.parametrize("run_check", [True, False])
def test_train_never_hands_ultralytics_a_jpeg_it_would_resave_in_place(steel, tmp_path, run_check):
    # Ultralytics "restores" a JPEG whose last two bytes are not the end marker by re-saving it over the file.
    import shutil

    from tests.builders import nul_padded_jpeg

    data = tmp_path / "data"
    shutil.copytree(steel, data, symlinks=False)
    jpeg = nul_padded_jpeg(sorted((data / "images" / "train").glob("*.png"))[0], 100)
    before = jpeg.read_bytes()
    with pytest.raises(YoloDefectError, match=rf"1 JPEG\(s\) such as {jpeg} have bytes after their end-of-image "
                                              r"marker .* Ultralytics would re-save them in place"):
        plan_training(data, TrainOptions(run_check=run_check))
    assert jpeg.read_bytes() == before


@pytest.mark.slow
def test_train_two_epochs_writes_best_model_metrics_and_eval(steel, tmp_path):
    options = TrainOptions(model="yolo11n.yaml", project=tmp_path / "runs", name="t", **{**TINY, "epochs": 2})
    result = train(steel, options)
    assert result.best_model.is_file() and result.best_model.name == "best.pt"
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["evaluation"]["metrics"]["class_names"] == ["scratch", "pit", "inclusion", "patch"]
    assert saved["evaluation"]["metrics"]["images"] == check_dataset(steel).splits["val"].images
    assert {p["key"] for p in saved["presets"]} >= {"hsv_h", "patience", "batch", "nbs"}
    ultralytics_args = yaml.safe_load((result.run_dir / "args.yaml").read_text())
    assert ultralytics_args["nbs"] == ultralytics_args["batch"] == 8  # Ultralytics stepped every batch
    assert "from scratch" in result.transfer_note


@pytest.mark.slow
def test_transfer_from_a_checkpoint_with_other_classes(tmp_path):
    two_class = tmp_path / "pcb"
    synthesize(two_class, SynthOptions(kind="pcb", images=20, size_wh=(64, 64)))
    # A checkpoint trained on 6 PCB classes, then fine-tuned on the 4 steel classes.
    first = train(two_class, TrainOptions(model="yolo11n.yaml", project=tmp_path / "runs", name="pcb", **TINY))
    steel = tmp_path / "steel"
    synthesize(steel, SynthOptions(kind="steel", images=20, size_wh=(64, 64)))
    second = train(steel, TrainOptions(model=str(first.best_model), project=tmp_path / "runs", name="steel", **TINY))
    assert "6 classes" in second.transfer_note and "re-initialised for 4 classes" in second.transfer_note
    from ultralytics import YOLO

    assert list(YOLO(second.best_model).names.values()) == ["scratch", "pit", "inclusion", "patch"]
