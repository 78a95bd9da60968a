"""A user's first path: data in a source format -> convert -> check -> Ultralytics trains on it."""

from __future__ import annotations

import pytest

from yolodefect.data.check import check_dataset
from yolodefect.data.convert import ConvertOptions, convert
from yolodefect.data.synth_dataset import SynthOptions, synthesize


@pytest.mark.slow
def test_convert_check_and_train_one_epoch(tmp_path):
    synthesize(tmp_path / "source", SynthOptions(kind="pcb", images=40, size_wh=(96, 96)))
    # Re-split an existing YOLO dataset, as a user with labels from another tool would.
    result = convert(tmp_path / "source", tmp_path / "dataset", ConvertOptions(format="yolo", keep_split=False, seed=3))
    assert result.images_written == 40
    report = check_dataset(tmp_path / "dataset")
    assert not report.has_errors, [str(p) for p in report.errors]

    from ultralytics import YOLO

    model = YOLO("yolo11n.yaml")
    model.train(data=str(tmp_path / "dataset" / "data.yaml"), epochs=1, imgsz=64, batch=8, workers=0,
                device="cpu", plots=False, project=str(tmp_path / "runs"), name="e2e", verbose=False)
    assert (tmp_path / "runs" / "e2e" / "weights" / "best.pt").is_file()
    # Ultralytics found every image and label of our splits.
    assert len(model.trainer.train_loader.dataset) == result.splits["train"].images
    assert len(model.trainer.validator.dataloader.dataset) == result.splits["val"].images
    assert model.trainer.train_loader.dataset.labels[0]["cls"].shape[1] == 1
