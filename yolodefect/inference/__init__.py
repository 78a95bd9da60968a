"""Running a trained model: the model file itself (is it readable, where do weights come from, what size it runs at,
what it says about itself: :class:`ModelFile`) and the one Ultralytics runner every command predicts with."""

from yolodefect.inference.identity import card_path, file_sha256, load_model_card
from yolodefect.inference.model_file import (
    MAX_IMGSZ,
    ModelFile,
    ModelFileError,
    check_imgsz,
    check_model_file,
    fetch_ultralytics_weights,
    load_yolo,
    model_stride,
    read_model_file,
    resolve_imgsz,
    weights_dir,
)
from yolodefect.inference.runner import PredictSettings, UltralyticsRunner

__all__ = [
    "MAX_IMGSZ",
    "ModelFile",
    "ModelFileError",
    "PredictSettings",
    "UltralyticsRunner",
    "card_path",
    "check_imgsz",
    "check_model_file",
    "fetch_ultralytics_weights",
    "file_sha256",
    "load_model_card",
    "load_yolo",
    "model_stride",
    "read_model_file",
    "resolve_imgsz",
    "weights_dir",
]
