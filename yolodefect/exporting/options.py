"""``ExportOptions``: what the user asked for, checked when built (before any work starts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from yolodefect.errors import UsageError
from yolodefect.exporting.formats import ExportFormat, FormatSpec, format_spec
from yolodefect.inference.model_file import check_imgsz
from yolodefect.option_checks import flag, whole_number
from yolodefect.progress import ProgressCallback

DEFAULT_CALIBRATION_IMAGES = 300
AUTO = "auto"


class Calibration(str, Enum):
    """How ONNX Runtime turns calibration activations into INT8 ranges (``--calibration``)."""

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"


# Chosen by measurement (YOLO11n, 4-class steel model, 40 val images, 120 calibration images): MinMax kept
# mAP50 within noise of FP32 (+0.3), Percentile (99.999, ORT's symmetric default) lost 1.1 points, Entropy lost
# 2.8 points and took 12x longer to calibrate. Percentile and Entropy clip the rare large activations YOLO's
# detection layers rely on.
DEFAULT_CALIBRATION = Calibration.MINMAX


@dataclass(frozen=True)
class ExportOptions:
    """Options of ``yolodefect export MODEL --data DATA``.

    ``imgsz`` defaults to the size the model was trained at; it is rounded up to a multiple of the model's
    stride (with a note in the result). ``calib`` images come from DATA's train
    split (stratified by class, background images included, drawn with ``seed``); ``max_drop`` is the
    largest mAP50 loss, in points, that still lets the INT8 model ship. ``calibration`` applies to the
    ONNX Runtime backend only (None: its default). ``out_dir`` defaults to the model's folder.
    ``device`` runs validation and, for TensorRT, the export (None: "cpu", or GPU 0 for engine).
    ``format`` None is "auto": with ``int8`` on the CPU, every installed CPU candidate (INT8 ONNX Runtime, and with
    the openvino extra INT8 OpenVINO and the OpenVINO IR at the CPU's default precision) is built, gated and timed,
    and the fastest that passes is the deployable model; otherwise ONNX.
    """

    int8: bool = False
    format: str | None = None  # None (or "auto"): auto, see above
    imgsz: int | None = None
    dynamic: bool = False
    calib: int = DEFAULT_CALIBRATION_IMAGES
    seed: int = 0
    max_drop: float = 1.0
    latency_runs: int = 50
    warmup: int = 10
    threads: int = 2
    out_dir: Path | None = None
    calibration: str | None = None
    simplify: bool = True
    device: str | None = None
    progress: ProgressCallback | None = field(default=None, compare=False, repr=False)  # told (stage, done, total)

    def __post_init__(self) -> None:
        check_options(self)

    @property
    def spec(self) -> FormatSpec:
        """The single format's row; in auto mode ONNX's (the reference, and the one candidate always built)."""
        return format_spec(ExportFormat.ONNX if self.auto_format else str(self.format))

    @property
    def auto_format(self) -> bool:
        return self.format is None or str(self.format).lower() == AUTO

    @property
    def auto_candidates(self) -> bool:
        """Build and compare every installed CPU candidate: --int8 on the CPU without --format."""
        return self.auto_format and self.int8 and (self.device is None or self.device.lower() == "cpu")

    @property
    def calibration_method(self) -> Calibration:
        return Calibration(self.calibration) if self.calibration else DEFAULT_CALIBRATION


def check_options(options: ExportOptions) -> FormatSpec:
    """Reject impossible or meaningless combinations (run by ``ExportOptions`` itself); returns the format's row."""
    try:
        spec = options.spec
    except ValueError as error:
        raise UsageError(str(error)) from None
    if options.imgsz is not None:
        if isinstance(options.imgsz, (tuple, list)):  # an export is square: one number
            raise UsageError(f"--imgsz must be a positive whole number of pixels, got {options.imgsz!r}")
        check_imgsz(options.imgsz)  # the stride is applied once the checkpoint is loaded
    for name, minimum in (("calib", 1), ("latency_runs", 1), ("threads", 1), ("warmup", 0)):
        whole_number(flag(name), getattr(options, name), minimum)
    if not isinstance(options.max_drop, (int, float)) or isinstance(options.max_drop, bool):
        raise UsageError(f"--max-drop is in mAP50 points (e.g. 1.0), got {options.max_drop!r}")
    if options.calibration is not None:
        if spec.format is not ExportFormat.ONNX or not options.int8:
            raise UsageError("--calibration chooses ONNX Runtime's INT8 calibration: it needs --int8 and --format onnx "
                             f"({spec.name} calibrates its own way)")
        choices = ", ".join(c.value for c in Calibration)
        if options.calibration not in {c.value for c in Calibration}:
            raise UsageError(f"--calibration {options.calibration!r}: choose one of {choices}")
    if not options.simplify and spec.format is not ExportFormat.ONNX:
        raise UsageError("--no-simplify applies to ONNX exports only")
    return spec
