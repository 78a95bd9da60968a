"""`yolodefect watch` from the command line, with a real (tiny) model on an image folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from yolodefect.cli import app
from yolodefect.data.synth_dataset import SynthOptions, synthesize
from yolodefect.stream.events import Event

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("watch")
    synthesize(root / "data", SynthOptions(kind="steel", images=20, size_wh=(64, 64)))
    model = YOLO("yolo11n.yaml")
    model.train(data=str(root / "data" / "data.yaml"), epochs=1, imgsz=64, batch=8, workers=0, device="cpu",
                plots=False, project=str(root / "runs"), name="m", verbose=False, val=False)
    return Path(model.trainer.last), root / "data" / "images" / "test"


@pytest.mark.slow
def test_watch_an_image_folder_emits_one_event_per_part(tiny_model, tmp_path):
    model, images = tiny_model
    events = tmp_path / "events.jsonl"
    result = runner.invoke(app, ["watch", "--source", str(images), "--model", str(model), "--emit-pass",
                                 "--sink", str(events), "--outbox", str(tmp_path / "outbox.sqlite"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    lines = [Event.from_json(line) for line in events.read_text().splitlines()]
    image_names = sorted(p.name for p in images.iterdir())
    assert sorted(str(e.part_id) for e in lines) == image_names  # one event per image, none lost
    assert summary["parts"] == len(image_names) and summary["flushed"] is True
    assert sum(summary["undelivered"].values()) == 0


def test_watch_without_a_source_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["watch", "--model", str(tmp_path / "m.pt")])
    assert result.exit_code == 2 and "nothing to watch" in result.output


def test_watch_rejects_camera_and_source_together():
    result = runner.invoke(app, ["watch", "--camera", "0", "--source", "x.mp4"])
    assert result.exit_code == 2 and "not both" in result.output
