"""``export``: a trained checkpoint to a deployable ONNX / OpenVINO / TensorRT model, validated in the same run.

Steps, each failing loudly: check everything (options, runtime, checkpoint, image size, dataset) ->
export FP32 -> (``int8``) choose calibration images and quantize -> evaluate both with THE evaluator on
val at the station's thresholds -> time both at batch 1 -> gate on the mAP50 drop -> write the model
under its deployable or rejected name, next to its model card.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

from yolodefect.data.yolo_dataset import DataConfig
from yolodefect.evaluate import evaluate
from yolodefect.evaluation.metrics import EvalMetrics
from yolodefect.exporting.calibration import CalibrationSet, preprocess, select_calibration_images
from yolodefect.exporting.card import card_paths, write_card
from yolodefect.exporting.formats import ExportFormat, FormatSpec, Precision, export_formats
from yolodefect.exporting.gate import apply_gate
from yolodefect.exporting.onnx_fp32 import export_onnx_fp32
from yolodefect.exporting.onnx_int8 import OrtInt8Settings, quantize_onnx
from yolodefect.exporting.options import Calibration, ExportOptions, check_options
from yolodefect.exporting.result import ExportResult, ModelReport, path_size
from yolodefect.exporting.source import SourceModel, check_inputs, thresholds_file
from yolodefect.exporting.ultralytics_formats import calibration_yaml, export_with_ultralytics
from yolodefect.inference.rules import DEFAULT_CONF
from yolodefect.inference.timing import Latency, measure, model_runner
from yolodefect.machine import machine_line
from yolodefect.progress import ProgressCallback

__all__ = ["Calibration", "ExportFormat", "ExportOptions", "ExportResult", "Precision", "export", "export_formats"]

logger = logging.getLogger(__name__)

VAL_SPLIT = "val"
SMALL_VAL = 100  # below this many val images a 1-point mAP50 gate is within sampling noise


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

    def int8(self, fp32: Path, calibration: CalibrationSet, work: Path) -> tuple[Path, str]:
        """The INT8 model, still in ``work`` (its final name depends on the gate)."""
        pending = work / "pending" / self.spec.model_path(Path("."), self.stem, Precision.INT8).name
        pending.parent.mkdir(parents=True, exist_ok=True)
        if self.spec.format is ExportFormat.ONNX:
            settings = OrtInt8Settings(calibration=self.options.calibration_method)
            quantized = quantize_onnx(fp32, pending, calibration.images, self.imgsz, settings)
            self.notes += quantized.notes
            return quantized.path, self.spec.int8_method + f" ({settings.describe()})"
        data = calibration_yaml(calibration.images, self.source.class_names, work)
        produced = export_with_ultralytics(self.spec, self.source.path, work, imgsz=self.imgsz,
                                           dynamic=self.options.dynamic, device=self.device, calibration_data=data)
        return _place(produced, pending), self.spec.int8_method

    def validate(self, reference: tuple[str, Path, FormatSpec | None], candidate: tuple[str, Path, FormatSpec | None],
                 thresholds: Path | None) -> tuple[dict[str, EvalMetrics], dict[str, Latency]]:
        metrics = {label: _evaluate(path, self.data, self.imgsz, thresholds, self.device, self.options.progress)
                   for label, path, _ in (reference, candidate)}
        image = preprocess(self.config.images(VAL_SPLIT)[0], self.imgsz)
        runners = [model_runner(label, path, imgsz=self.imgsz, threads=self.options.threads, device=self.device,
                                image=image) for label, path, _ in (reference, candidate)]
        latency = measure(runners, runs=self.options.latency_runs, warmup=self.options.warmup,
                          threads=self.options.threads)
        return metrics, latency


def _notes(spec: FormatSpec, reference: ModelReport, candidate: ModelReport, passed: bool,
           deployable_path: Path) -> list[str]:
    """What the reader of the result must also know about how it was measured."""
    notes = []
    if spec.format is ExportFormat.OPENVINO and candidate.latency.precision:
        notes.append(f"OpenVINO's CPU plugin ran the float parts in {candidate.latency.precision} on this CPU "
                     f"(INFERENCE_PRECISION_HINT; the FP32 reference ran in {reference.latency.precision})")
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
