"""PNG plots of an evaluation, drawn with matplotlib's Agg backend and its bundled fonts only."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from yolodefect.evaluation.decisions import OperatingCurve
from yolodefect.evaluation.metrics import EvalMetrics

logger = logging.getLogger(__name__)


def new_figure(size: tuple[float, float]):
    """A matplotlib Figure on an Agg canvas (shared by every plot of the package)."""
    # The object-oriented API with an explicit Agg canvas: no pyplot state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=120)
    FigureCanvasAgg(figure)
    return figure


def _as_array(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def plot_pr_curves(metrics: EvalMetrics, path: Path) -> Path:
    """Precision-recall curve at IoU 0.5 per class (the precision envelope Ultralytics' AP integrates) and their mean."""
    figure = new_figure((7, 5))
    axes = figure.add_subplot()
    recall = np.asarray(metrics.pr_curve.recall)
    for class_metrics in metrics.per_class:
        precision = _as_array(metrics.pr_curve.precision[class_metrics.name])
        if class_metrics.ap50 is None:
            continue  # no ground truth of this class: no curve to draw
        axes.plot(recall, precision, linewidth=1, label=f"{class_metrics.name} AP50 {class_metrics.ap50:.3f}")
    mean = _as_array(metrics.pr_curve.mean_precision)
    if not np.all(np.isnan(mean)):
        label = f"all classes mAP50 {metrics.map50:.3f}" if metrics.map50 is not None else "all classes"
        axes.plot(recall, mean, linewidth=3, color="blue", label=label)
    axes.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall (IoU 0.5)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize="small")
    return save_figure(figure, path)


def plot_operating_curve(
    curve: OperatingCurve, path: Path, *, operating_point: Mapping[str, float] | None = None,
    achieved: tuple[float | None, float | None] | None = None,
) -> Path:
    """Escape rate and false-reject rate against one confidence threshold for all reject classes.

    ``operating_point`` (reject class -> threshold) is drawn as vertical lines; ``achieved``
    (escape rate, false-reject rate) as horizontal markers, which also covers per-class thresholds
    that no single point of the global curve represents.
    """
    figure = new_figure((7, 5))
    axes = figure.add_subplot()
    # "pre": a part is rejected when score >= threshold, so each rate is constant on (previous, this].
    axes.step(curve.thresholds, curve.escape_rate, where="pre", color="red", label="escape rate (defective accepted)")
    axes.step(
        curve.thresholds, curve.false_reject_rate, where="pre", color="orange",
        label="false-reject rate (good rejected)",
    )
    if operating_point:
        values = sorted(set(round(v, 6) for v in operating_point.values()))
        for value in values:
            names = [name for name, v in operating_point.items() if round(v, 6) == value]
            axes.axvline(value, color="gray", linestyle="--", linewidth=1)
            axes.annotate(
                f"{', '.join(names)}: {value:.3f}" if len(values) > 1 else f"threshold {value:.3f}",
                (value, 1.0), rotation=90, va="top", ha="right", fontsize="small",
            )
    if achieved:
        escape, false_reject = achieved
        if escape is not None:
            axes.axhline(escape, color="red", linestyle=":", linewidth=1, label=f"chosen escape rate {escape:.3f}")
        if false_reject is not None:
            axes.axhline(
                false_reject, color="orange", linestyle=":", linewidth=1,
                label=f"chosen false-reject rate {false_reject:.3f}",
            )
    axes.set(xlabel="Confidence threshold", ylabel="Rate (parts)", xlim=(0, 1), ylim=(-0.02, 1.02),
             title="Part decisions vs confidence threshold")
    axes.grid(alpha=0.3)
    axes.legend(loc="center right", fontsize="small")
    return save_figure(figure, path)


def plot_confusion_matrix(metrics: EvalMetrics, path: Path) -> Path:
    """Counts, rows = predicted, columns = true, with the background row and column."""
    matrix = np.asarray(metrics.confusion_matrix)
    labels = metrics.confusion_labels
    side = max(4.0, 0.6 * len(labels) + 2)
    figure = new_figure((side, side * 0.85))
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels, rotation=45, ha="right")
    axes.set_yticks(ticks, labels)
    axes.set(xlabel="True", ylabel="Predicted", title=f"Confusion matrix (IoU {metrics.match_iou})")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            axes.text(col, row, str(count), ha="center", va="center", fontsize="small",
                      color="white" if count > threshold else "black")
    return save_figure(figure, path)


def save_figure(figure, path: Path) -> Path:
    """Lay out and write ``figure`` as a PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path)
    logger.debug("wrote %s", path)
    return path
