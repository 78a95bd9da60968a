"""``evaluate``: one model on one dataset split, the function behind ``yolodefect eval``.

Predict once at a low confidence, then measure everything from those predictions: COCO AP,
per-class precision/recall at the operating thresholds, the confusion matrix and the part-level
escape / false-reject rates the inspection station will show.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from yolodefect.data.yolo_dataset import load_data_config
from yolodefect.errors import UsageError
from yolodefect.evaluation.decisions import operating_curve, reject_class_ids
from yolodefect.evaluation.evaluator import evaluate_detections
from yolodefect.evaluation.ground_truth import load_ground_truth
from yolodefect.evaluation.metrics import EvalMetrics
from yolodefect.evaluation.plots import plot_confusion_matrix, plot_operating_curve, plot_pr_curves
from yolodefect.evaluation.predictors import Predictor, UltralyticsPredictor
from yolodefect.evaluation.thresholds import (
    Thresholds,
    choose_thresholds,
    read_thresholds_yaml,
    write_thresholds_yaml,
)
from yolodefect.inference.model_file import check_imgsz

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    """What ``evaluate`` measured and wrote.

    ``threshold_source`` says where the operating thresholds came from (a fixed ``conf``, a
    thresholds file, or chosen here for a recall target); ``thresholds`` holds them unless a
    fixed ``conf`` was used. ``files`` maps a short name (metrics, thresholds, pr_curve, ...) to
    the file written.
    """

    model: str
    data: str
    split: str
    imgsz: int | tuple[int, int] | None
    metrics: EvalMetrics
    threshold_source: str
    thresholds: Thresholds | None = None
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-serialisable form; this is what metrics.json holds."""
        return {
            "model": self.model,
            "data": self.data,
            "split": self.split,
            "imgsz": list(self.imgsz) if isinstance(self.imgsz, tuple) else self.imgsz,
            "threshold_source": self.threshold_source,
            "thresholds": self.thresholds.to_dict() if self.thresholds else None,
            "metrics": self.metrics.to_dict(),
            "files": {name: str(path) for name, path in self.files.items()},
            "notes": list(self.notes),
        }


def _check_class_names(model_names: Sequence[str] | None, data_names: Sequence[str], model: Path) -> None:
    if model_names is None:
        logger.warning("%s does not say its class names; assuming the dataset's order", model)
        return
    if list(model_names) != list(data_names):
        raise UsageError(
            f"the classes of {model.name} do not match the dataset's: model {list(model_names)}, "
            f"dataset {list(data_names)} (same names in the same order are needed; evaluate on the "
            "dataset the model was trained on, or retrain)"
        )


def evaluate(
    model: Path | str,
    data: Path | str,
    *,
    split: str = "val",
    imgsz: int | tuple[int, int] | None = None,
    conf: float = 0.25,
    thresholds: Path | str | None = None,
    target_recall: float | None = None,
    per_class_thresholds: bool = False,
    reject_classes: Sequence[str] | None = None,
    out_dir: Path | str | None = None,
    device: str = "cpu",
    predictor: Predictor | None = None,
    batch: int = 8,
    progress: bool = True,
    plots: bool = True,
) -> EvalResult:
    """Evaluate ``model`` on ``split`` of ``data`` and, with ``out_dir``, write metrics.json, plots
    and (when chosen here) thresholds.yaml.

    Operating thresholds come from exactly one of: ``thresholds`` (a thresholds.yaml),
    ``target_recall`` (choose them on this split), or ``conf`` (one value for all classes).
    ``imgsz`` defaults to the size the model was trained or exported at, else 640; a requested size is
    rounded up to the model's stride and the result reports the size really used (with a note).
    ``predictor`` replaces Ultralytics inference (e.g. a torchvision SSD); ``model`` then only names
    the run. ``reject_classes`` defaults to the thresholds file's, else every class.
    """
    model, data = Path(model), Path(data)
    if thresholds is not None and target_recall is not None:
        raise UsageError("give either a thresholds file or a target recall, not both")
    if per_class_thresholds and target_recall is None:
        raise UsageError("per-class thresholds are chosen for a target recall: also give target_recall (e.g. 0.99)")
    if imgsz is not None and predictor is None:
        check_imgsz(imgsz)  # before reading the dataset; the stride is applied once the model is loaded

    config = load_data_config(data)
    class_names = config.class_names
    loaded_thresholds = read_thresholds_yaml(thresholds) if thresholds is not None else None
    if reject_classes is None and loaded_thresholds is not None:
        reject_classes = loaded_thresholds.reject_classes
    reject_class_ids(class_names, reject_classes)  # fail on a typo before minutes of inference
    ground_truth = load_ground_truth(config, split)

    used_imgsz = imgsz
    notes: list[str] = []
    if predictor is None:
        ultralytics_predictor = UltralyticsPredictor(model, imgsz=imgsz, device=device, batch=batch, progress=progress)
        used_imgsz = ultralytics_predictor.imgsz  # what the model really runs at, reported instead of the request
        notes.extend(ultralytics_predictor.notes)
        predictor = ultralytics_predictor
    _check_class_names(getattr(predictor, "class_names", None), class_names, model)
    logger.info("predicting %d %s images with %s", len(ground_truth), split, model)
    predictions = predictor([truth.image_path for truth in ground_truth])

    chosen: Thresholds | None = None
    if loaded_thresholds is not None:
        operating, source, chosen = loaded_thresholds.conf, f"thresholds file {thresholds}", loaded_thresholds
    elif target_recall is not None:
        chosen = choose_thresholds(
            ground_truth, predictions, class_names, target_recall=target_recall, per_class=per_class_thresholds,
            reject_classes=reject_classes, split=split, model=model.name,
        )
        operating, source = chosen.conf, f"chosen on {split} for recall >= {target_recall}"
        notes.extend(chosen.notes)
        notes.append(
            f"thresholds were chosen and measured on the same split ({split}): expect a higher escape rate on "
            "new parts; confirm them on another split with the thresholds file"
        )
    else:
        operating, source = conf, f"conf {conf}"

    metrics = evaluate_detections(
        ground_truth, predictions, class_names, conf_thresholds=operating, reject_classes=reject_classes
    )
    files: dict[str, Path] = {}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if chosen is not None and target_recall is not None:
            files["thresholds"] = write_thresholds_yaml(out_dir / "thresholds.yaml", chosen)
        if plots:
            reject_ids = reject_class_ids(class_names, reject_classes)
            curve = operating_curve(ground_truth, predictions, len(class_names), reject_ids)
            operating_point = {name: metrics.decisions.thresholds[name] for name in metrics.decisions.reject_classes}
            files["pr_curve"] = plot_pr_curves(metrics, out_dir / "pr_curve.png")
            files["operating_curve"] = plot_operating_curve(
                curve, out_dir / "operating_curve.png", operating_point=operating_point,
                achieved=(metrics.decisions.escape_rate, metrics.decisions.false_reject_rate),
            )
            files["confusion_matrix"] = plot_confusion_matrix(metrics, out_dir / "confusion_matrix.png")
        files["metrics"] = out_dir / "metrics.json"

    result = EvalResult(
        model=str(model),
        data=str(data),
        split=split,
        imgsz=used_imgsz,
        metrics=metrics,
        threshold_source=source,
        thresholds=chosen,
        files=files,
        notes=notes + metrics.notes,
    )
    if out_dir is not None:
        files["metrics"].write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return result
