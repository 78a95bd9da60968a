"""PNGs of an anomaly evaluation: the score histogram (matplotlib, Agg, as evaluation/plots.py), heatmaps (OpenCV)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from yolodefect.anomaly.model import heat_levels
from yolodefect.evaluation.plots import new_figure, save_figure

logger = logging.getLogger(__name__)

GT_COLOUR_BGR = (0, 200, 0)
PEAK_COLOUR_BGR = (0, 0, 255)
# Heatmaps share one colour scale, 0 (blue) to this multiple of the threshold score (red), as the station's
# evidence pictures (stream/anomaly_stage.py): one colour means one score in every picture.
HEAT_SCALE_OF_THRESHOLD = 1.5
DISPLAY_SIDE_PX = (384, 1280)  # the longer side of a heatmap is brought into this range


def plot_score_histogram(good_confidence: np.ndarray, defective_confidence: np.ndarray, threshold_confidence: float,
                         path: Path) -> Path:
    """Histograms of the confidence of good and defective parts on one [0, 1] axis, with the threshold line."""
    figure = new_figure((7, 4.5))
    axes = figure.add_subplot()
    bins = np.linspace(0.0, 1.0, 51)
    if len(good_confidence):
        axes.hist(good_confidence, bins=bins, alpha=0.6, color="tab:green", label=f"good ({len(good_confidence)})")
    if len(defective_confidence):
        axes.hist(defective_confidence, bins=bins, alpha=0.6, color="tab:red",
                  label=f"defective ({len(defective_confidence)})")
    axes.axvline(threshold_confidence, color="black", linestyle="--", linewidth=1,
                 label=f"threshold {threshold_confidence:.3f}")
    axes.set(xlabel="Anomaly confidence (0.5 = highest good score seen at training)", ylabel="Parts",
             xlim=(0, 1), title="Anomaly confidence of good vs defective parts")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    return save_figure(figure, path)


def heatmap_overlay(image_bgr: np.ndarray, anomaly_map: np.ndarray, gt_xyxy: np.ndarray, peak_xyxy: np.ndarray,
                    *, threshold_score: float | None, baseline: float = 0.0, caption: str = "") -> np.ndarray:
    """The image with its anomaly map blended in (JET), ground-truth boxes in green, the peak box in red."""
    height, width = image_bgr.shape[:2]
    # Shown at a size a person can read: small parts enlarged, camera-sized frames reduced.
    zoom = float(np.clip(1.0, DISPLAY_SIDE_PX[0] / max(height, width), DISPLAY_SIDE_PX[1] / max(height, width)))
    if zoom != 1.0:
        width, height = round(width * zoom), round(height * zoom)
        image_bgr = cv2.resize(image_bgr, (width, height), interpolation=cv2.INTER_LINEAR)
    gt_xyxy = np.asarray(gt_xyxy, dtype=np.float64).reshape(-1, 4) * zoom
    peak_xyxy = np.asarray(peak_xyxy, dtype=np.float64).reshape(4) * zoom
    anomaly_map = np.asarray(anomaly_map, dtype=np.float32)
    if anomaly_map.shape != (height, width):
        anomaly_map = cv2.resize(anomaly_map, (width, height), interpolation=cv2.INTER_LINEAR)
    levels = np.round(heat_levels(anomaly_map, baseline, threshold_score, HEAT_SCALE_OF_THRESHOLD) * 255.0
                      ).astype(np.uint8)
    canvas = cv2.addWeighted(image_bgr, 0.5, cv2.applyColorMap(levels, cv2.COLORMAP_JET), 0.5, 0.0)
    thickness = max(1, round(min(width, height) / 200))
    for x1, y1, x2, y2 in gt_xyxy:
        cv2.rectangle(canvas, (round(x1), round(y1)), (round(x2), round(y2)), GT_COLOUR_BGR, thickness)
    x1, y1, x2, y2 = peak_xyxy
    cv2.rectangle(canvas, (round(x1), round(y1)), (round(x2), round(y2)), PEAK_COLOUR_BGR, thickness)
    if caption:
        # A strip above the image, so the caption never hides the defect; wide enough for the text.
        scale = 0.45
        (text_w, _), _ = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        scale = max(0.3, scale * min(1.0, (width - 10) / text_w))  # fit the image's width where readable
        (text_w, text_h), _ = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        strip = np.zeros((text_h + 10, max(width, text_w + 10), 3), dtype=np.uint8)
        cv2.putText(strip, caption, (5, text_h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
        padded = np.zeros((height, strip.shape[1], 3), dtype=np.uint8)
        padded[:, :width] = canvas
        canvas = np.vstack([strip, padded])
    return canvas


def write_heatmap(path: Path, image_bgr: np.ndarray, anomaly_map: np.ndarray, gt_xyxy: np.ndarray,
                  peak_xyxy: np.ndarray, *, threshold_score: float | None, baseline: float = 0.0,
                  caption: str = "") -> Path:
    """Write :func:`heatmap_overlay` as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay = heatmap_overlay(image_bgr, anomaly_map, gt_xyxy, peak_xyxy, threshold_score=threshold_score,
                              baseline=baseline, caption=caption)
    if not cv2.imwrite(str(path), overlay):
        raise OSError(f"cannot write {path}")
    logger.debug("wrote %s", path)
    return path
