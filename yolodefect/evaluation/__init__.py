"""The evaluator: one set of accuracy numbers for every model, backend and precision.

Modules, one job each: ``ground_truth`` (labels in pixels), ``predictors`` (running a model through
the inference runner), ``ultralytics_val`` (the predictions Ultralytics' own validator makes, for the
headline AP), ``matching`` (detections to boxes), ``average_precision`` (the headline mAP, Ultralytics'
``ap_per_class``), ``coco_metrics`` (the COCO-style figure beside it, via faster-coco-eval),
``decisions`` (part accept/reject with the shared reject rules), ``evaluator``
(``evaluate_detections``), ``thresholds`` (operating point), ``plots`` (PNGs), ``metrics`` (the
result records).
"""

from yolodefect.evaluation.decisions import DecisionMetrics, OperatingCurve, operating_curve
from yolodefect.evaluation.evaluator import evaluate_detections
from yolodefect.evaluation.ground_truth import GroundTruth, load_ground_truth
from yolodefect.evaluation.metrics import ClassMetrics, EvalMetrics, PrecisionRecallCurve
from yolodefect.evaluation.predictors import Predictor, UltralyticsPredictor, predict_with_ultralytics
from yolodefect.evaluation.thresholds import choose_thresholds

__all__ = [
    "ClassMetrics",
    "DecisionMetrics",
    "EvalMetrics",
    "GroundTruth",
    "OperatingCurve",
    "PrecisionRecallCurve",
    "Predictor",
    "UltralyticsPredictor",
    "choose_thresholds",
    "evaluate_detections",
    "load_ground_truth",
    "operating_curve",
    "predict_with_ultralytics",
]
