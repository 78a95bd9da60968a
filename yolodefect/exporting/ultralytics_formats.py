"""OpenVINO and TensorRT exports, FP32 and INT8, through Ultralytics' own exporter.

Ultralytics calibrates INT8 on a data.yaml split; we hand it a small data.yaml whose splits hold
exactly our calibration images (stratified, seeded, from train), so every backend calibrates on
the same images.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import yaml

from yolodefect.exporting.formats import ExportFormat, FormatSpec
from yolodefect.exporting.onnx_fp32 import ultralytics_export

logger = logging.getLogger(__name__)


def calibration_yaml(images: list[Path], class_names: list[str], work_dir: Path) -> Path:
    """A data.yaml whose train and val splits are exactly ``images``.

    The images are linked (copied where links are not allowed) into ``work_dir`` without labels, so
    Ultralytics writes its labels cache there and not into the user's dataset.
    """
    folder = work_dir / "calibration" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        link = folder / f"{index:05d}_{image.name}"
        try:
            link.symlink_to(image.resolve())
        except OSError:
            shutil.copy2(image, link)
    data = {"path": str(work_dir / "calibration"), "train": "images", "val": "images",
            "names": dict(enumerate(class_names))}
    path = work_dir / "calibration.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def export_with_ultralytics(spec: FormatSpec, checkpoint: Path, work_dir: Path, *, imgsz: int, dynamic: bool,
                            device: str, calibration_data: Path | None = None) -> Path:
    """FP32 export (``calibration_data`` None) or INT8 export calibrated on ``calibration_data``."""
    arguments: dict = {"format": spec.format.value, "imgsz": imgsz, "dynamic": dynamic, "batch": 1, "device": device}
    if spec.format is ExportFormat.ENGINE:
        arguments["simplify"] = False  # onnxslim cannot be installed offline; TensorRT parses the traced graph
    if calibration_data is not None:
        arguments.update(quantize=8, data=str(calibration_data), fraction=1.0)
    return ultralytics_export(checkpoint, work_dir, **arguments)
