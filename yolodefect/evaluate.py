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
from typing import Any

from yolodefect.data.yolo_dataset import load_data_config
from yolodefect.errors import UsageError
from yolodefect.evaluation.decisions import eligible_predictions, operating_curve, rejected_parts
from yolodefect.evaluation.evaluator import evaluate_detections
from yolodefect.evaluation.ground_truth import load_ground_truth
from yolodefect.evaluation.metrics import EvalMetrics
from yolodefect.evaluation.plots import plot_confusion_matrix, plot_operating_curve, plot_pr_curves
from yolodefect.evaluation.predictors import Predictor, UltralyticsPredictor
from yolodefect.evaluation.profile import PROFILE_NAME, build_profile, write_profile
from yolodefect.evaluation.promotion import Promotion, promotion_verdict, thresholds_at_false_reject_rate
from yolodefect.evaluation.thresholds import choose_thresholds
from yolodefect.evaluation.ultralytics_val import validator_predictions
from yolodefect.exporting.source import thresholds_file
from yolodefect.inference.model_file import check_imgsz
from yolodefect.inference.rules import DEFAULT_CONF, build_reject_rules
from yolodefect.inference.thresholds_file import Thresholds, read_thresholds_yaml, write_thresholds_yaml
from yolodefect.jpeg import files_ultralytics_would_resave
from yolodefect.progress import ProgressCallback
from yolodefect.run_dirs import first_free_dir

logger = logging.getLogger(__name__)

EVAL_RUNS = Path("runs") / "eval"  # beside Ultralytics' runs/detect, runs/train: never inside a model's folder


def new_eval_dir(model: Path | str, split: str, runs: Path | str = EVAL_RUNS) -> Path:
    """The first free ``runs/eval/<model stem>-<split>`` (then ...-<split>2, 3, ...), as Ultralytics numbers runs.

    The model's own folder may be read-only or shared, so results go under ``runs/`` as Ultralytics'
    do. Nothing is created here: ``evaluate`` creates the folder when it writes, so a run that fails
    early leaves no empty folder behind.
    """
    return first_free_dir(Path(runs) / f"{Path(model).stem}-{split}")


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
    promotion: Promotion | None = None  # eval --baseline: may this model replace the baseline?

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
            **({"promotion": self.promotion.to_dict()} if self.promotion is not None else {}),
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


def _frame_pixels_note(ground_truth: Sequence[Any], roi: Any) -> str:
    """Say that the ROI and min area are frame pixels, and which images they may not fit."""
    sizes = sorted({tuple(truth.image_size_wh) for truth in ground_truth})
    note = "min area and ROI are in frame pixels: they score the station only if these images are its frames"
    if len(sizes) > 1:
        note += f"; this split has {len(sizes)} image sizes ({', '.join(f'{w}x{h}' for w, h in sizes[:4])}...)"
    if roi is not None:
        xs, ys = [x for x, _ in roi], [y for _, y in roi]
        outside = [f"{w}x{h}" for w, h in sizes if min(xs) >= w or min(ys) >= h]
        if outside:
            note += f"; the ROI lies entirely outside images of size {', '.join(outside)}"
    return note


def evaluate(
    model: Path | str,
    data: Path | str,
    *,
    split: str = "val",
    imgsz: int | tuple[int, int] | None = None,
    conf: float = DEFAULT_CONF,
    thresholds: Path | str | None = None,
    target_recall: float | None = None,
    per_class_thresholds: bool = False,
    reject_classes: Sequence[str] | None = None,
    min_area: float = 0.0,
    roi: Any = None,
    out_dir: Path | str | None = None,
    device: str = "cpu",
    predictor: Predictor | None = None,
    batch: int = 8,
    progress: ProgressCallback | None = None,
    plots: bool = True,
    val_rect: bool = True,
    validator_map: bool = True,
    baseline: Path | str | None = None,
    baseline_predictor: Predictor | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``split`` of ``data`` and, with ``out_dir``, write metrics.json, plots
    and (when chosen here) thresholds.yaml.

    Operating thresholds come from exactly one of: ``thresholds`` (a thresholds.yaml),
    ``target_recall`` (choose them on this split), or ``conf`` (one value for all classes).
    ``imgsz`` defaults to the size the model was trained or exported at, else 640; a requested size is
    rounded up to the model's stride and the result reports the size really used (with a note).
    ``predictor`` replaces Ultralytics inference (e.g. a torchvision SSD); ``model`` then only names
    the run. ``reject_classes`` defaults to the thresholds file's, else every class. ``progress`` is told
    (stage, done, total) while images are predicted.

    mAP50 and mAP50-95 are Ultralytics' (``yolo val``, the training log): for an Ultralytics model, its own
    validator's predictions scored by its ``ap_per_class``; with ``val_rect=False`` a .pt is validated on the
    full ``imgsz`` square like its fixed-shape export (to compare the two on identical inputs) instead of
    Ultralytics' stride-padded canvas. Everything else is measured on the station's predictions; with
    ``validator_map=False`` mAP is too (same ``ap_per_class``, one inference pass instead of two): the export
    gate uses that, since what must not degrade is what the station will see.

    The part decisions (escape and false-reject rates) are the station's: ``yolodefect watch`` with the
    same ``conf``/``thresholds``/``reject_classes``/``min_area``/``roi`` rejects the same parts, by the
    same :class:`~yolodefect.inference.rules.RejectRules`. ``min_area`` (square pixels) and ``roi``
    (a polygon, ``'x,y x,y x,y'`` or ``[(x, y), ...]``) are in frame pixels, so they mean what they mean
    at the line only when this split's images are the station's frames. Boxes they exclude count
    nowhere at the operating point (P/R/F1, confusion matrix, decisions, threshold search); AP and mAP
    still score every prediction, and ground truth is never filtered: a labelled defect the rules cannot
    see is an escape.

    With ``baseline`` (the model the line runs now; ``baseline_predictor`` replaces its inference as
    ``predictor`` does this model's), both are scored on the same split and the result's ``promotion`` says
    whether ``model`` may replace it (:mod:`yolodefect.evaluation.promotion`). ``thresholds``, ``target_recall``
    and ``conf`` then set the *baseline's* operating point (default: the thresholds.yaml beside it); this model
    gets the thresholds with its lowest escape rate at no more false rejects than the baseline's, which are
    written to ``out_dir``/thresholds.yaml to run it with.
    """
    model, data = Path(model), Path(data)
    if thresholds is not None and target_recall is not None:
        raise UsageError("give either a thresholds file or a target recall, not both")
    if baseline is not None and thresholds is None and target_recall is None:
        thresholds = thresholds_file(Path(baseline))  # the baseline's operating point, when it sits beside it
    if per_class_thresholds and target_recall is None and baseline is None:
        raise UsageError("per-class thresholds are chosen for a target recall: also give target_recall (e.g. 0.99)")
    if imgsz is not None and predictor is None:
        check_imgsz(imgsz)  # before reading the dataset; the stride is applied once the model is loaded

    config = load_data_config(data)
    class_names = config.class_names
    loaded_thresholds = read_thresholds_yaml(thresholds) if thresholds is not None else None
    rules = build_reject_rules(thresholds=loaded_thresholds, conf=conf, reject_classes=reject_classes,
                               min_box_area_px=min_area, roi_polygon=roi)
    rules.check_classes(class_names, owner="dataset")  # fail on a typo before minutes of inference
    ground_truth = load_ground_truth(config, split)

    used_imgsz = imgsz
    notes: list[str] = []
    ultralytics_predictor = None
    if predictor is None:
        ultralytics_predictor = UltralyticsPredictor(model, imgsz=imgsz, device=device, batch=batch, progress=progress)
        used_imgsz = ultralytics_predictor.imgsz  # what the model really runs at, reported instead of the request
        notes.extend(ultralytics_predictor.notes)
        predictor = ultralytics_predictor
    _check_class_names(getattr(predictor, "class_names", None), class_names, model)
    logger.info("predicting %d %s images with %s", len(ground_truth), split, model)
    predictions = predictor([truth.image_path for truth in ground_truth])
    ap_predictions = None
    rewritten = files_ultralytics_would_resave(truth.image_path for truth in ground_truth) if validator_map else []
    if ultralytics_predictor is not None and validator_map and rewritten:
        # Evaluating must never modify the dataset; mAP then comes from the station's predictions (same AP rule).
        notes.append(f"mAP is scored on the station's predictions, not Ultralytics' validator's: {len(rewritten)} "
                     f"JPEG(s) such as {rewritten[0]} do not end with the end-of-image marker, and the validator "
                     "would re-save them in place (`yolodefect convert` writes clean copies)")
    elif ultralytics_predictor is not None and validator_map:
        # mAP as `yolo val` and training logs report it: on the predictions of Ultralytics' own validator.
        ap_predictions = validator_predictions(ultralytics_predictor.runner.yolo, config, split,
                                               [truth.image_path for truth in ground_truth], imgsz=used_imgsz,
                                               batch=batch, device=device, rect=val_rect)

    chosen: Thresholds | None = None
    promotion_inputs = None
    if baseline is not None:
        old_metrics, old_source = _baseline_metrics(
            Path(baseline), baseline_predictor, ground_truth, class_names, rules, loaded_thresholds, thresholds,
            target_recall=target_recall, per_class=per_class_thresholds, split=split, imgsz=imgsz,
            device=device, batch=batch, progress=progress)
        old_frr = old_metrics.decisions.false_reject_rate
        chosen = thresholds_at_false_reject_rate(
            ground_truth, predictions, class_names, max_false_reject_rate=old_frr,
            per_class=per_class_thresholds or bool(loaded_thresholds and loaded_thresholds.per_class),
            reject_classes=rules.reject_classes, min_box_area_px=rules.min_box_area_px,
            roi_polygon=rules.roi_polygon, split=split, model=model.name)
        rules = build_reject_rules(thresholds=chosen, conf=conf, reject_classes=rules.reject_classes,
                                   min_box_area_px=rules.min_box_area_px, roi_polygon=rules.roi_polygon)
        source = f"chosen on {split} at the false-reject rate of the baseline {Path(baseline).name} ({old_source})"
        notes.extend(chosen.notes)
        promotion_inputs = (old_metrics, old_source)
    elif loaded_thresholds is not None:
        source, chosen = f"thresholds file {thresholds}", loaded_thresholds
    elif target_recall is not None:
        chosen = choose_thresholds(
            ground_truth, predictions, class_names, target_recall=target_recall, per_class=per_class_thresholds,
            reject_classes=rules.reject_classes, min_box_area_px=rules.min_box_area_px,
            roi_polygon=rules.roi_polygon, split=split, model=model.name,
        )
        rules = build_reject_rules(thresholds=chosen, conf=conf, reject_classes=rules.reject_classes,
                                   min_box_area_px=rules.min_box_area_px, roi_polygon=rules.roi_polygon)
        source = f"chosen on {split} for recall >= {target_recall}"
        notes.extend(chosen.notes)
        notes.append(
            f"thresholds were chosen and measured on the same split ({split}): expect a higher escape rate on "
            "new parts; confirm them on another split with the thresholds file"
        )
    else:
        source = f"conf {conf}"
    if rules.roi_polygon is not None or rules.min_box_area_px > 0:
        notes.append(_frame_pixels_note(ground_truth, rules.roi_polygon))

    metrics = evaluate_detections(ground_truth, predictions, class_names, rules=rules, ap_predictions=ap_predictions)
    files: dict[str, Path] = {}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if chosen is not None and (target_recall is not None or baseline is not None):
            files["thresholds"] = write_thresholds_yaml(out_dir / "thresholds.yaml", chosen)
        if plots:
            curve = operating_curve(ground_truth, eligible_predictions(predictions, rules), len(class_names),
                                    rules.reject_ids(class_names))
            operating_point = {name: metrics.decisions.thresholds[name] for name in metrics.decisions.reject_classes}
            files["pr_curve"] = plot_pr_curves(metrics, out_dir / "pr_curve.png")
            files["operating_curve"] = plot_operating_curve(
                curve, out_dir / "operating_curve.png", operating_point=operating_point,
                achieved=(metrics.decisions.escape_rate, metrics.decisions.false_reject_rate),
            )
            files["confusion_matrix"] = plot_confusion_matrix(metrics, out_dir / "confusion_matrix.png")
        files["metrics"] = out_dir / "metrics.json"
        # What this split looked like to the model: the station's drift monitor compares the line with it.
        rejected = rejected_parts(predictions, class_names, rules)
        profile = build_profile([truth.image_path for truth in ground_truth], predictions, class_names, rules,
                                split=split, model=model.name,
                                reject_rate=float(rejected.mean()) if len(rejected) else 0.0)
        files["profile"] = write_profile(profile, out_dir / PROFILE_NAME)

    promotion = None
    if promotion_inputs is not None:
        promotion = promotion_verdict(ground_truth, promotion_inputs[0], metrics, baseline_model=str(baseline),
                                      candidate_model=str(model), baseline_threshold_source=promotion_inputs[1])
    result = EvalResult(
        promotion=promotion,
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


def _baseline_metrics(
    baseline: Path, predictor: Predictor | None, ground_truth: Sequence[Any], class_names: Sequence[str],
    rules: Any, loaded_thresholds: Thresholds | None, thresholds_path: Path | str | None, *,
    target_recall: float | None, per_class: bool, split: str, imgsz: Any, device: str, batch: int,
    progress: ProgressCallback | None,
) -> tuple[EvalMetrics, str]:
    """The baseline model scored on the same split by the same evaluator, at its own operating point:
    its thresholds file, else thresholds chosen here for ``target_recall``, else ``rules``' one confidence."""
    if predictor is None:
        predictor = UltralyticsPredictor(baseline, imgsz=imgsz, device=device, batch=batch, progress=progress)
    _check_class_names(getattr(predictor, "class_names", None), class_names, baseline)
    logger.info("predicting %d %s images with the baseline %s", len(ground_truth), split, baseline)
    predictions = predictor([truth.image_path for truth in ground_truth])
    source = f"conf {rules.default_conf}"
    if loaded_thresholds is not None:
        source = f"thresholds file {thresholds_path}"
    elif target_recall is not None:
        chosen = choose_thresholds(
            ground_truth, predictions, class_names, target_recall=target_recall, per_class=per_class,
            reject_classes=rules.reject_classes, min_box_area_px=rules.min_box_area_px,
            roi_polygon=rules.roi_polygon, split=split, model=baseline.name)
        rules = build_reject_rules(thresholds=chosen, conf=rules.default_conf, reject_classes=rules.reject_classes,
                                   min_box_area_px=rules.min_box_area_px, roi_polygon=rules.roi_polygon)
        source = f"chosen on {split} for recall >= {target_recall}"
    metrics = evaluate_detections(ground_truth, predictions, class_names, rules=rules)
    decisions = metrics.decisions
    if decisions.false_reject_rate is None or decisions.escape_rate is None:
        missing = "defect-free" if decisions.false_reject_rate is None else "defective"
        raise UsageError(f"the {split} split has no {missing} images, so the two models cannot be compared at the "
                         "baseline's false-reject rate; compare them on a split with both good and defective parts")
    return metrics, source
