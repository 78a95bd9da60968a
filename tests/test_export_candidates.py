"""``export --int8`` without ``--format`` on a CPU: every installed candidate built, gated against FP32 ONNX, timed
alone in one run, and the fastest that passed deployed. The shipped demo model on the conftest's small steel
dataset (no training); OpenVINO cases skip without the openvino extra."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import DEMO_MODEL
from yolodefect import export as export_module
from yolodefect.cli import app
from yolodefect.export import ExportOptions, export
from yolodefect.exporting import candidates as candidates_module
from yolodefect.exporting.formats import ExportFormat, Precision
from yolodefect.inference.identity import load_model_card
from yolodefect.inference.timing import ALONE, speedup

IMGSZ = 64
FAST = {"imgsz": IMGSZ, "calib": 4, "latency_runs": 3, "warmup": 1}
STEM = DEMO_MODEL.stem
needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None,
    reason="the openvino extra is not installed")


@pytest.fixture
def without_openvino(monkeypatch):
    """A station without the openvino extra: only ONNX Runtime's INT8 candidate can be built."""
    monkeypatch.setattr(candidates_module, "openvino_installed", lambda: False)


def fail_gate_of(monkeypatch, name_end: str) -> None:
    """The evaluator scores the model whose file name ends with ``name_end`` 50 mAP50 points lower."""
    real = export_module._evaluate

    def evaluate(path: Path, *args, **kwargs):
        metrics = real(path, *args, **kwargs)
        if Path(path).name.endswith(name_end):
            return dataclasses.replace(metrics, map50=metrics.map50 - 0.5)
        return metrics

    monkeypatch.setattr(export_module, "_evaluate", evaluate)


def make_fastest(monkeypatch, label: str) -> None:
    """The timing reports ``label`` as the fastest model by far (so only the gate can keep it from being chosen)."""
    real = export_module.measure

    def measure(runners, **kwargs):
        latency = real(runners, **kwargs)
        fast = latency[label]
        latency[label] = dataclasses.replace(fast, median_ms=0.001, round_medians_ms=(0.001,) * fast.rounds)
        return latency

    monkeypatch.setattr(export_module, "measure", measure)


def test_auto_int8_without_openvino_builds_and_chooses_the_onnx_runtime_model(without_openvino, demo_data, tmp_path):
    result = export(DEMO_MODEL, demo_data / "data.yaml", ExportOptions(int8=True, max_drop=100.0, out_dir=tmp_path,
                                                                        **FAST))
    assert [c.name for c in result.candidates] == ["INT8 ONNX"]
    only = result.candidates[0]
    assert only.chosen and only.passed and result.deployable and result.exit_code == 0
    assert result.model_path == tmp_path / f"{STEM}_int8.onnx" == only.report.path and result.model_path.is_file()
    assert result.format is ExportFormat.ONNX and result.precision is Precision.INT8
    assert result.fp32_path == tmp_path / f"{STEM}.onnx" and result.reference.label == "FP32 ONNX"
    assert not list(tmp_path.glob("*openvino*"))
    # Timed the deployment-true way, reference and candidate in the same measurement.
    assert result.reference.latency.mode == only.report.latency.mode == ALONE
    assert only.speedup == speedup(result.reference.latency, only.report.latency)
    card = load_model_card(result.model_path)
    assert card["candidates"] == [json.loads(json.dumps(only.to_dict()))] and card["candidates"][0]["chosen"]
    assert card["choice"] == result.choice and result.choice.startswith("INT8 ONNX chosen")
    assert "Candidates" in result.card_md.read_text()


def test_explicit_format_keeps_a_single_model_run(without_openvino, demo_data, tmp_path):
    result = export(DEMO_MODEL, demo_data / "data.yaml",
                    ExportOptions(int8=True, format="onnx", max_drop=100.0, out_dir=tmp_path, **FAST))
    assert result.candidates == [] and result.choice is None and result.deployable
    assert result.reference.latency.mode != ALONE  # today's single-format timing, unchanged


@pytest.fixture(scope="module")
def auto_openvino(demo_data, tmp_path_factory):
    """An auto --int8 run with the openvino extra installed: three candidates, every gate open; and the formats it
    exported through Ultralytics."""
    out = tmp_path_factory.mktemp("auto-openvino")
    exported = []  # the formats exported through Ultralytics, in order
    real = export_module.export_with_ultralytics

    def export_with_ultralytics(spec, *args, **kwargs):
        exported.append(spec.format)
        return real(spec, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export_module, "export_with_ultralytics", export_with_ultralytics)
        result = export(DEMO_MODEL, demo_data / "data.yaml", ExportOptions(int8=True, max_drop=100.0, out_dir=out,
                                                                           **FAST))
    return out, result, exported


@needs_openvino
@pytest.mark.slow
def test_auto_int8_with_openvino_deploys_the_fastest_candidate_that_passed(auto_openvino):
    tmp_path, result, exported = auto_openvino
    by_name = {c.name: c for c in result.candidates}
    fp32_ir = next(c for c in result.candidates if c.report.precision is Precision.FP32)
    # The plain IR is named by the precision OpenVINO's CPU plugin really computed in (bf16 on AMX CPUs).
    assert fp32_ir.report.latency.precision and fp32_ir.name == f"OpenVINO ({fp32_ir.report.latency.precision})"
    assert set(by_name) == {"INT8 ONNX", "INT8 OpenVINO", fp32_ir.name}
    assert all(c.passed for c in result.candidates)
    fastest = min(result.candidates, key=lambda c: c.report.latency.median_ms)
    assert [c for c in result.candidates if c.chosen] == [fastest]
    assert result.model_path == fastest.report.path and result.candidate == fastest.report and result.deployable
    expected = {"INT8 ONNX": f"{STEM}_int8.onnx", "INT8 OpenVINO": f"{STEM}_int8_openvino_model",
                fp32_ir.name: f"{STEM}_openvino_model"}
    for candidate in result.candidates:
        assert candidate.report.path == tmp_path / expected[candidate.name] and candidate.report.path.exists()
        assert candidate.report.latency.mode == ALONE and candidate.report.latency.rounds == 3
        assert candidate.speedup == speedup(result.reference.latency, candidate.report.latency)
        card = load_model_card(candidate.report.path)  # every candidate is a valid model with its own card
        assert card["deployable"] is True and card["choice"] == result.choice
        assert [c["chosen"] for c in card["candidates"]] == [c.chosen for c in result.candidates]
    assert result.choice.startswith(f"{fastest.name} chosen: fastest of the 3 candidate(s) that passed")
    # One FP32 IR export serves both OpenVINO candidates: the INT8 one is quantized from the IR the other deploys.
    assert exported == [ExportFormat.OPENVINO]
    assert load_model_card(fp32_ir.report.path)["backend"]["inference_precision"] == fp32_ir.report.latency.precision
    # The reference is the FP32 ONNX model: the OpenVINO note names no precision for it (it printed "ran in None").
    precision_notes = [n for n in load_model_card(fp32_ir.report.path)["notes"] if "INFERENCE_PRECISION_HINT" in n]
    assert precision_notes and not any("None" in note for note in precision_notes)


@needs_openvino
@pytest.mark.slow
def test_watch_runs_the_openvino_candidate_and_shows_its_runtime_and_precision(auto_openvino, demo_data, tmp_path):
    _, result, _ = auto_openvino
    fp32_ir = next(c for c in result.candidates if c.report.precision is Precision.FP32)
    images = demo_data / "images" / "val"
    events = tmp_path / "events.jsonl"
    outcome = CliRunner().invoke(app, ["watch", "--source", str(images), "--model", str(fp32_ir.report.path),
                                       "--emit-pass", "--sink", str(events), "--outbox", str(tmp_path / "outbox.sqlite"),
                                       "--json"])
    assert outcome.exit_code == 0, outcome.output
    assert json.loads(outcome.stdout)["parts"] == len(list(images.iterdir())) == len(events.read_text().splitlines())
    runtime = fp32_ir.report.latency.runtime
    shown = " ".join(outcome.stderr.split())  # the console wraps long lines at spaces
    assert f"Model card: precision fp32, backend {runtime} computing in {fp32_ir.report.latency.precision}" in shown


def test_a_candidate_failing_the_gate_is_never_deployed(without_openvino, monkeypatch, demo_data, tmp_path):
    fail_gate_of(monkeypatch, "_int8.onnx")
    result = export(DEMO_MODEL, demo_data / "data.yaml", ExportOptions(int8=True, max_drop=1.0, out_dir=tmp_path,
                                                                        **FAST))
    assert not result.deployable and result.exit_code == 1 and not any(c.chosen for c in result.candidates)
    assert result.model_path == tmp_path / f"{STEM}_int8.rejected.onnx" and result.model_path.is_file()
    assert not (tmp_path / f"{STEM}_int8.onnx").exists()
    assert result.choice.startswith("none of the 1 candidates") and "REJECTED" in result.headline()
    assert load_model_card(result.model_path)["deployable"] is False


@needs_openvino
@pytest.mark.slow
def test_the_fastest_candidate_is_not_chosen_when_it_fails_the_gate(monkeypatch, demo_data, tmp_path):
    fail_gate_of(monkeypatch, "_int8.onnx")
    make_fastest(monkeypatch, "INT8 ONNX")
    result = export(DEMO_MODEL, demo_data / "data.yaml", ExportOptions(int8=True, max_drop=1.0, out_dir=tmp_path,
                                                                        **FAST))
    onnx_int8 = next(c for c in result.candidates if c.name == "INT8 ONNX")
    assert not onnx_int8.passed and not onnx_int8.chosen
    assert onnx_int8.report.latency.median_ms == min(c.report.latency.median_ms for c in result.candidates)
    assert onnx_int8.report.path == tmp_path / f"{STEM}_int8.rejected.onnx" and onnx_int8.report.path.is_file()
    passed = [c for c in result.candidates if c.passed]
    if not passed:  # the real OpenVINO models lost more than a point on this tiny val set
        assert not result.deployable
        return
    chosen = min(passed, key=lambda c: c.report.latency.median_ms)
    assert chosen.chosen and result.deployable and result.model_path == chosen.report.path
    assert "failed the gate (max drop 1): INT8 ONNX" in result.choice


def test_cli_json_lists_the_candidates(without_openvino, demo_data, tmp_path):
    out = tmp_path / "export"
    outcome = CliRunner().invoke(app, ["export", str(DEMO_MODEL), "--data", str(demo_data / "data.yaml"), "--int8",
                                       "--imgsz", str(IMGSZ), "--calib", "4", "--latency-runs", "3",
                                       "--max-drop", "100", "--out", str(out), "--json"])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.stdout)
    assert [c["name"] for c in report["candidates"]] == ["INT8 ONNX"] and report["candidates"][0]["chosen"]
    candidate = report["candidates"][0]
    for key in ("file", "runtime", "precision", "size_bytes", "map50", "map50_drop", "passed", "median_ms", "p95_ms",
                "speedup", "chosen"):
        assert key in candidate
    assert candidate["file"] == report["files"]["model"] == str(out / f"{STEM}_int8.onnx")
    assert report["choice"].startswith("INT8 ONNX chosen")


def test_export_drops_torch_warnings_a_user_cannot_act_on_and_keeps_the_others():
    """OpenVINO's converter traces with torch.jit.trace (deprecated: a FutureWarning per trace) and torch warns that no
    CUDA runtime is found: both printed on every OpenVINO candidate's export, neither means anything to the user."""
    import logging
    import warnings

    from yolodefect.exporting.onnx_fp32 import quiet_ultralytics

    torch_logger = logging.getLogger("torch.utils.cpp_extension")  # torch's own handler, not propagated
    logged: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: logged.append(record.getMessage())
    level = torch_logger.level
    torch_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with quiet_ultralytics():
                warnings.warn("`torch.jit.trace` is deprecated. Please switch to `torch.compile`", FutureWarning)
                warnings.warn("`torch.jit.trace_method` is deprecated. Please switch to `torch.compile`", FutureWarning)
                warnings.warn("something else is deprecated", FutureWarning)
                torch_logger.warning("No CUDA runtime is found, using CUDA_HOME='/x'")
                torch_logger.error("a real extension build failure")
    finally:
        torch_logger.removeHandler(handler)
    assert [str(w.message) for w in seen] == ["something else is deprecated"]
    assert logged == ["a real extension build failure"]
    assert torch_logger.level == level  # restored
