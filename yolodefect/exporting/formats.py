"""The export formats ``yolodefect export`` offers, as one table (like Ultralytics' ``export_formats()``).

Everything format-specific that is decided before work starts (file names, whether INT8 exists, what
must be installed, which hardware it needs) is read from this table, never from scattered ``if``s.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class Precision(str, Enum):
    FP32 = "fp32"
    INT8 = "int8"


class ExportFormat(str, Enum):
    ONNX = "onnx"
    OPENVINO = "openvino"
    ENGINE = "engine"


@dataclass(frozen=True)
class FormatSpec:
    """One row of the table.

    ``suffix`` follows Ultralytics: a file suffix (``.onnx``) or a folder suffix (``_openvino_model``).
    ``modules`` must import for the format to work at all; ``extra`` is the pip extra providing them.
    ``int8_method`` names who quantizes and how, for the result and the model card.
    """

    format: ExportFormat
    name: str
    suffix: str
    runtime: str
    int8_method: str
    modules: tuple[str, ...]
    extra: str | None
    needs_cuda: bool
    is_folder: bool

    def missing_modules(self) -> list[str]:
        """The ``modules`` that cannot be imported here (checked without importing them)."""
        return [module for module in self.modules if importlib.util.find_spec(module.split(".")[0]) is None]

    def model_path(self, folder: Path, stem: str, precision: Precision, *, rejected: bool = False) -> Path:
        """``best`` -> ``best.onnx``, ``best_int8.onnx``, ``best_int8.rejected.onnx``; folders get ``_rejected``."""
        name = stem + ("_int8" if precision is Precision.INT8 else "")
        if self.is_folder:
            return folder / (name + ("_rejected" if rejected else "") + self.suffix)
        return folder / (name + (".rejected" if rejected else "") + self.suffix)


def export_formats() -> dict[ExportFormat, FormatSpec]:
    """The formats, in the order ``--help`` lists them."""
    rows = [
        FormatSpec(ExportFormat.ONNX, "ONNX", ".onnx", "onnxruntime",
                   "ONNX Runtime static quantization",
                   ("onnx", "onnxruntime", "onnxruntime.quantization"), None, needs_cuda=False, is_folder=False),
        FormatSpec(ExportFormat.OPENVINO, "OpenVINO", "_openvino_model", "openvino",
                   "NNCF post-training quantization of Ultralytics' FP32 IR (MIXED preset; float: the Detect "
                   "head's decoding, Sigmoids, model.1's convolution)",
                   ("openvino", "nncf"), "openvino", needs_cuda=False, is_folder=True),
        FormatSpec(ExportFormat.ENGINE, "TensorRT", ".engine", "tensorrt",
                   "TensorRT INT8 calibration through Ultralytics",
                   ("tensorrt",), None, needs_cuda=True, is_folder=False),
    ]
    return {row.format: row for row in rows}


def format_spec(value: str | ExportFormat) -> FormatSpec:
    """The row for ``value`` ('onnx', 'openvino', 'engine'); ValueError naming the choices otherwise."""
    table = export_formats()
    try:
        return table[ExportFormat(str(getattr(value, "value", value)).lower())]
    except ValueError:
        raise ValueError(f"unknown export format {value!r}; choose one of {', '.join(f.value for f in table)}") from None
