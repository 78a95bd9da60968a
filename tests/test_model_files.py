"""Model files and sizes: a damaged model is one clear line in every command, --imgsz follows one rule, and the
default weights never come from a file planted in the working folder."""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from yolodefect.cli import app
from yolodefect.errors import UsageError
from yolodefect.evaluate import evaluate
from yolodefect.exporting.options import ExportOptions, check_options
from yolodefect.exporting.source import SourceModel, export_imgsz
from yolodefect.inference.model_file import (ModelFileError, check_imgsz, check_model_file, fetch_ultralytics_weights,
                                             resolve_imgsz, weights_dir)
from yolodefect.train import DEFAULT_MODEL, Preset, fit_imgsz_to_model, load_model

REPO_ROOT = Path(__file__).resolve().parents[1]
from tests.conftest import DEMO_MODEL
runner = CliRunner()


def one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


@pytest.fixture(autouse=True)
def never_download(monkeypatch):
    """Tests never reach the network: any Ultralytics download fails as it does offline."""
    from ultralytics.utils import downloads

    def offline(*args, **kwargs):
        raise ConnectionError("Download failure: environment may be offline")

    monkeypatch.setattr(downloads, "safe_download", offline)


def tiny_onnx(path: Path) -> Path:
    """A real, complete ONNX file whose graph (with a 256 KB initializer) is most of its bytes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    bias = numpy_helper.from_array(np.arange(65536, dtype=np.float32), name="bias")
    graph = helper.make_graph([helper.make_node("Add", ["x", "bias"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [65536])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [65536])], [bias])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> dict[str, Path]:
    """Random bytes and real files cut short (an interrupted copy), as .pt and .onnx."""
    folder = tmp_path_factory.mktemp("damaged")
    noise = random.Random(0).randbytes(64 * 1024)
    files = {"random.pt": noise, "random.onnx": noise}
    whole_pt = DEMO_MODEL.read_bytes()
    files["truncated.pt"] = whole_pt[:len(whole_pt) // 2]
    whole_onnx = tiny_onnx(folder / "whole.onnx").read_bytes()
    files["truncated.onnx"] = whole_onnx[:len(whole_onnx) // 2]
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def command_line(command: str, model: Path, data: Path, tmp_path: Path) -> list[str]:
    frames = tmp_path / "frames"
    frames.mkdir(exist_ok=True)
    import cv2

    cv2.imwrite(str(frames / "part.png"), np.zeros((64, 64, 3), np.uint8))
    return {
        "eval": ["eval", str(model), str(data), "--out", str(tmp_path / "eval")],
        "train": ["train", str(data), "--model", str(model), "--epochs", "1", "--project", str(tmp_path / "runs")],
        "export": ["export", str(model), "--data", str(data), "--out", str(tmp_path / "export")],
        "watch": ["watch", "--source", str(frames), "--model", str(model), "--sink", str(tmp_path / "events.jsonl"),
                  "--outbox", str(tmp_path / "outbox.db")],
    }[command]


# --- a damaged model file: one line naming it, in every command ---------------------------------------------


@pytest.mark.parametrize("command, name", [
    *((command, name) for command in ("eval", "watch") for name in ("random.pt", "truncated.pt", "random.onnx",
                                                                    "truncated.onnx")),
    *((command, name) for command in ("train", "export") for name in ("random.pt", "truncated.pt")),
])
def test_a_damaged_model_is_one_line_naming_the_file(command, name, damaged, demo_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, command_line(command, damaged[name], demo_data, tmp_path))
    assert result.exit_code == 1, result.output
    line = one_line(result.output)
    assert f"{damaged[name]} is not a readable model: " in line
    assert "expected a PyTorch .pt checkpoint saved by Ultralytics" in line
    if name.startswith("truncated"):
        assert "truncated" in line


@pytest.mark.parametrize("command", ["train", "export"])
def test_an_onnx_file_where_a_checkpoint_is_needed_is_refused_for_its_kind(command, damaged, demo_data, tmp_path):
    # Even a readable .onnx cannot be trained or exported: that, not its damage, is what the user must fix first.
    result = runner.invoke(app, command_line(command, damaged["random.onnx"], demo_data, tmp_path))
    assert result.exit_code == 2, result.output
    assert ".pt" in one_line(result.output)


def test_real_model_files_pass_the_structure_check(tmp_path):
    assert check_model_file(DEMO_MODEL) == DEMO_MODEL
    assert check_model_file(tiny_onnx(tmp_path / "whole.onnx")).is_file()
    openvino = tmp_path / "best_openvino_model"
    openvino.mkdir()
    (openvino / "best.xml").write_text("<net name='best'><layers/></net>")
    with pytest.raises(ModelFileError, match="has no weights file best.bin"):
        check_model_file(openvino)
    (openvino / "best.bin").write_bytes(b"\0" * 16)
    assert check_model_file(openvino) == openvino
    empty = tmp_path / "empty.pt"
    empty.touch()
    with pytest.raises(ModelFileError, match="the file is empty"):
        check_model_file(empty)


# --- --imgsz: positive, bounded, rounded up to the stride, and the size used is the size reported ----------


@pytest.mark.parametrize("requested, stride, used, note", [
    (33, 32, 64, "--imgsz 33 -> 64, a multiple of the model stride 32"),
    (64, 32, 64, None),
    (100, 64, 128, "--imgsz 100 -> 128, a multiple of the model stride 64"),
    (1, 32, 32, "--imgsz 1 -> 32, a multiple of the model stride 32"),
    ((33, 64), 32, (64, 64), "--imgsz (33, 64) -> (64, 64), a multiple of the model stride 32"),
    (4096, 32, 4096, None),
])
def test_imgsz_is_rounded_up_to_the_stride_with_a_note(requested, stride, used, note):
    assert resolve_imgsz(requested, stride) == (used, note)


@pytest.mark.parametrize("requested, message", [
    (0, "--imgsz must be a positive whole number of pixels, got 0"),
    (-32, "--imgsz must be a positive whole number of pixels, got -32"),
    (True, "--imgsz must be a positive whole number of pixels"),
    (32.5, "--imgsz must be a positive whole number of pixels, got 32.5"),
    (4097, "--imgsz 4097 is above the limit of 4096 px"),
    (10000, "--imgsz 10000 is above the limit of 4096 px: memory grows with the square of the size"),
])
def test_impossible_imgsz_is_refused(requested, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_imgsz(requested)


@pytest.mark.parametrize("command", ["eval", "train", "watch", "export"])
@pytest.mark.parametrize("imgsz, message", [
    ("0", "--imgsz must be a positive"), ("-32", "--imgsz must be a positive"), ("10000", "above the limit of 4096"),
])
def test_cli_refuses_impossible_imgsz_before_any_work(command, imgsz, message, demo_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arguments = command_line(command, DEMO_MODEL, demo_data, tmp_path)
    result = runner.invoke(app, [*arguments, f"--imgsz={imgsz}"])
    assert result.exit_code == 2, result.output
    line = one_line(result.output)
    # watch names its options as the station file does (imgsz), since they may come from there
    assert (message.removeprefix("--") if command == "watch" else message) in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "eval").exists()


def test_eval_reports_and_runs_at_the_rounded_size(demo_data, tmp_path):
    rounded = evaluate(DEMO_MODEL, demo_data, imgsz=33, out_dir=tmp_path / "eval", plots=False)
    assert rounded.imgsz == 64
    assert "--imgsz 33 -> 64, a multiple of the model stride 32" in rounded.notes
    assert yaml.safe_load((tmp_path / "eval" / "metrics.json").read_text())["imgsz"] == 64
    at_64 = evaluate(DEMO_MODEL, demo_data, imgsz=64, plots=False)
    assert rounded.metrics.to_dict() == at_64.metrics.to_dict()  # the very predictions of a 64 px run
    assert not any("stride" in note for note in at_64.notes)


def test_watch_runs_at_the_rounded_size_and_says_so(caplog):
    from yolodefect.stream.detector import UltralyticsDetector

    with caplog.at_level(logging.WARNING):
        detector = UltralyticsDetector(DEMO_MODEL, imgsz=33)
    assert detector.imgsz == 64
    assert "--imgsz 33 -> 64, a multiple of the model stride 32" in caplog.text


def test_export_rounds_its_size_up_and_refuses_impossible_ones():
    source = SourceModel(DEMO_MODEL, "0" * 64, ["a"], train_imgsz=320, stride=32, architecture="yolo11n.yaml")
    assert export_imgsz(100, source) == (128, "--imgsz 100 -> 128, a multiple of the model stride 32")
    assert export_imgsz(None, source) == (320, None)  # the training size
    with pytest.raises(UsageError, match="above the limit of 4096"):
        check_options(ExportOptions(imgsz=10000))


def test_train_rounds_imgsz_to_the_loaded_models_stride_and_reports_it():
    presets = [Preset("imgsz", 33, "given by --imgsz"), Preset("flipud", 0.5, "free data")]
    fitted, arguments, note = fit_imgsz_to_model(presets, {"imgsz": 33, "epochs": 1}, 32)
    assert arguments == {"imgsz": 64, "epochs": 1}
    assert fitted[0] == Preset("imgsz", 64, "given by --imgsz; imgsz 33 -> 64, a multiple of the model stride 32")
    assert fitted[1] == presets[1] and note == "imgsz 33 -> 64, a multiple of the model stride 32"
    assert fit_imgsz_to_model(presets, {"epochs": 1}, 32) == (presets, {"epochs": 1}, None)


def test_train_hands_ultralytics_the_rounded_size(demo_data, tmp_path, monkeypatch):
    import torch

    import yolodefect.train as train_module

    class Stop(Exception):
        pass

    handed = {}

    def fake_train(**arguments):
        handed.update(arguments)
        raise Stop

    model = SimpleNamespace(names={0: "a"}, model=SimpleNamespace(stride=torch.tensor([8.0, 16.0, 32.0])),
                            train=fake_train)
    monkeypatch.setattr(train_module, "load_model", lambda name: model)
    plan = train_module.plan_training(demo_data, train_module.TrainOptions(imgsz=33, project=tmp_path / "runs",
                                                                              run_check=False))
    assert plan.arguments["imgsz"] == 33  # planned before the model (and its stride) is loaded
    with pytest.raises(Stop):
        train_module.run_training(plan)
    assert handed["imgsz"] == 64


# --- default weights: Ultralytics' weights folder or a download into it, never the working folder -----------


def plant_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint that, like real malware, runs code when unpickled: it creates ``marker``."""
    import torch

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').close()",)

    torch.save({"model": Payload()}, path)
    return path


def test_the_planted_checkpoint_really_runs_code_when_loaded(tmp_path):
    import torch

    planted = plant_checkpoint(tmp_path / DEFAULT_MODEL, tmp_path / "marker")
    torch.load(planted, weights_only=False)
    assert (tmp_path / "marker").exists()  # so the tests below would see it run


def test_train_without_model_never_loads_a_checkpoint_planted_in_the_working_folder(demo_data, tmp_path, monkeypatch):
    import yolodefect.train as train_module

    work, weights = tmp_path / "work", tmp_path / "weights"
    work.mkdir()
    plant_checkpoint(work / DEFAULT_MODEL, tmp_path / "marker")
    monkeypatch.setattr(train_module, "weights_dir", lambda: weights)  # Ultralytics' folder, empty and offline
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["train", str(demo_data), "--epochs", "1", "--imgsz", "64", "--no-check"])
    assert result.exit_code == 1, result.output
    assert f"could not download {DEFAULT_MODEL} into {weights}" in result.output
    assert "--model yolo26n.yaml" in result.output
    assert not (tmp_path / "marker").exists()


def test_default_weights_are_loaded_from_ultralytics_weights_folder_and_announced(tmp_path, monkeypatch, caplog):
    import yolodefect.train as train_module

    work, weights = tmp_path / "work", tmp_path / "weights"
    work.mkdir()
    weights.mkdir()
    plant_checkpoint(work / DEFAULT_MODEL, tmp_path / "marker")
    shutil.copy(DEMO_MODEL, weights / DEFAULT_MODEL)
    monkeypatch.setattr(train_module, "weights_dir", lambda: weights)
    monkeypatch.chdir(work)
    with caplog.at_level(logging.INFO, logger="yolodefect.train"):
        model = load_model(None)
    assert Path(model.ckpt_path) == weights / DEFAULT_MODEL
    assert f"loading default weights {weights / DEFAULT_MODEL}" in caplog.text
    assert not (tmp_path / "marker").exists()


def test_weights_are_downloaded_into_the_weights_folder_not_the_working_folder(tmp_path, monkeypatch):
    from ultralytics.utils import downloads

    targets = []

    def fake_download(url, file=None, **kwargs):
        targets.append(Path(file))
        Path(file).parent.mkdir(parents=True, exist_ok=True)  # as Ultralytics' safe_download does
        Path(file).write_bytes(b"downloaded")

    monkeypatch.setattr(downloads, "safe_download", fake_download)
    monkeypatch.chdir(tmp_path)
    found = fetch_ultralytics_weights("yolo11n.pt", tmp_path / "weights")
    assert targets == [tmp_path / "weights" / "yolo11n.pt"] == [found]
    assert not (tmp_path / "yolo11n.pt").exists()
    with pytest.raises(UsageError, match="not one of Ultralytics' released weights"):
        fetch_ultralytics_weights("../evil.pt", tmp_path)


def test_a_relative_weights_setting_does_not_follow_the_working_folder():
    from ultralytics.utils import USER_CONFIG_DIR

    assert weights_dir("weights") == Path(USER_CONFIG_DIR) / "weights"
    assert weights_dir("/opt/weights") == Path("/opt/weights")


def test_ultralytics_amp_check_checkpoint_is_announced_on_gpu():
    from ultralytics.utils import WEIGHTS_DIR

    from yolodefect.train import amp_check_weights

    assert amp_check_weights("0", {"epochs": 1}) == (Path(WEIGHTS_DIR) / "yolo26n.pt").absolute()
    assert amp_check_weights("cpu", {}) is None
    assert amp_check_weights("0", {"amp": False}) is None


def test_compare_refuses_an_impossible_yolo_imgsz_in_its_own_words(demo_data, tmp_path):
    from yolodefect.compare.yolo_side import YoloTrainSettings, train_yolo

    settings = YoloTrainSettings("yolo11n.yaml", 1, None, 0, 4, None, "cpu", 0, False)
    with pytest.raises(UsageError, match="--yolo-imgsz must be a positive whole number of pixels, got 0"):
        train_yolo(demo_data / "data.yaml", tmp_path / "yolo", settings)
    assert not (tmp_path / "yolo").exists()


def test_a_named_checkpoint_is_announced_and_an_unknown_bare_name_is_not_searched_for(tmp_path, monkeypatch, caplog):
    from yolodefect.errors import DatasetError

    monkeypatch.chdir(tmp_path)
    shutil.copy(DEMO_MODEL, tmp_path / "line.pt")
    with caplog.at_level(logging.INFO, logger="yolodefect.train"):
        load_model("line.pt")
    assert f"loading {tmp_path / 'line.pt'}" in caplog.text
    with pytest.raises(DatasetError, match="model checkpoint mine.pt does not exist"):
        load_model("mine.pt")  # not a file here and not an Ultralytics release: nothing to download or guess
