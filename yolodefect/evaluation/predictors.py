"""Running a model over a split's images: the ``Predictor`` interface and its Ultralytics implementation.

Any callable mapping image paths to one :class:`Detections` per path (same order) can be evaluated,
so a torchvision SSD or a custom runtime plugs in without touching the metrics.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolodefect.adapters import from_ultralytics
from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.evaluation.coco_metrics import MAX_DETECTIONS
from yolodefect.inference.model_file import (DEFAULT_IMGSZ, DEFAULT_STRIDE, ModelFileError, check_imgsz,
                                             check_model_file, load_yolo, model_stride, resolve_imgsz)

Predictor = Callable[[list[Path]], list[Detections]]


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself, read without running it."""

    path: Path
    format: str  # "pt", or the export's suffix / "openvino" for a folder
    class_names: list[str] | None
    imgsz: int | tuple[int, int] | None
    fixed_shape: bool = False  # an export that only accepts ``imgsz`` (not exported with dynamic=True)
    stride: int = DEFAULT_STRIDE  # the model's largest stride: image sizes are multiples of it


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to predict: the ``ultralytics.YOLO``, what its file says, the size it runs at and why."""

    yolo: Any
    info: ModelInfo
    imgsz: int | tuple[int, int]
    notes: list[str] = field(default_factory=list)  # e.g. the requested size rounded up to the stride


def _names_list(names: Any) -> list[str] | None:
    if isinstance(names, str):
        try:
            names = ast.literal_eval(names)  # ONNX metadata stores the dict as its repr
        except (ValueError, SyntaxError):
            return None
    if isinstance(names, dict):
        return [str(names[key]) for key in sorted(names, key=int)]
    if isinstance(names, (list, tuple)):
        return [str(name) for name in names]
    return None


def _imgsz(value: Any) -> int | tuple[int, int] | None:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value[0] if value[0] == value[1] else (int(value[0]), int(value[1]))
    return None


def read_model_info(model_path: Path | str, *, loaded: Any = None) -> ModelInfo:
    """Class names, training/export image size and stride of a .pt checkpoint or an Ultralytics export.

    ``loaded`` is an ``ultralytics.YOLO`` already made from ``model_path``, to avoid loading twice.
    Raises UsageError when the file is missing and ModelFileError when it cannot be read.
    """
    path = Path(model_path)
    if path.suffix.lower() == ".pt":
        model = loaded or load_yolo(path, task="detect")
        # A checkpoint remembers its training arguments; imgsz is the size it learned at.
        return ModelInfo(path, "pt", _names_list(model.names), _imgsz(model.overrides.get("imgsz")),
                         stride=model_stride(model))
    if loaded is None:
        check_model_file(path)  # a damaged export gets the same one message as a damaged .pt
    # Exports carry Ultralytics metadata; reading it needs no runtime (OpenVINO, TensorRT) installed.
    from ultralytics.nn.backends.base import BaseBackend

    try:
        metadata = BaseBackend.read_metadata(path) or {}
    except Exception as error:  # damaged metadata surfaces as YAML, Unicode or protobuf errors
        raise ModelFileError(path, f"its Ultralytics metadata is unreadable ({type(error).__name__})") from error
    kind = "openvino" if path.is_dir() and path.name.endswith("_openvino_model") else path.suffix.lstrip(".") or "dir"
    args = metadata.get("args") or {}
    if isinstance(args, str):
        try:
            args = ast.literal_eval(args)
        except (ValueError, SyntaxError):
            args = {}
    imgsz = _imgsz(metadata.get("imgsz"))
    dynamic = bool(args.get("dynamic", False)) if isinstance(args, dict) else False
    fixed_shape = imgsz is not None and not dynamic
    return ModelInfo(path, kind, _names_list(metadata.get("names")), imgsz, fixed_shape=fixed_shape,
                     stride=_stride(metadata.get("stride")))


def _stride(value: Any) -> int:
    try:
        return int(value) if value is not None and int(value) > 0 else DEFAULT_STRIDE
    except (TypeError, ValueError):
        return DEFAULT_STRIDE


def load_detection_model(model_path: Path | str, imgsz: int | tuple[int, int] | None = None) -> LoadedModel:
    """``ultralytics.YOLO`` for any backend, its :class:`ModelInfo`, and the image size to run it at.

    ``imgsz`` defaults to the size the model was trained or exported at (else 640); a requested size is rounded up
    to the model's stride and a fixed-shape export always runs at its own size, each with a note saying so.
    """
    if imgsz is not None:
        check_imgsz(imgsz)  # before loading anything
    model = load_yolo(model_path, task="detect")
    info = read_model_info(model_path, loaded=model)
    if imgsz is None:
        return LoadedModel(model, info, info.imgsz or DEFAULT_IMGSZ)
    if info.fixed_shape and _imgsz(imgsz) != info.imgsz:
        # Ultralytics silently runs a fixed-shape export at its own size; say so and report that size.
        note = (f"{Path(model_path).name} was exported for imgsz {info.imgsz} (a fixed shape): running at that size, "
                f"not {imgsz}")
        return LoadedModel(model, info, info.imgsz, [note])
    used, note = resolve_imgsz(imgsz, info.stride)
    return LoadedModel(model, info, used, [note] if note else [])


class UltralyticsPredictor:
    """A :data:`Predictor` for anything ``ultralytics.YOLO`` loads: .pt, .onnx, OpenVINO folder, .engine.

    Predicts at a low confidence (0.001 by default) because AP needs the whole ranking; the
    evaluator applies the operating thresholds afterwards. Images are letterboxed to the full
    ``imgsz`` square for every backend (``rect=False``), so a .pt and its fixed-shape export see
    identical inputs and their metrics differ only by numerics.
    """

    def __init__(
        self,
        model_path: Path | str,
        *,
        imgsz: int | tuple[int, int] | None = None,
        device: str = "cpu",
        batch: int = 8,
        conf: float = 0.001,
        iou: float = 0.7,
        half: bool = False,
        max_det: int = MAX_DETECTIONS,
        progress: bool = True,
    ):
        loaded = load_detection_model(model_path, imgsz)
        self._model, self.info, self.imgsz, self.notes = loaded.yolo, loaded.info, loaded.imgsz, loaded.notes
        self.device = device
        self.batch = batch
        self.conf = conf
        self.iou = iou
        self.half = half
        self.max_det = max_det
        self.progress = progress
        self.class_names = self.info.class_names or _names_list(self._model.names)

    def __call__(self, images: list[Path]) -> list[Detections]:
        if not images:
            return []
        # Ultralytics sorts a list source, so results are matched back to the caller's order by path.
        wanted = [os.path.abspath(image) for image in images]
        results = self._model.predict(
            source=sorted(set(wanted)),
            imgsz=self.imgsz,
            device=self.device,
            batch=self.batch,
            conf=self.conf,
            iou=self.iou,
            **({"quantize": 16} if self.half else {}),  # Ultralytics 8.4 spells half precision this way
            max_det=self.max_det,
            rect=False,
            stream=True,  # one batch in memory at a time
            verbose=False,
            save=False,
        )
        by_path: dict[str, Detections] = {}
        with _progress(len(set(wanted)), f"predicting {self.info.path.name}", enabled=self.progress) as advance:
            for result in results:
                by_path[os.path.abspath(result.path)] = from_ultralytics(result)
                advance()
        missing = [path for path in wanted if path not in by_path]
        if missing:
            raise UsageError(
                f"Ultralytics returned no result for {len(missing)} image(s), e.g. {missing[0]}; "
                "is the file a readable image?"
            )
        return [by_path[path] for path in wanted]


def predict_with_ultralytics(
    model_path: Path | str,
    images: Sequence[Path],
    *,
    imgsz: int | tuple[int, int] | None = None,
    device: str = "cpu",
    batch: int = 8,
    conf: float = 0.001,
    iou: float = 0.7,
    half: bool = False,
    progress: bool = True,
) -> list[Detections]:
    """One :class:`Detections` per image, in order, from any model Ultralytics can load."""
    predictor = UltralyticsPredictor(
        model_path, imgsz=imgsz, device=device, batch=batch, conf=conf, iou=iou, half=half, progress=progress
    )
    return predictor(list(images))


@contextmanager
def _progress(total: int, description: str, *, enabled: bool) -> Iterator[Callable[[], None]]:
    """A transient rich progress bar; yields ``advance()`` (a no-op when disabled)."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)
