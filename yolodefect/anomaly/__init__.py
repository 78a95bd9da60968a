"""Defects nobody labelled: a PatchCore anomaly model learned from good parts only (train, score, maps)."""

from yolodefect.anomaly.model import (
    ANOMALY_CLASS,
    AnomalyModel,
    AnomalyResult,
    heat_levels,
    is_anomaly_model_file,
    load_anomaly_model,
)
from yolodefect.anomaly.train import AnomalyTrainOptions, AnomalyTrainResult, good_images, train_anomaly

__all__ = [
    "ANOMALY_CLASS",
    "AnomalyModel",
    "AnomalyResult",
    "AnomalyTrainOptions",
    "AnomalyTrainResult",
    "good_images",
    "heat_levels",
    "is_anomaly_model_file",
    "load_anomaly_model",
    "train_anomaly",
]
