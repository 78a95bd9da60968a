"""bf16 training on a CPU: the preset, and a real run that trains in bf16/channels_last and saves a plain checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from yolodefect import train as train_module
from yolodefect.data.check import check_dataset
from yolodefect.data.synth_dataset import SynthOptions, synthesize
from yolodefect.train import TrainOptions, defect_presets, plan_training, train


@pytest.fixture(scope="module")
def steel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("steel") / "data"
    synthesize(out, SynthOptions(kind="steel", images=24, size_wh=(96, 96)))
    return out


def presets(steel: Path, device: str = "cpu", **options) -> dict:
    return {p.key: p for p in defect_presets(TrainOptions(**options), check_dataset(steel), steel / "data.yaml", device)}


def test_bf16_preset_only_from_scratch_on_a_cpu_with_native_bf16(steel, monkeypatch):
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: True)
    amp = presets(steel, model="yolo11n.yaml")["amp"]
    assert amp.value == "bf16" and "native bfloat16" in amp.reason and "--set amp=fp32" in amp.reason
    assert "amp" not in presets(steel, device="0", model="yolo11n.yaml")  # a GPU: Ultralytics' own AMP
    assert "amp" not in presets(steel) and "amp" not in presets(steel, model="best.pt")  # fine-tuning: not measured
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: False)
    assert "amp" not in presets(steel, model="yolo11n.yaml")  # emulated bf16 is slower than fp32


def test_fine_tuning_opts_in_to_bf16_with_set_amp(steel, monkeypatch):
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: True)
    plan = plan_training(steel, TrainOptions(model="yolo11n.pt", device="cpu", overrides={"amp": "bf16"}))
    assert "amp" not in {p.key for p in plan.presets} and plan.arguments["amp"] == "bf16"
    with train_module.cpu_trainer_class(object(), "cpu", plan.arguments) as trainer_class:
        assert trainer_class is not None and "channels_last=True" in trainer_class.__name__


def test_amp_fp32_override_trains_with_ultralytics_own_trainer(steel, monkeypatch):
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: True)
    plan = plan_training(steel, TrainOptions(model="yolo11n.yaml", device="cpu", overrides={"amp": "fp32"}))
    assert plan.arguments["amp"] == "fp32"
    with train_module.cpu_trainer_class(object(), "cpu", plan.arguments) as trainer_class:
        assert trainer_class is None
    with train_module.cpu_trainer_class(object(), "0", {"amp": "bf16"}) as trainer_class:
        assert trainer_class is None  # CUDA bf16 is Ultralytics' own


def test_cpu_training_uses_every_core_unless_told(steel, monkeypatch):
    monkeypatch.setattr(train_module, "cpu_cores", lambda: 4)
    threads = presets(steel)["threads"]
    assert threads.value == 4 and "Ultralytics trains on cores - 1" in threads.reason
    assert presets(steel, threads=1)["threads"].value == 1
    assert "threads" not in presets(steel, device="0")
    plan = plan_training(steel, TrainOptions(model="yolo11n.yaml", device="cpu"))
    assert "threads" not in plan.arguments  # ours to apply: Ultralytics has no such argument


def test_bf16_run_computes_in_bf16_channels_last_and_saves_a_plain_checkpoint(steel, tmp_path, monkeypatch):
    from ultralytics import YOLO
    from ultralytics.engine import trainer as trainer_module

    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: True)  # emulated where not native: still right
    original_autocast = trainer_module.autocast
    seen: list[tuple[torch.dtype, bool, int]] = []
    threads_before = torch.get_num_threads()
    threads_wanted = 3 if threads_before != 3 else 2
    monkeypatch.setattr(train_module, "cpu_cores", lambda: threads_wanted)

    def watch_first_layer(trainer) -> None:
        def hook(module, inputs, output) -> None:
            if module.training:
                seen.append((output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last),
                             torch.get_num_threads()))
        trainer.model.model[0].register_forward_hook(hook)

    result = train(steel, TrainOptions(model="yolo11n.yaml", epochs=1, imgsz=64, batch=8, device="cpu", plots=False,
                                       project=tmp_path / "runs", name="bf16"),
                   callbacks={"on_pretrain_routine_end": [watch_first_layer]})
    assert result.arguments["amp"] == "bf16"
    assert seen and all(dtype == torch.bfloat16 and channels_last and threads == threads_wanted
                        for dtype, channels_last, threads in seen)
    assert trainer_module.autocast is original_autocast  # the patch ends with the run
    assert torch.get_num_threads() == threads_before  # and so does the thread count
    checkpoint = torch.load(result.best_model, map_location="cpu", weights_only=False)
    weights = [p for p in checkpoint["model"].parameters() if p.dim() == 4]  # best.pt: EMA weights, optimizer stripped
    assert weights and all(p.is_contiguous() for p in weights)  # saved NCHW: loads anywhere
    assert checkpoint["train_args"]["amp"] == "bf16"
    boxes = YOLO(result.best_model).predict(next((steel / "images" / "val").iterdir()), verbose=False, device="cpu")
    assert len(boxes) == 1  # plain Ultralytics loads and runs it
