"""The FP32 ONNX export: Ultralytics' exporter (no onnxslim), then onnxsim, then ORT-friendly rewrites."""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from yolodefect.errors import YoloDefectError
from yolodefect.exporting.graph import decompose_inner_softmax

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    simplified: bool
    rewritten: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def quiet_ultralytics() -> Iterator[None]:
    """Ultralytics prints export banners and 'Predict:'/'Validate:' hints at INFO, NNCF one line per layer it
    leaves in float; keep only their warnings.

    Two warnings a user can do nothing about are dropped too: OpenVINO's converter traces the model with
    ``torch.jit.trace``, which torch calls deprecated (a FutureWarning per trace), and torch warns once, when NNCF
    loads its C++ extension helper, that no CUDA runtime is found (a CPU export needs none)."""
    from ultralytics.utils import LOGGER

    loggers = [LOGGER, logging.getLogger("nncf"), logging.getLogger("torch.utils.cpp_extension")]
    floors = [logging.WARNING, logging.WARNING, logging.ERROR]
    levels = [logger_.level for logger_ in loggers]
    for logger_, floor in zip(loggers, floors):
        logger_.setLevel(max(logger_.level, floor))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace(_method)?` is deprecated",
                                    category=FutureWarning)
            yield
    finally:
        for logger_, level in zip(loggers, levels):
            logger_.setLevel(level)


def ultralytics_export(checkpoint: Path, work_dir: Path, **arguments) -> Path:
    """Run Ultralytics' exporter on a copy of ``checkpoint`` inside ``work_dir`` (it writes next to its input).

    Ultralytics' AssertionErrors and RuntimeErrors become one :class:`YoloDefectError` naming the format.
    """
    from ultralytics import YOLO

    copy = work_dir / checkpoint.name
    if not copy.exists():
        shutil.copy2(checkpoint, copy)
    try:
        with quiet_ultralytics():
            produced = YOLO(str(copy), task="detect").export(verbose=False, **arguments)
    except Exception as error:
        raise YoloDefectError(f"Ultralytics could not export {checkpoint.name} to {arguments.get('format')} "
                              f"({type(error).__name__}: {error})") from error
    if not produced:
        raise YoloDefectError(f"Ultralytics returned no file exporting {checkpoint.name} to {arguments.get('format')}")
    return Path(produced)


def simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """onnxsim's simplified graph, or the input and the reason it could not be simplified."""
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
    except Exception as error:  # onnxsim fails in many ways (unsupported op, shape inference, protobuf size)
        return model, f"{type(error).__name__}: {error}".strip()
    if not ok:
        return model, "onnxsim's check found the simplified graph's outputs differ from the original's"
    return simplified, None


def export_onnx_fp32(checkpoint: Path, destination: Path, work_dir: Path, *, imgsz: int, dynamic: bool,
                     simplify_graph: bool = True) -> OnnxExport:
    """FP32 ONNX at ``destination``: static (1, 3, imgsz, imgsz) input unless ``dynamic``, batch 1."""
    produced = ultralytics_export(checkpoint, work_dir, format="onnx", imgsz=imgsz, dynamic=dynamic, simplify=False,
                                  batch=1, device="cpu")
    model = onnx.load(str(produced))
    notes: list[str] = []
    simplified = False
    if simplify_graph:
        model, failure = simplify(model)
        simplified = failure is None
        if failure:
            notes.append(f"onnxsim could not simplify the graph, so it is exported as traced ({failure})")
            logger.warning("onnxsim failed; keeping the unsimplified graph: %s", failure)
    rewritten = decompose_inner_softmax(model)
    if rewritten:
        notes.append(f"DFL Softmax rewritten as exp/sum on its axis ({len(rewritten)} node(s)): same outputs to float "
                     "rounding, ~10x faster in ONNX Runtime")
    destination.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(destination))
    return OnnxExport(destination, simplified, rewritten, notes)
