"""The TensorRT INT8 export (through Ultralytics) calibrates on a label-free folder: Ultralytics' "No labels found" and
"Labels are missing or empty ... training may not work correctly" warnings about it must not reach the screen
(a user reads them as a failed export), while any other warning still does."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolodefect.exporting import ultralytics_formats
from yolodefect.exporting.formats import ExportFormat, export_formats
from yolodefect.exporting.ultralytics_formats import (
    calibration_yaml,
    export_with_ultralytics,
)

MISSING_LABELS = ("No labels found", "Labels are missing or empty")


@contextlib.contextmanager
def ultralytics_console() -> Iterator[list[str]]:
    """Every message that passes Ultralytics' logger (its filters included) on the way to its console handler."""
    from ultralytics.utils import LOGGER

    seen: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: seen.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        yield seen
    finally:
        LOGGER.removeHandler(handler)


def build_calibration_set(checkpoint: Path, work_dir: Path, **arguments) -> Path:
    """What Ultralytics' exporter does with ``data=`` before calibrating INT8 (Exporter.get_int8_calibration_
    dataloader): build the val split as a YOLO dataset. Stands in for the OpenVINO export, which needs openvino."""
    import yaml
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.utils import LOGGER

    assert arguments["quantize"] == 8 and arguments["fraction"] == 1.0
    config = yaml.safe_load(Path(arguments["data"]).read_text())
    data = {"path": config["path"], "names": config["names"], "nc": len(config["names"]), "channels": 3}
    cfg = get_cfg(overrides={"imgsz": arguments["imgsz"], "data": arguments["data"], "rect": False})
    dataset = build_yolo_dataset(cfg, str(Path(config["path"]) / config["val"]), 1, data, mode="val")
    assert len(dataset) == 4
    LOGGER.warning("an unrelated warning")
    return work_dir / "exported"


@pytest.fixture()
def calibration(tmp_path: Path) -> Path:
    """A calibration data.yaml over 4 real (unlabelled) images, as the INT8 export writes it."""
    images = []
    for index in range(4):
        path = tmp_path / "dataset" / f"part{index}.jpg"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), np.random.default_rng(index).integers(0, 255, (48, 64, 3), dtype=np.uint8))
        images.append(path)
    work = tmp_path / "work"
    work.mkdir()
    return calibration_yaml(images, ["scratch", "dent"], work)


def test_the_unlabelled_calibration_set_really_makes_ultralytics_warn(calibration: Path) -> None:
    """Without the filter, the same dataset build prints both warnings: the test below can fail."""
    with ultralytics_console() as seen:
        build_calibration_set(Path("model.pt"), calibration.parent, imgsz=32, data=str(calibration), quantize=8,
                              fraction=1.0)
    assert all(any(text in message for message in seen) for text in MISSING_LABELS), seen


def test_int8_export_keeps_the_missing_label_warnings_off_the_screen(calibration: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ultralytics.utils import LOGGER

    monkeypatch.setattr(ultralytics_formats, "ultralytics_export", build_calibration_set)
    spec = export_formats()[ExportFormat.ENGINE]
    with ultralytics_console() as seen:
        produced = export_with_ultralytics(spec, Path("model.pt"), calibration.parent, imgsz=32, dynamic=False,
                                           device="cpu", calibration_data=calibration)
    assert produced == calibration.parent / "exported"
    assert not [message for message in seen if any(text in message for text in MISSING_LABELS)], seen
    assert any("an unrelated warning" in message for message in seen)  # only those two messages are dropped
    assert LOGGER.filters == []  # and only during the export
