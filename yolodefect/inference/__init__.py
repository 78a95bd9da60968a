"""Running a trained model: the model file itself (is it readable, where do weights come from, what size it runs at)."""

from yolodefect.inference.model_file import (
    MAX_IMGSZ,
    ModelFileError,
    check_imgsz,
    check_model_file,
    fetch_ultralytics_weights,
    load_yolo,
    model_stride,
    resolve_imgsz,
    weights_dir,
)

__all__ = [
    "MAX_IMGSZ",
    "ModelFileError",
    "check_imgsz",
    "check_model_file",
    "fetch_ultralytics_weights",
    "load_yolo",
    "model_stride",
    "resolve_imgsz",
    "weights_dir",
]
