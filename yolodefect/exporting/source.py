"""Everything checked before an export starts: the checkpoint, the dataset, the image size, the runtime.

Each problem is one clear exception, raised before minutes of export and calibration work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from yolodefect.data.yolo_dataset import DataConfig, label_path_for, load_data_config, read_label_lines
from yolodefect.errors import DatasetError, UsageError
from yolodefect.exporting.formats import FormatSpec
from yolodefect.exporting.options import ExportOptions
from yolodefect.inference.model_file import (CHECKPOINT, DEFAULT_IMGSZ, load_yolo, missing_model, read_model_file,
                                             resolve_imgsz)
from yolodefect.inference.names import names_list

logger = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.yaml"


@dataclass(frozen=True)
class SourceModel:
    """A loaded, checked PyTorch checkpoint."""

    path: Path
    sha256: str
    class_names: list[str]
    train_imgsz: int | None
    stride: int
    architecture: str


def _requirements(spec: FormatSpec) -> None:
    missing = spec.missing_modules()
    if spec.needs_cuda:
        import torch

        if not torch.cuda.is_available() or missing:
            why = "no CUDA GPU is visible" if not torch.cuda.is_available() else f"{', '.join(missing)} is not installed"
            raise UsageError(f"--format {spec.format.value} ({spec.name}) needs an NVIDIA GPU and tensorrt ({why}); "
                             "on a CPU use --format onnx or --format openvino")
    if missing:
        extra = f"pip install 'yolodefect[{spec.extra}]'" if spec.extra else f"pip install {' '.join(missing)}"
        raise UsageError(f"--format {spec.format.value} needs {', '.join(missing)}, which is not installed: {extra}")


def load_source_model(path: Path) -> SourceModel:
    """Load a detection checkpoint; UsageError when missing or not a .pt, ModelFileError when unreadable."""
    if not path.exists():
        raise missing_model(path, "the PyTorch checkpoint, e.g. runs/train/weights/best.pt")
    if path.is_dir() or path.suffix.lower() != ".pt":
        raise UsageError(f"model {path} is not a PyTorch checkpoint: export starts from the .pt file that training "
                         "wrote (e.g. runs/train/weights/best.pt), not from an export")
    yolo = load_yolo(path, expected=CHECKPOINT)
    task = getattr(yolo, "task", None)
    if task != "detect":
        raise UsageError(f"model {path} is a {task!r} model; yolodefect exports detection models only")
    model = read_model_file(path, loaded=yolo)
    train_imgsz = max(model.imgsz) if isinstance(model.imgsz, tuple) else model.imgsz
    architecture = str(yolo.overrides.get("model") or getattr(yolo.model, "yaml", {}).get("yaml_file") or "unknown")
    return SourceModel(path, model.sha256, names_list(model.class_names), train_imgsz, model.stride, architecture)


def export_imgsz(requested: int | None, model: SourceModel) -> tuple[int, str | None]:
    """The export size (default: the training size) rounded up to the model's stride, and a note when rounded."""
    imgsz, note = resolve_imgsz(requested or model.train_imgsz or DEFAULT_IMGSZ, model.stride)
    return int(imgsz), note


def load_dataset(data: Path, model: SourceModel, *, calibrate: bool) -> DataConfig:
    """The dataset, with a val split holding images (and a train split when INT8 calibration needs it)."""
    config = load_data_config(data)
    needed = ["val", "train"] if calibrate else ["val"]
    for split in needed:
        why = "to validate the export" if split == "val" else "for INT8 calibration images"
        if split not in config.split_dirs:
            raise DatasetError(f"{data} has no {split} split; export needs it {why}")
        if not config.images(split):
            raise DatasetError(f"{data}: the {split} folder {config.split_dirs[split]} holds no images; "
                               f"export needs them {why}")
    if not any(read_label_lines(label_path_for(image)) for image in config.images("val")):
        raise DatasetError(f"{data}: no image of the val split has a labelled box, so mAP cannot be measured and "
                           "the export cannot be validated; label the val images (or point to the right labels folder)")
    if list(config.class_names) != model.class_names:
        raise UsageError(f"the classes of {model.path.name} do not match {data}: model {model.class_names}, "
                         f"dataset {config.class_names}; export with the dataset the model was trained on")
    return config


def thresholds_file(model: Path) -> Path | None:
    """The model's thresholds.yaml (written by ``yolodefect eval --target-recall``) when it sits next to it."""
    path = model.parent / THRESHOLDS_FILE
    return path if path.is_file() else None


@dataclass(frozen=True)
class CheckedInputs:
    """What an export starts from, all checked: the checkpoint, the dataset and the size really exported at."""

    source: SourceModel
    config: DataConfig
    imgsz: int
    notes: list[str]


def check_inputs(model: Path, data: Path, options: ExportOptions, spec: FormatSpec) -> CheckedInputs:
    """Runtime requirements first (cheapest), then the checkpoint, the image size and the dataset."""
    _requirements(spec)
    source = load_source_model(Path(model))
    imgsz, note = export_imgsz(options.imgsz, source)
    config = load_dataset(Path(data), source, calibrate=options.int8)
    return CheckedInputs(source, config, imgsz, [note] if note else [])
