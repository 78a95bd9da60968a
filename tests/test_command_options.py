"""Command options: bad values are refused when the options are built, the CLI's defaults are the library's,
the evaluator reports progress through the callback every command takes, and `eval` writes under runs/eval."""

from __future__ import annotations

import dataclasses
import importlib
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import yolodefect.cli
from yolodefect.compare import CompareOptions
from yolodefect.data.convert import ConvertOptions
from yolodefect.errors import UsageError
from yolodefect.evaluate import evaluate, new_eval_dir
from yolodefect.exporting.options import ExportOptions
from yolodefect.train import TrainOptions
from tests.conftest import DEMO_MODEL

runner = CliRunner()


# -- each options dataclass checks itself -----------------------------------------------------------

@pytest.mark.parametrize("options_class, given, message", [
    (ConvertOptions, dict(overlap=1.5), r"--overlap 1.5: the tile overlap is a fraction of a tile in \[0, 0.9\)"),
    (ConvertOptions, dict(split="0.5,0.6"), r"--split '0.5,0.6'"),
    (ConvertOptions, dict(format="pascal"), r"--format 'pascal': choose one of .*voc"),
    (ConvertOptions, dict(min_visibility=2), r"--min-visibility must be a fraction in \[0, 1\]"),
    (ConvertOptions, dict(background_tiles=-0.1), r"--background-tiles must be a fraction"),
    (ConvertOptions, dict(tile=16), r"--tile 16: tiles must be a whole number of at least 32 pixels"),
    (ConvertOptions, dict(transfer="move"), r"choose one of link, copy"),
    (ConvertOptions, dict(mask_threshold=300), r"--mask-threshold is a grey level in 0..255"),
    (ConvertOptions, dict(seed=-1), r"--seed must be a whole number >= 0"),
    (TrainOptions, dict(epochs=0), r"--epochs must be a whole number >= 1, got 0"),
    (TrainOptions, dict(batch=0), r"--batch must be a whole number >= 1"),
    (TrainOptions, dict(flipud=1.5), r"--flipud must be a fraction in \[0, 1\]"),
    (TrainOptions, dict(class_weights=-0.5), r"--class-weights must be a fraction"),
    (TrainOptions, dict(workers=-1), r"--workers must be a whole number >= 0"),
    (TrainOptions, dict(imgsz=10000), r"--imgsz 10000 is above the limit"),
    (TrainOptions, dict(patience=-1), r"--patience must be a whole number >= 0"),
    (TrainOptions, dict(name=" "), r"--name must be a run name"),
    (ExportOptions, dict(calib=0), r"--calib must be a whole number >= 1, got 0"),
    (ExportOptions, dict(latency_runs=2.5), r"--latency-runs must be a whole number >= 1"),
])
def test_bad_values_are_refused_when_the_options_are_built(options_class, given, message) -> None:
    with pytest.raises(UsageError, match=message):
        options_class(**given)


def test_defaults_and_edge_values_are_accepted() -> None:
    ConvertOptions(), TrainOptions(), ExportOptions(), CompareOptions()
    ConvertOptions(overlap=0.0, tile=32, min_visibility=1.0, background_tiles=0.0, mask_min_area=0, keep_split=True)
    TrainOptions(batch=-1, patience=0, freeze=0, workers=0, flipud=0.0, class_weights=1.0)  # -1: AutoBatch


def test_a_bad_value_is_one_red_line_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(yolodefect.cli.app, ["convert", str(tmp_path / "missing-source"), str(out), "--overlap", "1.5"])
    assert result.exit_code == 2, result.output
    assert "--overlap 1.5: the tile overlap is a fraction of a tile in [0, 0.9)" in result.output
    assert "Traceback" not in result.output and not out.exists()


# -- defaults live once, in the options ---------------------------------------------------------------

def _field(options_class: type, name: str) -> dataclasses.Field:
    return next(field for field in dataclasses.fields(options_class) if field.name == name)


def test_the_cli_takes_its_defaults_from_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = {(ConvertOptions, "overlap"): 0.35, (ExportOptions, "calib"): 123, (ExportOptions, "threads"): 3,
               (TrainOptions, "epochs"): 77, (CompareOptions, "epochs"): 31, (CompareOptions, "batch"): 5}
    for (options_class, name), value in changed.items():
        monkeypatch.setattr(_field(options_class, name), "default", value)
    try:
        cli = importlib.reload(yolodefect.cli)  # the CLI reads defaults when its commands are defined
        commands = typer.main.get_command(cli.app).commands
        default = {(command, param.name): param.default for command, click_command in commands.items()
                   for param in click_command.params}
        assert default["convert", "overlap"] == 0.35
        assert default["export", "calib"] == 123 and default["export", "threads"] == 3
        assert default["train", "epochs"] == 77
        assert default["compare", "batch"] == 5
        # --epochs stays unset (it excludes --time-budget); its help and the value used come from CompareOptions.
        assert default["compare", "epochs"] is None
        epochs_help = next(p.help for p in commands["compare"].params if p.name == "epochs")
        assert "default 31" in epochs_help
    finally:
        monkeypatch.undo()
        importlib.reload(yolodefect.cli)


# -- progress: a callback, drawn by the CLI on stderr --------------------------------------------------

def test_the_evaluator_reports_progress_through_the_callback(demo_data: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    calls: list[tuple[str, int, int]] = []
    result = evaluate(DEMO_MODEL, demo_data, imgsz=64, plots=False, progress=lambda *call: calls.append(call))
    images = result.metrics.images
    assert images > 0
    assert calls[-1] == (f"predicting {DEMO_MODEL.name}", images, images)
    assert [done for _, done, _ in calls] == sorted(done for _, done, _ in calls)
    assert {total for _, _, total in calls} == {images}
    assert capsys.readouterr().out == ""  # the library draws nothing; stdout stays for --json


# -- eval writes under runs/eval, never next to the model ---------------------------------------------

def test_new_eval_dir_numbers_runs_like_ultralytics(tmp_path: Path) -> None:
    runs = tmp_path / "runs" / "eval"
    first = new_eval_dir("models/best.pt", "test", runs)
    assert first == runs / "best-test" and not first.exists()  # created when the evaluation writes
    first.mkdir(parents=True)
    second = new_eval_dir("models/best.pt", "test", runs)
    assert second == runs / "best-test2"
    second.mkdir()
    assert new_eval_dir("models/best.pt", "test", runs) == runs / "best-test3"
    assert new_eval_dir("models/best.pt", "val", runs) == runs / "best-val"


def test_eval_writes_under_runs_eval_and_says_where(demo_data: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"  # a shared or read-only model folder must stay as it is
    models.mkdir()
    model = Path(shutil.copy(DEMO_MODEL, models / "best.pt"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    outputs = []
    for _ in range(2):
        result = runner.invoke(yolodefect.cli.app, ["eval", str(model), str(demo_data), "--imgsz", "64"])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert sorted(path.name for path in models.iterdir()) == ["best.pt"]
    for output, name in zip(outputs, ("best-val", "best-val2")):
        folder = Path("runs") / "eval" / name
        assert f"Results are in {folder}" in " ".join(output.split())
        assert (work / folder / "metrics.json").is_file()
