"""OpenVINO and TensorRT exports through Ultralytics' own exporter: FP32, and TensorRT INT8.

(OpenVINO INT8 is our own NNCF call on the FP32 IR: yolodefect/exporting/openvino_int8.py.) Ultralytics
calibrates INT8 on a data.yaml split; we hand it a small data.yaml whose splits hold
exactly our calibration images (stratified, seeded, from train), so every backend calibrates on
the same images.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
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


class _DropUnlabelledCalibrationWarnings(logging.Filter):
    """Our calibration folder holds images only (calibration needs no labels, and good parts have none), so
    Ultralytics' dataset loader warns 'No labels found in ...' and 'Labels are missing or empty in ..., training
    may not work correctly' about it: a user reads that as a failed export."""

    MESSAGES = ("No labels found in", "Labels are missing or empty in")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.MESSAGES)


@contextlib.contextmanager
def unlabelled_calibration_quiet() -> Iterator[None]:
    """Keep Ultralytics' missing-label warnings about the label-free calibration set off the screen."""
    from ultralytics.utils import LOGGER

    quiet = _DropUnlabelledCalibrationWarnings()
    LOGGER.addFilter(quiet)
    try:
        yield
    finally:
        LOGGER.removeFilter(quiet)


def export_with_ultralytics(spec: FormatSpec, checkpoint: Path, work_dir: Path, *, imgsz: int, dynamic: bool,
                            device: str, calibration_data: Path | None = None) -> Path:
    """FP32 export (``calibration_data`` None) or INT8 export calibrated on ``calibration_data``."""
    arguments: dict = {"format": spec.format.value, "imgsz": imgsz, "dynamic": dynamic, "batch": 1, "device": device}
    if spec.format is ExportFormat.ENGINE:
        arguments["simplify"] = False  # onnxslim cannot be installed offline; TensorRT parses the traced graph
    if calibration_data is None:
        return ultralytics_export(checkpoint, work_dir, **arguments)
    arguments.update(quantize=8, data=str(calibration_data), fraction=1.0)
    with unlabelled_calibration_quiet():
        return ultralytics_export(checkpoint, work_dir, **arguments)
