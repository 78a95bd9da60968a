"""``export``: a trained checkpoint to a deployable ONNX / OpenVINO / TensorRT model, validated in the same run.

Steps, each failing loudly: check everything (options, runtime, checkpoint, image size, dataset) ->
export FP32 -> (``int8``) choose calibration images and quantize -> evaluate both with THE evaluator on
val at the station's thresholds -> time both at batch 1 -> gate on the mAP50 drop -> write the model
under its deployable or rejected name, next to its model card.

``--int8`` on a CPU without ``--format`` builds every installed candidate (exporting/candidates.py) instead: each
gated against the FP32 ONNX reference, all timed alone in one run, and the fastest that passed deployed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path

from yolodefect.data.yolo_dataset import DataConfig
from yolodefect.evaluate import evaluate
from yolodefect.evaluation.metrics import EvalMetrics
from yolodefect.exporting.calibration import CalibrationSet, preprocess, select_calibration_images
from yolodefect.exporting.candidates import CandidatePlan, choice_text, choose, closest_to_passing, cpu_candidates
from yolodefect.exporting.card import card_paths, write_card
from yolodefect.exporting.formats import ExportFormat, FormatSpec, Precision, export_formats
from yolodefect.exporting.gate import apply_gate
from yolodefect.exporting.onnx_fp32 import export_onnx_fp32
from yolodefect.exporting.onnx_int8 import OrtInt8Settings, quantize_onnx
from yolodefect.exporting.openvino_int8 import quantize_openvino
from yolodefect.exporting.options import Calibration, ExportOptions, check_options
from yolodefect.exporting.result import CandidateReport, ExportResult, ModelReport, path_size
from yolodefect.exporting.source import SourceModel, check_inputs, thresholds_file
from yolodefect.exporting.ultralytics_formats import calibration_yaml, export_with_ultralytics
from yolodefect.inference.rules import DEFAULT_CONF
from yolodefect.inference.timing import ALONE, Latency, Runner, measure, model_runner, speedup
from yolodefect.machine import machine_line
from yolodefect.progress import ProgressCallback

__all__ = ["Calibration", "ExportFormat", "ExportOptions", "ExportResult", "Precision", "export", "export_formats"]

logger = logging.getLogger(__name__)

VAL_SPLIT = "val"
SMALL_VAL = 100  # below this many val images a 1-point mAP50 gate is within sampling noise
ALONE_ROUNDS = 3  # auto --int8: candidates timed alone in this many alternating rounds (timing.measure)


def _place(produced: Path, destination: Path) -> Path:
    """Move an export (file or folder) to ``destination``, replacing an earlier export of the same name."""
    if destination.exists():
        logger.info("replacing the earlier %s", destination)
        shutil.rmtree(destination) if destination.is_dir() else destination.unlink()
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(produced), str(destination))
    return destination


def _label(precision: Precision, spec: FormatSpec | None) -> str:
    return f"{precision.name} {spec.name if spec else 'PyTorch'}"


def _evaluate(path: Path, data: Path, imgsz: int, thresholds: Path | None, device: str,
              progress: ProgressCallback | None) -> EvalMetrics:
    # The gate scores mAP on the station's own predictions (one class per box, the export's input size): what must
    # not degrade is what the line will see. Ultralytics' validator adds a class per box and pads a .pt by half a
    # stride but not its fixed-shape export, which moved the demo's FP32-vs-INT8 gap by more than a point.
    result = evaluate(path, data, split=VAL_SPLIT, imgsz=imgsz, conf=DEFAULT_CONF, thresholds=thresholds,
                      device=device, progress=progress, plots=False, validator_map=False)
    return result.metrics


class _Exporter:
    """One export run; holds what every step needs so the steps stay small."""

    def __init__(self, source: SourceModel, data: Path, config: DataConfig, imgsz: int, options: ExportOptions,
                 spec: FormatSpec):
        self.source, self.data, self.config, self.imgsz, self.options, self.spec = source, data, config, imgsz, options, spec
        self.out_dir = Path(options.out_dir) if options.out_dir else source.path.parent
        self.device = options.device or ("0" if spec.needs_cuda else "cpu")
        self.stem = source.path.stem
        self.notes: list[str] = []
        self._ultralytics_fp32: dict[ExportFormat, Path] = {}  # one FP32 export per format, shared by its candidates

    def fp32(self, work: Path) -> tuple[Path, bool | None]:
        destination = self.spec.model_path(self.out_dir, self.stem, Precision.FP32)
        if self.spec.format is ExportFormat.ONNX:
            exported = export_onnx_fp32(self.source.path, work / destination.name, work, imgsz=self.imgsz,
                                        dynamic=self.options.dynamic, simplify_graph=self.options.simplify)
            self.notes += exported.notes
            return _place(exported.path, destination), exported.simplified if self.options.simplify else None
        produced = export_with_ultralytics(self.spec, self.source.path, work, imgsz=self.imgsz,
                                           dynamic=self.options.dynamic, device=self.device)
        return _place(produced, destination), None

    def _pending(self, spec: FormatSpec, precision: Precision, work: Path) -> Path:
        pending = work / "pending" / spec.model_path(Path("."), self.stem, precision).name
        pending.parent.mkdir(parents=True, exist_ok=True)
        return pending

    def int8(self, fp32: Path, calibration: CalibrationSet, work: Path,
             spec: FormatSpec | None = None) -> tuple[Path, str]:
        """The INT8 model (``spec``: this run's format), still in ``work`` (its final name depends on the gate)."""
        spec = spec or self.spec
        pending = self._pending(spec, Precision.INT8, work)
        if spec.format is ExportFormat.ONNX:
            settings = OrtInt8Settings(calibration=self.options.calibration_method)
            quantized = quantize_onnx(fp32, pending, calibration.images, self.imgsz, settings)
            self.notes += quantized.notes
            return quantized.path, spec.int8_method + f" ({settings.describe()})"
        if spec.format is ExportFormat.OPENVINO:
            # Our NNCF call on Ultralytics' FP32 IR: Ultralytics' own INT8 quantizes a layer that costs mAP. With
            # --format openvino, ``fp32`` is that IR already; in an auto run it is the ONNX reference.
            fp32_ir = fp32 if self.spec.format is ExportFormat.OPENVINO else self.ultralytics_fp32(spec, work)
            quantized = quantize_openvino(fp32_ir, pending, calibration.images, self.imgsz)
            return quantized.path, spec.int8_method
        exporting = work / f"{spec.format.value}-int8"
        exporting.mkdir(parents=True, exist_ok=True)
        data = calibration_yaml(calibration.images, self.source.class_names, exporting)
        produced = export_with_ultralytics(spec, self.source.path, exporting, imgsz=self.imgsz,
                                           dynamic=self.options.dynamic, device=self.device, calibration_data=data)
        return _place(produced, pending), spec.int8_method

    def ultralytics_fp32(self, spec: FormatSpec, work: Path) -> Path:
        """Ultralytics' FP32 export in ``spec``'s format, made once per run (the OpenVINO INT8 candidate quantizes
        the IR the FP32 IR candidate deploys); callers copy it, never move it."""
        if spec.format not in self._ultralytics_fp32:
            exporting = work / f"{spec.format.value}-fp32"
            exporting.mkdir(parents=True, exist_ok=True)
            self._ultralytics_fp32[spec.format] = export_with_ultralytics(
                spec, self.source.path, exporting, imgsz=self.imgsz, dynamic=self.options.dynamic, device=self.device)
        return self._ultralytics_fp32[spec.format]

    def fp32_candidate(self, spec: FormatSpec, work: Path) -> Path:
        """An FP32 export through Ultralytics (the OpenVINO IR candidate), still in ``work``."""
        produced, pending = self.ultralytics_fp32(spec, work), self._pending(spec, Precision.FP32, work)
        shutil.copytree(produced, pending) if produced.is_dir() else shutil.copy2(produced, pending)
        return pending

    def evaluate(self, path: Path, thresholds: Path | None) -> EvalMetrics:
        return _evaluate(path, self.data, self.imgsz, thresholds, self.device, self.options.progress)

    def runner(self, label: str, path: Path) -> Runner:
        image = preprocess(self.config.images(VAL_SPLIT)[0], self.imgsz)
        return model_runner(label, path, imgsz=self.imgsz, threads=self.options.threads, device=self.device,
                            image=image)

    def validate(self, reference: tuple[str, Path, FormatSpec | None], candidate: tuple[str, Path, FormatSpec | None],
                 thresholds: Path | None) -> tuple[dict[str, EvalMetrics], dict[str, Latency]]:
        metrics = {label: self.evaluate(path, thresholds) for label, path, _ in (reference, candidate)}
        runners = [self.runner(label, path) for label, path, _ in (reference, candidate)]
        latency = measure(runners, runs=self.options.latency_runs, warmup=self.options.warmup,
                          threads=self.options.threads)
        return metrics, latency


def _notes(spec: FormatSpec, reference: ModelReport, candidate: ModelReport, passed: bool,
           deployable_path: Path) -> list[str]:
    """What the reader of the result must also know about how it was measured."""
    notes = []
    if spec.format is ExportFormat.OPENVINO and candidate.latency.precision:
        # An auto run's reference is the FP32 ONNX model, which has no OpenVINO precision to name.
        reference_ran = (f"; the FP32 reference ran in {reference.latency.precision}" if reference.latency.precision
                         else "")
        notes.append(f"OpenVINO's CPU plugin ran the float parts in {candidate.latency.precision} on this CPU "
                     f"(INFERENCE_PRECISION_HINT{reference_ran})")
    if candidate.metrics.images < SMALL_VAL:
        notes.append(f"val holds only {candidate.metrics.images} images: mAP50 differences of about a point are "
                     "within sampling noise")
    if not passed and deployable_path.exists():
        notes.append(f"an earlier {deployable_path.name} is still in {deployable_path.parent}: this run did not make "
                     "it and did not replace it (its card says where it came from)")
    return notes


def export(model: Path | str, data: Path | str, options: ExportOptions = ExportOptions()) -> ExportResult:
    """Export ``model`` (a .pt checkpoint) and validate it against its FP32 reference on ``data``'s val split.

    Raises UsageError / DatasetError / FormatError before any export work when an input cannot work.
    The returned result says whether the model is deployable; a rejected INT8 model is kept as
    ``<stem>_int8.rejected.<suffix>`` with a card saying so.
    """
    started = time.perf_counter()
    spec = check_options(options)
    model, data = Path(model), Path(data)
    checked = check_inputs(model, data, options, spec)
    source, imgsz = checked.source, checked.imgsz
    run = _Exporter(source, data, checked.config, imgsz, options, spec)
    run.notes += checked.notes  # e.g. --imgsz rounded up to the stride: the card shows the size exported
    run.out_dir.mkdir(parents=True, exist_ok=True)
    thresholds = thresholds_file(source.path)
    threshold_source = (f"thresholds file {thresholds}" if thresholds
                        else f"conf {DEFAULT_CONF} (no thresholds.yaml next to the model)")
    calibration = select_calibration_images(checked.config, options.calib, seed=options.seed) if options.int8 else None
    if calibration is not None and len(calibration.images) < options.calib:
        run.notes.append(f"only {len(calibration.images)} train images for calibration (asked for {options.calib})")

    if options.auto_candidates:
        assert calibration is not None
        return _export_candidates(run, calibration, thresholds, threshold_source, started)

    with tempfile.TemporaryDirectory(prefix=".yolodefect-export-", dir=run.out_dir) as scratch:
        work = Path(scratch)
        fp32_path, simplified = run.fp32(work)
        precision = Precision.INT8 if options.int8 else Precision.FP32
        quantization = None
        if options.int8:
            assert calibration is not None
            candidate_path, quantization = run.int8(fp32_path, calibration, work)
            reference = (_label(Precision.FP32, spec), fp32_path, spec)
        else:
            candidate_path = fp32_path
            reference = (_label(Precision.FP32, None), source.path, None)
        candidate = (_label(precision, spec), candidate_path, spec)
        metrics, latency = run.validate(reference, candidate, thresholds)

        gate = apply_gate(metrics[reference[0]], metrics[candidate[0]], options.max_drop,
                          reference_label=reference[0], candidate_label=candidate[0])
        final = spec.model_path(run.out_dir, run.stem, precision, rejected=not gate.passed)
        if final != candidate_path:
            candidate_path = _place(candidate_path, final)
        if not gate.passed:
            logger.warning("export rejected: %s", gate.message)

    reports = {
        label: ModelReport(label, path, Precision.FP32 if label == reference[0] else precision, path_size(path),
                           metrics[label], latency[label])
        for label, path in ((reference[0], reference[1]), (candidate[0], candidate_path))
    }
    run.notes += _notes(spec, reports[reference[0]], reports[candidate[0]], gate.passed,
                        spec.model_path(run.out_dir, run.stem, precision))
    card_json, card_md = card_paths(candidate_path)
    result = ExportResult(
        source=source.path, source_sha256=source.sha256, architecture=source.architecture, format=spec.format,
        precision=precision, imgsz=imgsz, dynamic=options.dynamic, data=data, split=VAL_SPLIT,
        threshold_source=threshold_source, reference=reports[reference[0]], candidate=reports[candidate[0]],
        gate=gate, deployable=gate.passed, model_path=candidate_path, card_json=card_json, card_md=card_md,
        fp32_path=fp32_path if options.int8 else None, calibration=calibration, quantization=quantization,
        simplified=simplified, machine=machine_line(), seconds=time.perf_counter() - started, notes=run.notes,
    )
    write_card(result)
    return result


def _alone_runs(latency_runs: int) -> tuple[int, int]:
    """(runs per round, rounds) so that each model is timed about ``latency_runs`` times over alternating rounds."""
    rounds = min(ALONE_ROUNDS, latency_runs)
    return math.ceil(latency_runs / rounds), rounds


def _export_candidates(run: _Exporter, calibration: CalibrationSet, thresholds: Path | None, threshold_source: str,
                       started: float) -> ExportResult:
    """Auto ``--int8`` on a CPU: build every installed candidate, gate each against the FP32 ONNX reference, time
    them all in one deployment-true measurement (each alone, rounds alternating), deploy the fastest that passed.

    Every candidate keeps a file and a card: a passing one under its normal name (a valid model; its card says
    which one was chosen and why), a failing one under its ``.rejected`` name.
    """
    options = run.options
    reference_label = _label(Precision.FP32, run.spec)
    with tempfile.TemporaryDirectory(prefix=".yolodefect-export-", dir=run.out_dir) as scratch:
        work = Path(scratch)
        fp32_path, simplified = run.fp32(work)
        built: list[tuple[CandidatePlan, Path, str | None]] = []
        for plan in cpu_candidates():
            if plan.precision is Precision.INT8:
                path, quantization = run.int8(fp32_path, calibration, work, plan.spec)
                built.append((plan, path, quantization))
            else:
                built.append((plan, run.fp32_candidate(plan.spec, work), None))
        # Runners first: compiled, OpenVINO says which precision it computes in (bf16 on AMX / AVX-512 BF16 CPUs),
        # and that names the FP32 IR candidate for the gate, the table and the card.
        runners = [run.runner(reference_label, fp32_path)]
        for plan, path, _ in built:
            runner = run.runner(plan.label(), path)
            runner.label = plan.label(runner.precision)
            runners.append(runner)
        paths = [fp32_path, *(path for _, path, _ in built)]
        metrics = {runner.label: run.evaluate(path, thresholds) for runner, path in zip(runners, paths)}
        runs, rounds = _alone_runs(options.latency_runs)
        latency = measure(runners, runs=runs, warmup=options.warmup, threads=options.threads, mode=ALONE,
                          rounds=rounds)
        del runners, runner  # release the compiled models before their files move

        reference = ModelReport(reference_label, fp32_path, Precision.FP32, path_size(fp32_path),
                                metrics[reference_label], latency[reference_label])
        reports = []
        for (plan, path, quantization), label in zip(built, list(metrics)[1:]):
            gate = apply_gate(reference.metrics, metrics[label], options.max_drop, reference_label=reference_label,
                              candidate_label=label)
            report = ModelReport(label, path, plan.precision, path_size(path), metrics[label], latency[label])
            reports.append(CandidateReport(report, plan.format, gate, speedup(reference.latency, latency[label]),
                                           quantization=quantization))
        chosen = choose(reports)
        placed = []
        for (plan, path, _), candidate in zip(built, reports):
            final = _place(path, plan.spec.model_path(run.out_dir, run.stem, plan.precision,
                                                      rejected=not candidate.passed))
            placed.append(dataclasses.replace(candidate, report=dataclasses.replace(candidate.report, path=final),
                                              chosen=candidate is chosen))
    for candidate in placed:
        if not candidate.passed:  # in the candidates table; a warning only when nothing passed (below)
            logger.info("candidate rejected: %s", candidate.gate.message)
    choice = choice_text(placed, next((c for c in placed if c.chosen), None), options.max_drop)
    seconds = time.perf_counter() - started
    results = {}
    for (plan, _, _), candidate in zip(built, placed):
        path = candidate.report.path
        card_json, card_md = card_paths(path)
        notes = run.notes + _notes(plan.spec, reference, candidate.report, candidate.passed,
                                   plan.spec.model_path(run.out_dir, run.stem, plan.precision))
        results[path] = ExportResult(
            source=run.source.path, source_sha256=run.source.sha256, architecture=run.source.architecture,
            format=candidate.format, precision=plan.precision, imgsz=run.imgsz, dynamic=options.dynamic,
            data=run.data, split=VAL_SPLIT, threshold_source=threshold_source, reference=reference,
            candidate=candidate.report, gate=candidate.gate, deployable=candidate.passed, model_path=path,
            card_json=card_json, card_md=card_md, fp32_path=fp32_path,
            calibration=calibration if plan.precision is Precision.INT8 else None,
            quantization=candidate.quantization,
            simplified=simplified if plan.format is ExportFormat.ONNX else None,
            machine=machine_line(), seconds=seconds, notes=notes, candidates=placed, choice=choice,
        )
        write_card(results[path])
    headline = next((c for c in placed if c.chosen), None) or closest_to_passing(placed)
    if not headline.chosen:
        logger.warning("export rejected: %s", choice)
    return results[headline.report.path]
