"""The evaluator: one set of accuracy numbers for every model, backend and precision.

Modules, one job each: ``ground_truth`` (labels in pixels), ``predictors`` (running a model),
``matching`` (detections to boxes), ``coco_metrics`` (AP via faster-coco-eval), ``decisions``
(part accept/reject), ``evaluator`` (``evaluate_detections``), ``thresholds`` (operating point),
``plots`` (PNGs), ``metrics`` (the result records).
"""

from yolodefect.evaluation.decisions import DecisionMetrics, OperatingCurve, operating_curve
from yolodefect.evaluation.evaluator import evaluate_detections
from yolodefect.evaluation.ground_truth import GroundTruth, load_ground_truth
from yolodefect.evaluation.metrics import ClassMetrics, EvalMetrics, PrecisionRecallCurve
from yolodefect.evaluation.predictors import (
    ModelInfo,
    Predictor,
    UltralyticsPredictor,
    predict_with_ultralytics,
    read_model_info,
)
from yolodefect.evaluation.thresholds import (
    Thresholds,
    choose_thresholds,
    read_thresholds_yaml,
    write_thresholds_yaml,
)

__all__ = [
    "ClassMetrics",
    "DecisionMetrics",
    "EvalMetrics",
    "GroundTruth",
    "ModelInfo",
    "OperatingCurve",
    "PrecisionRecallCurve",
    "Predictor",
    "Thresholds",
    "UltralyticsPredictor",
    "choose_thresholds",
    "evaluate_detections",
    "load_ground_truth",
    "operating_curve",
    "predict_with_ultralytics",
    "read_model_info",
    "read_thresholds_yaml",
    "write_thresholds_yaml",
]
