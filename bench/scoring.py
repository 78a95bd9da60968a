"""The one way a training benchmark scores a trained model: yolodefect's evaluator on val and test."""

from __future__ import annotations

from pathlib import Path


def score_val_test(model: Path, data_yaml: Path, imgsz: int) -> dict:
    """``{"val": {...}, "test": {...}}``: mAP50, mAP50-95 and per-class AP50 of ``model`` on each split."""
    from yolodefect.evaluate import evaluate

    scores = {}
    for split in ("val", "test"):
        metrics = evaluate(model, data_yaml, split=split, imgsz=imgsz, plots=False).metrics
        scores[split] = {"map50": metrics.map50, "map50_95": metrics.map50_95,
                         "per_class_ap50": {c.name: c.ap50 for c in metrics.per_class}}
    return scores
