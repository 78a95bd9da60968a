"""INT8 ONNX by static post-training quantization with ONNX Runtime, tuned for x86 CPUs with VNNI.

What was measured (YOLO11n, batch 1, 2 threads, AMD EPYC with AVX-512 VNNI; bench/export_int8.py):

* Ultralytics 8.4's own ``quantize=8`` path quantizes only Conv (per-tensor S8 activations) and leaves
  every SiLU in float, so each Conv is wrapped in Quantize/Dequantize and ONNX Runtime cannot keep the
  tensors in its NHWC int8 layout: it runs *slower* than FP32.
* Quantizing the whole body instead (Conv, Sigmoid, Mul, Add, Concat, MaxPool, Resize, Split, the
  attention's MatMul/Softmax) lets ONNX Runtime fuse every QDQ group into QLinear kernels that stay in
  NHWC uint8 from the stem to the head: U8 activations x per-channel S8 weights is the pairing MLAS's
  VNNI kernels take directly (``reduce_range`` off: VNNI accumulates in int32 without saturation).
  Convolutions then run ~3-6x faster than FP32.
* What keeps the total speed-up below the convolutions' is SiLU: ONNX Runtime fuses FP32 ``x*sigmoid(x)``
  into one vectorised QuickGelu pass, but has no int8 SiLU, so INT8 pays a QLinearSigmoid (table lookup)
  plus a QLinearMul per activation - about twice the FP32 cost of the same activations.
* The stem Conv sees 3 input channels, too few for VNNI's 4-wide dot products: its int8 kernel is
  ~2x slower than FP32, so the stem Conv and its SiLU stay float (the image needs no quantize step).
* Everything after the Detect head's last Convs (DFL, box decoding, sigmoid, concat of the scales) stays
  float: one int8 scale cannot span box pixels and class probabilities, and it costs little. The last
  Convs themselves are quantized (their outputs, the raw box distributions and class logits, get their
  own per-tensor scales per branch and scale): keeping them float too cost ~5% speed (NCHWc reorders
  around float convs) and gained no accuracy (same mAP50, same score and box errors vs FP32).
* ``quant_pre_process`` is not run: after onnxsim it only drops a few Constant nodes.
* S8 activations ran 2x slower than U8 here; per-tensor weights were slower and no more accurate.

Net, median batch-1 latency vs FP32 ONNX Runtime: 1.24-1.55x at 256 px, 1.38-1.78x at 640 px depending on
the VM's load that day (Ultralytics' path: 0.47-0.58x), mAP50 within noise of FP32. The 2x target is not
reached with stock ONNX Runtime kernels because of the int8 SiLU cost above: the same network with ReLU
(folded into the int8 convolution) gets about 2x (1.91-2.15x) from this same path (bench/int8_activation.py).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from yolodefect.errors import YoloDefectError
from yolodefect.exporting.calibration import CalibrationReader
from yolodefect.exporting.graph import find_head_tail, node_counts
from yolodefect.exporting.options import Calibration

logger = logging.getLogger(__name__)

QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger")


@dataclass(frozen=True)
class OrtInt8Settings:
    """The knobs of ONNX Runtime's ``quantize_static`` that matter for YOLO on CPU; defaults are the measured best."""

    calibration: Calibration = Calibration.MINMAX
    activations: str = "uint8"  # "uint8" (fastest on x86 VNNI) or "int8"
    per_channel: bool = True
    float_stem: bool = True  # keep the 3-channel stem Conv + its SiLU in float
    float_head_convs: bool = False  # keep the Detect head's last Convs in float too (measured: no accuracy gain)
    conv_only: bool = False  # quantize Conv only (Ultralytics' choice); False quantizes the whole body

    def describe(self) -> str:
        parts = [
            "QDQ",
            f"{'U8' if self.activations == 'uint8' else 'S8'} activations",
            f"{'per-channel' if self.per_channel else 'per-tensor'} S8 weights",
            f"{self.calibration.value} calibration",
            "Conv only" if self.conv_only else "whole body quantized",
        ]
        floats = ["head tail"] + (["head's last Convs"] if self.float_head_convs else []) + (
            ["stem Conv"] if self.float_stem else [])
        return ", ".join(parts) + f"; float: {', '.join(floats)}"


@dataclass(frozen=True)
class OrtInt8Export:
    path: Path
    settings: OrtInt8Settings
    float_nodes: list[str]
    quantized_ops: dict[str, int]
    seconds: float
    notes: list[str] = field(default_factory=list)


def stem_nodes(model: onnx.ModelProto) -> list[str]:
    """The Conv(s) reading a graph input directly, and the SiLU (Sigmoid, Mul) right after each."""
    inputs = {value.name for value in model.graph.input}
    convs = [node for node in model.graph.node if node.op_type == "Conv" and node.input[0] in inputs]
    names: list[str] = []
    for conv in convs:
        out = conv.output[0]
        sigmoids = [n for n in model.graph.node if n.op_type == "Sigmoid" and n.input[0] == out]
        muls = [n for n in model.graph.node if n.op_type == "Mul" and out in n.input
                and any(s.output[0] in n.input for s in sigmoids)]
        names += [conv.name, *(n.name for n in sigmoids), *(n.name for n in muls)]
    return names


def float_nodes(model: onnx.ModelProto, settings: OrtInt8Settings) -> list[str]:
    """The nodes ``quantize_static`` must leave in float (``nodes_to_exclude``)."""
    tail = find_head_tail(model)
    names = list(tail.tail) + (list(tail.last_convs) if settings.float_head_convs else [])
    if settings.float_stem:
        names += stem_nodes(model)
    if settings.conv_only:
        names += [node.name for node in model.graph.node if node.op_type not in {"Conv", "MatMul", "Gemm"}]
    return sorted(set(names))


def _quant_types(settings: OrtInt8Settings):
    from onnxruntime.quantization import QuantType

    activation = QuantType.QUInt8 if settings.activations == "uint8" else QuantType.QInt8
    return activation, QuantType.QInt8


def _method(calibration: Calibration):
    from onnxruntime.quantization import CalibrationMethod

    return {
        Calibration.MINMAX: CalibrationMethod.MinMax,
        Calibration.PERCENTILE: CalibrationMethod.Percentile,
        Calibration.ENTROPY: CalibrationMethod.Entropy,
    }[calibration]


class _DropPreprocessingHint(logging.Filter):
    """ONNX Runtime logs 'Please consider to run pre-processing before quantization' on the root logger. Measured:
    after onnxsim its ``quant_pre_process`` only drops a few Constant nodes (and its symbolic shape inference fails
    on YOLO graphs), so the hint is noise here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _without_preprocessing_hint() -> Iterator[None]:
    hint = _DropPreprocessingHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def quantize_onnx(source: Path, destination: Path, images: list[Path], imgsz: int,
                  settings: OrtInt8Settings = OrtInt8Settings()) -> OrtInt8Export:
    """Quantize the FP32 ONNX ``source`` into ``destination`` with ``images`` as calibration data."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    if not images:
        raise YoloDefectError("INT8 calibration needs at least one image")
    model = onnx.load(str(source))
    excluded = float_nodes(model, settings)
    activation, weight = _quant_types(settings)
    reader = CalibrationReader(images, imgsz, input_name=model.graph.input[0].name)
    extra_options = {
        # Calibrate one image at a time: ranges and histograms are merged slice by slice, so memory stays at one
        # image's activations however many calibration images there are.
        "CalibStridedMinMax": 1,
        "ActivationSymmetric": settings.activations == "int8",
        "WeightSymmetric": True,
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="yolodefect-int8-", dir=destination.parent) as scratch:
        scratch_model = Path(scratch) / "int8.onnx"
        try:
            with _without_preprocessing_hint():
                quantize_static(
                    str(source), str(scratch_model), reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=settings.per_channel,
                    reduce_range=False,
                    activation_type=activation,
                    weight_type=weight,
                    nodes_to_exclude=excluded,
                    calibrate_method=_method(settings.calibration),
                    extra_options=extra_options,
                )
        except YoloDefectError:  # e.g. an unreadable calibration image, already explained
            raise
        except Exception as error:
            raise YoloDefectError(f"ONNX Runtime could not quantize {source.name} "
                                  f"({type(error).__name__}: {error})") from error
        quantized = onnx.load(str(scratch_model))
    # Ultralytics reads names, imgsz, stride and task from the metadata: carry it over unchanged.
    del quantized.metadata_props[:]
    for prop in model.metadata_props:
        quantized.metadata_props.add(key=prop.key, value=prop.value)
    counts = node_counts(quantized, QUANTIZED_OPS)
    if not counts.get("QuantizeLinear") and not counts.get("QLinearConv"):
        raise YoloDefectError(f"quantizing {source.name} produced no quantized operator; nothing would run in INT8")
    destination.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(quantized, str(destination))
    seconds = time.perf_counter() - started
    logger.info("quantized %s in %.1fs (%s)", destination.name, seconds, settings.describe())
    return OrtInt8Export(destination, settings, excluded, counts, seconds)
