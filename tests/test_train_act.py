"""`yolodefect train --act`: an INT8-friendly activation, only where the weights can take it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from yolodefect.cli import app
from yolodefect.data.synth_dataset import SynthOptions, synthesize
from yolodefect.errors import UsageError
from yolodefect.train import (
    TrainOptions,
    load_model,
    model_activations,
    plan_training,
    run_training,
    train,
)

TINY = dict(epochs=1, imgsz=64, batch=8, workers=0, device="cpu", plots=False, patience=5)


@pytest.fixture(scope="module")
def steel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("steel") / "data"
    synthesize(out, SynthOptions(kind="steel", images=20, size_wh=(64, 64)))
    return out


@pytest.fixture(scope="module")
def silu_checkpoint(tmp_path_factory) -> Path:
    """Ultralytics' YOLO11n as built (SiLU), saved as a checkpoint; no training needed to hold an activation."""
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("silu") / "silu.pt"
    YOLO("yolo11n.yaml").save(str(path))
    return path


@pytest.mark.slow
def test_relu_run_trains_and_reloads_with_relu_only(steel, tmp_path):
    result = train(steel, TrainOptions(model="yolo11n.yaml", act="relu", project=tmp_path / "runs", name="r", **TINY))
    # The model definition trained from sits in the run folder, with the activation and the nano scale kept.
    definition = yaml.safe_load((result.run_dir / "yolo11n-relu.yaml").read_text())
    assert definition["activation"] == "nn.ReLU()" and list(definition["scales"]) == ["n"]
    assert result.run_dir == tmp_path / "runs" / "r"
    # What a user deploys: best.pt loaded afresh computes with ReLU, and nothing else.
    assert model_activations(load_model(str(result.best_model))) == {"ReLU"}
    assert model_activations(load_model(str(result.last_model))) == {"ReLU"}
    preset = {p.key: p for p in result.presets}["activation"]
    assert preset.value == "nn.ReLU()" and preset.reason.startswith("INT8-friendly")
    assert "activation" not in result.arguments  # not an Ultralytics training argument
    # Fine-tuning that ReLU checkpoint with --act relu is allowed: its activations match.
    again = train(steel, TrainOptions(model=str(result.best_model), act="relu", project=tmp_path / "runs",
                                      name="r2", **TINY))
    assert model_activations(load_model(str(again.best_model))) == {"ReLU"}


def test_second_relu_run_goes_to_a_new_folder_like_ultralytics(steel, tmp_path, monkeypatch):
    # The run folder is created before training to hold the definition; it must still be NAME-2 (Ultralytics' pick), not NAME, when
    # NAME exists and --exist-ok was not given (Ultralytics' own rule). Training itself is skipped here.
    from ultralytics.engine.model import Model

    trained = []
    monkeypatch.setattr(Model, "train", lambda self, **arguments: trained.append((self, arguments)) or
                        (_ for _ in ()).throw(RuntimeError("stop after planning")))
    (tmp_path / "runs" / "r").mkdir(parents=True)
    plan = plan_training(steel, TrainOptions(model="yolo11n.yaml", act="relu", project=tmp_path / "runs", name="r",
                                             **TINY))
    from types import SimpleNamespace

    from ultralytics.cfg import get_save_dir

    ultralytics_pick = get_save_dir(SimpleNamespace(project=str(tmp_path / "runs"), name="r", exist_ok=False,
                                                    mode="train", task="detect"))  # what plain Ultralytics picks
    with pytest.raises(RuntimeError, match="stop after planning"):
        run_training(plan)
    model, arguments = trained[0]
    assert ultralytics_pick.name != "r" and (arguments["name"], arguments["exist_ok"]) == (ultralytics_pick.name, True)
    assert (ultralytics_pick / "yolo11n-relu.yaml").is_file()
    assert not (tmp_path / "runs" / "r" / "yolo11n-relu.yaml").exists()
    assert model_activations(model) == {"ReLU"}


def test_silu_checkpoint_with_relu_is_refused_with_the_way_forward(steel, silu_checkpoint, tmp_path):
    plan = plan_training(steel, TrainOptions(model=str(silu_checkpoint), act="relu", project=tmp_path / "runs",
                                             **TINY))
    with pytest.raises(UsageError) as error:
        run_training(plan)
    message = str(error.value)
    assert f"{silu_checkpoint} computes with SiLU" in message
    assert "--model yolo11n.yaml --act relu" in message and "checkpoint trained with ReLU" in message
    assert not (tmp_path / "runs").exists()  # refused before anything was trained or written


def test_silu_checkpoint_with_act_silu_is_accepted(silu_checkpoint):
    from yolodefect.train import check_checkpoint_activation

    check_checkpoint_activation(load_model(str(silu_checkpoint)), str(silu_checkpoint), "silu")  # no error


def test_cli_silu_checkpoint_with_relu_is_one_line_exit_2(steel, silu_checkpoint, tmp_path):
    result = CliRunner().invoke(app, ["train", str(steel), "--model", str(silu_checkpoint), "--act", "relu",
                                      "--epochs", "1", "--device", "cpu", "--project", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "computes with SiLU" in result.output and "Traceback" not in result.output


def test_cli_unknown_activation_is_a_usage_error(steel, tmp_path):
    result = CliRunner().invoke(app, ["train", str(steel), "--act", "gelu", "--project", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "--act 'gelu': choose one of relu, silu" in result.output
    assert not (tmp_path / "runs").exists()
