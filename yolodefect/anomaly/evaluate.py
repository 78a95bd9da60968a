"""``yolodefect eval`` on an anomaly model: how well its score separates good parts from defective ones.

One image is one part. A part is defective when it carries a ground-truth box of a reject class and
good when its label is empty; an image whose boxes are all of other classes is neither and is left
out (the anomaly model cannot tell classes apart, so it would count as a false reject of a part that
does look different). The station rejects a part when the model's confidence (``model.confidence(score)``)
reaches the threshold of class ``anomaly``, decided here by the station's own
:class:`~yolodefect.inference.rules.RejectRules`, so the escape and false-reject rates are what
``watch`` does with the same thresholds.

Measured: image AUROC (exact, by ranks), pixel AUROC where boxes exist (on maps downscaled to the
model's ``imgsz``, by histogram; a box is a coarse region, so this measures localisation only roughly),
the part rates at the model's own threshold (or a thresholds file's, or one chosen for a recall target),
and the lowest escape rate reachable at a false-reject rate of at most 1% and 5%.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from yolodefect.anomaly.model import ANOMALY_CLASS, AnomalyModel, load_anomaly_model
from yolodefect.anomaly.plots import plot_score_histogram, write_heatmap
from yolodefect.data.image_file import read_image
from yolodefect.data.yolo_dataset import load_data_config
from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.evaluation.decisions import PartRates, part_rates, rejected_parts
from yolodefect.evaluation.ground_truth import GroundTruth, load_ground_truth
from yolodefect.evaluation.thresholds import RECALL_TOLERANCE, search_thresholds
from yolodefect.inference.rules import DEFAULT_CONF, RejectRules, build_reject_rules
from yolodefect.inference.thresholds_file import Thresholds, read_thresholds_yaml, write_thresholds_yaml
from yolodefect.progress import ProgressCallback, no_progress

logger = logging.getLogger(__name__)

# The benchmark's operating points: the lowest escape rate while rejecting at most this share of good parts.
FALSE_REJECT_LIMITS = (0.01, 0.05)
# Pixel AUROC streams every pixel into histograms: log-spaced bins from 1/1000 to 1000 times the model's
# reference score (0.34% wide each), so two pixels compare as tied only when their scores differ by less.
PIXEL_BINS = 4096
PIXEL_RANGE = (1e-3, 1e3)
NO_DEFECTIVE_IMAGES = ("no defective images in this split (no box of a reject class): image AUROC is undefined "
                       "and the escape rate cannot be measured")
NO_GOOD_IMAGES = ("no good images in this split (empty label): image AUROC is undefined and the false-reject "
                  "rate cannot be measured")


def auroc(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray) -> float | None:
    """Area under the ROC curve: the chance that a random positive scores above a random negative, ties half.

    Exact, from average ranks (the Mann-Whitney U statistic). None when either class is empty.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positive = np.asarray(positive, dtype=bool).reshape(-1)
    if scores.shape != positive.shape:
        raise ValueError(f"{scores.size} scores for {positive.size} labels")
    if np.isnan(scores).any():
        raise ValueError("scores must not be NaN")
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based ranks, averaged over ties
    u_statistic = ranks[positive].sum() - n_positive * (n_positive + 1) / 2.0
    return float(u_statistic / (n_positive * n_negative))


def auroc_from_histograms(positive_counts: np.ndarray, negative_counts: np.ndarray) -> float | None:
    """AUROC from counts per score bin (bins in ascending score order); values sharing a bin count as tied."""
    positive_counts = np.asarray(positive_counts, dtype=np.float64)
    negative_counts = np.asarray(negative_counts, dtype=np.float64)
    n_positive, n_negative = positive_counts.sum(), negative_counts.sum()
    if n_positive == 0 or n_negative == 0:
        return None
    negatives_below = np.cumsum(negative_counts) - negative_counts
    wins = (positive_counts * (negatives_below + 0.5 * negative_counts)).sum()
    return float(wins / (n_positive * n_negative))


@dataclass(frozen=True)
class EscapeAtFalseRejectRate:
    """The lowest escape rate any threshold reaches while rejecting at most ``max_false_reject_rate`` of good parts."""

    max_false_reject_rate: float
    threshold_confidence: float | None  # None when the split lacks good or defective parts
    escape_rate: float | None
    false_reject_rate: float | None
    escapes: int | None = None
    false_rejects: int | None = None


@dataclass(frozen=True)
class ScoredPart:
    """One evaluated image: its truth and the model's score."""

    image: str
    defective: bool
    score: float
    confidence: float
    rejected: bool
    baseline: float = 0.0  # what the score rule subtracted: score + baseline is PatchCore's plain maximum


@dataclass(frozen=True)
class AnomalyEvalResult:
    """What :func:`evaluate_anomaly` measured and wrote (``files``: short name -> file)."""

    model: str
    data: str
    split: str
    imgsz: int
    reject_classes: list[str]  # the dataset classes whose boxes make a part defective
    defective: int
    good: int
    left_out: int  # images whose boxes are all of non-reject classes
    image_auroc: float | None
    pixel_auroc: float | None
    threshold_source: str
    threshold_confidence: float  # the station's units: thresholds.yaml, watch
    threshold_score: float | None  # the same threshold as a raw anomaly score; None for confidence 1 (never rejects)
    rates: PartRates
    at_false_reject_rate: list[EscapeAtFalseRejectRate]
    thresholds: Thresholds | None = None  # chosen here for a recall target, or read from a file
    escaped_parts: list[str] = field(default_factory=list)
    false_rejected_parts: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-serialisable form; this is what metrics.json holds."""
        return {
            "kind": "anomaly",
            "model": self.model,
            "data": self.data,
            "split": self.split,
            "imgsz": self.imgsz,
            "reject_classes": list(self.reject_classes),
            "images": {"defective": self.defective, "good": self.good, "left_out": self.left_out},
            "image_auroc": self.image_auroc,
            "pixel_auroc": self.pixel_auroc,
            "threshold_source": self.threshold_source,
            "threshold": {"confidence": self.threshold_confidence, "score": self.threshold_score},
            "decisions": {**asdict(self.rates), "recall": self.rates.recall,
                          "escaped_parts": list(self.escaped_parts),
                          "false_rejected_parts": list(self.false_rejected_parts)},
            "at_false_reject_rate": [asdict(point) for point in self.at_false_reject_rate],
            "thresholds": self.thresholds.to_dict() if self.thresholds else None,
            "files": {name: str(path) for name, path in self.files.items()},
            "notes": list(self.notes),
        }


def escape_at_false_reject_rate(
    confidence: np.ndarray, defective: np.ndarray, max_false_reject_rate: float
) -> EscapeAtFalseRejectRate:
    """The lowest threshold (so the lowest escape rate) rejecting at most ``max_false_reject_rate`` of good parts.

    Rates only change at observed confidences, so the candidates are those (compared in float32, as the
    station compares); the one returned is the lowest observed confidence above the good part that must pass.
    """
    confidence = np.asarray(confidence, dtype=np.float32)
    good_scores = np.sort(confidence[~defective])[::-1]
    if good_scores.size == 0 or not defective.any():
        return EscapeAtFalseRejectRate(max_false_reject_rate, None, None, None)
    allowed = int(np.floor(max_false_reject_rate * good_scores.size + RECALL_TOLERANCE))
    if allowed >= good_scores.size:
        threshold = np.float32(confidence.min())  # every part may be rejected
    else:
        must_pass = good_scores[allowed]  # the highest-scoring good part beyond the allowance
        above = confidence[confidence > must_pass]
        threshold = above.min() if above.size else np.nextafter(must_pass, np.float32(np.inf))
    rates = part_rates(defective, confidence >= threshold)
    return EscapeAtFalseRejectRate(max_false_reject_rate, float(threshold), rates.escape_rate,
                                   rates.false_reject_rate, rates.escapes, rates.false_rejects)


def _check_detector_options(conf: float, per_class_thresholds: bool, min_area: float, roi: Any) -> None:
    given = [name for name, used in (("--conf", conf != DEFAULT_CONF), ("--per-class", per_class_thresholds),
                                     ("--min-area", min_area != 0), ("--roi", roi is not None)) if used]
    if given:
        raise UsageError(
            f"{', '.join(given)} apply to detectors, not to an anomaly model: it has one score per part, "
            "rejected at its own threshold, at --thresholds FILE, or at one chosen with --target-recall"
        )


def _region_mask(truth: GroundTruth, side: int) -> np.ndarray:
    """(side, side) True on the pixels of the stretched image that any ground-truth box overlaps."""
    mask = np.zeros((side, side), dtype=bool)
    width, height = truth.image_size_wh
    scale = np.array([side / width, side / height, side / width, side / height])
    for x1, y1, x2, y2 in truth.xyxy * scale:
        # Overlap rather than centre-inside: a box thinner than a downscaled pixel still marks one.
        left, top = int(np.clip(np.floor(x1), 0, side - 1)), int(np.clip(np.floor(y1), 0, side - 1))
        right, bottom = int(np.clip(np.ceil(x2), left + 1, side)), int(np.clip(np.ceil(y2), top + 1, side))
        mask[top:bottom, left:right] = True
    return mask


class _PixelHistograms:
    """Counts of downscaled anomaly-map pixels per score bin, inside and outside ground-truth boxes."""

    def __init__(self, reference_score: float, side: int):
        low, high = PIXEL_RANGE
        reference = reference_score if reference_score > 0 else 1.0
        self.edges = reference * np.geomspace(low, high, PIXEL_BINS - 1)
        self.side = side
        self.anomalous = np.zeros(PIXEL_BINS, dtype=np.int64)
        self.normal = np.zeros(PIXEL_BINS, dtype=np.int64)
        self.images_with_boxes = 0

    def add(self, anomaly_map: np.ndarray, truth: GroundTruth) -> None:
        small = cv2.resize(np.asarray(anomaly_map, dtype=np.float32), (self.side, self.side),
                           interpolation=cv2.INTER_AREA)
        bins = np.searchsorted(self.edges, small.ravel(), side="right")
        mask = _region_mask(truth, self.side).ravel()
        self.anomalous += np.bincount(bins[mask], minlength=PIXEL_BINS)
        self.normal += np.bincount(bins[~mask], minlength=PIXEL_BINS)
        self.images_with_boxes += bool(len(truth))

    def auroc(self) -> float | None:
        return auroc_from_histograms(self.anomalous, self.normal)


def _score_parts(model: AnomalyModel, truths: Sequence[GroundTruth], batch: int, report: ProgressCallback
                 ) -> tuple[np.ndarray, np.ndarray, list[_Scored], _PixelHistograms]:
    """Raw scores, confidences, what the station decides on, and the pixel histograms of every part."""
    histograms = _PixelHistograms(model.reference_score, model.imgsz)
    scores = np.zeros(len(truths), dtype=np.float64)
    confidence = np.zeros(len(truths), dtype=np.float64)
    peaks: list[_Scored] = []
    for start in range(0, len(truths), batch):
        chunk = truths[start:start + batch]
        for offset, (truth, result) in enumerate(zip(chunk, model.score([read_image(t.image_path) for t in chunk]))):
            scores[start + offset], confidence[start + offset] = result.score, result.confidence
            peaks.append(_Scored(np.asarray(result.peak_xyxy, dtype=np.float32), float(result.confidence),
                                 float(result.baseline)))
            histograms.add(result.anomaly_map, truth)
        report("score", min(start + batch, len(truths)), len(truths))
    return scores, confidence, peaks, histograms


@dataclass(frozen=True)
class _Scored:
    """What the station decides on: the peak box and its confidence."""

    peak_xyxy: np.ndarray
    confidence: float
    baseline: float


def _station_decisions(results: Sequence[_Scored], rules: RejectRules) -> np.ndarray:
    """(parts,) True where the station, with ``rules``, rejects: one ``anomaly`` detection per part at its peak."""
    predictions = [Detections(xyxy=np.asarray(r.peak_xyxy, dtype=np.float32).reshape(1, 4),
                              confidence=[r.confidence], class_id=[0]) for r in results]
    return rejected_parts(predictions, [ANOMALY_CLASS], rules)


def evaluate_anomaly(
    model: Path | str | AnomalyModel,
    data: Path | str,
    *,
    split: str = "val",
    imgsz: int | None = None,
    conf: float = DEFAULT_CONF,
    thresholds: Path | str | None = None,
    target_recall: float | None = None,
    per_class_thresholds: bool = False,
    reject_classes: Sequence[str] | None = None,
    min_area: float = 0.0,
    roi: Any = None,
    out_dir: Path | str | None = None,
    device: str = "cpu",
    batch: int = 8,
    progress: ProgressCallback | None = None,
    plots: bool = True,
) -> AnomalyEvalResult:
    """Evaluate the anomaly model ``model`` (a model file, or one already loaded) on ``split`` of ``data``; with
    ``out_dir``, write metrics.json, scores.csv, plots and (with ``target_recall``) thresholds.yaml.

    Takes :func:`yolodefect.evaluate.evaluate`'s options so ``yolodefect eval`` can hand either function the same
    ones: the detector-only ones (``conf``, ``per_class_thresholds``, ``min_area``, ``roi``) raise a UsageError when
    they differ from their defaults, and ``imgsz`` may only repeat the model's own. The threshold is the model's
    own unless ``thresholds`` (a thresholds.yaml with class ``anomaly``) or ``target_recall`` (the lowest
    false-reject rate reaching that part recall, written to thresholds.yaml in confidence units) is given.
    ``reject_classes`` (dataset classes) default to every class.
    """
    model_name = Path(model.path or "anomaly model").name if isinstance(model, AnomalyModel) else Path(model).name
    data = Path(data)
    report = progress or no_progress
    _check_detector_options(conf, per_class_thresholds, min_area, roi)
    if thresholds is not None and target_recall is not None:
        raise UsageError("give either a thresholds file or a target recall, not both")
    if target_recall is not None and not 0 < target_recall <= 1:
        raise UsageError(f"target recall must lie in (0, 1], got {target_recall}")
    if device != "cpu":
        raise UsageError(f"--device {device}: anomaly models are evaluated on the CPU; leave --device out")

    config = load_data_config(data)
    class_names = config.class_names
    reject_rules = build_reject_rules(reject_classes=reject_classes)
    reject_rules.check_classes(class_names, owner="dataset")
    reject_ids = reject_rules.reject_ids(class_names)
    loaded = read_thresholds_yaml(thresholds) if thresholds is not None else None
    if loaded is not None and ANOMALY_CLASS not in loaded.conf:
        raise UsageError(f"{thresholds} has no threshold for class {ANOMALY_CLASS!r} (it holds {sorted(loaded.conf)}): "
                         "it was chosen for a detector; choose one with `yolodefect eval MODEL DATA --target-recall R`")
    truths = load_ground_truth(config, split)
    kept = [t for t in truths if len(t) == 0 or np.isin(t.class_id, reject_ids).any()]
    left_out = len(truths) - len(kept)
    defective = np.array([len(t) > 0 for t in kept], dtype=bool)
    notes: list[str] = []
    if left_out:
        notes.append(f"{left_out} image(s) whose boxes are all of non-reject classes were left out "
                     "(neither good nor defective)")
    if not kept:
        raise UsageError(f"the {split} split has no good (empty label) or defective (a box of "
                         f"{', '.join(class_names[i] for i in reject_ids)}) images to evaluate")
    if target_recall is not None and not defective.any():
        raise UsageError(f"the {split} split has no defective images (no box of a reject class), so no threshold can "
                         "be chosen for a recall target; choose it on a split with defects")
    # Loaded after the cheap checks: the backbone takes seconds to load.
    anomaly_model = model if isinstance(model, AnomalyModel) else load_anomaly_model(model)
    if imgsz is not None and imgsz != anomaly_model.imgsz:
        raise UsageError(f"--imgsz {imgsz}: {model_name} was trained at {anomaly_model.imgsz} and runs only at that "
                         "size; leave --imgsz out")

    logger.info("scoring %d %s images with %s", len(kept), split, model_name)
    scores, confidence, peaks, histograms = _score_parts(anomaly_model, kept, batch, report)
    image_auroc = auroc(scores, defective)
    pixel_auroc = histograms.auroc() if histograms.images_with_boxes else None
    if not defective.any():
        notes.append(NO_DEFECTIVE_IMAGES)
    if defective.all():
        notes.append(NO_GOOD_IMAGES)

    chosen: Thresholds | None = None
    reached, search_notes = True, list[str]()
    if loaded is not None:
        source, threshold = f"thresholds file {thresholds}", loaded.conf[ANOMALY_CLASS]
        chosen = loaded
    elif target_recall is not None:
        values, reached, search_notes = search_thresholds(confidence[:, None], defective, [0], target_recall)
        threshold = float(values[0])
        source = f"chosen on {split} for recall >= {target_recall}"
        notes.extend(search_notes)
        notes.append(f"the threshold was chosen and measured on the same split ({split}): expect a higher escape "
                     "rate on new parts; confirm it on another split with --thresholds")
    else:
        threshold = anomaly_model.threshold_confidence
        source = f"the model's own (confidence {threshold:.4g})"

    rules = build_reject_rules(class_conf={ANOMALY_CLASS: threshold}, reject_classes=[ANOMALY_CLASS])
    rejected = _station_decisions(peaks, rules)
    rates = part_rates(defective, rejected)
    if target_recall is not None:
        chosen = Thresholds(
            conf={ANOMALY_CLASS: threshold}, target_recall=float(target_recall), target_reached=reached,
            recall=rates.recall, escape_rate=rates.escape_rate, false_reject_rate=rates.false_reject_rate,
            reject_classes=[ANOMALY_CLASS], split=split, model=model_name, notes=list(search_notes),
        )
    at_frr = [escape_at_false_reject_rate(confidence, defective, limit) for limit in FALSE_REJECT_LIMITS]

    images = [str(t.image_path) for t in kept]
    parts = [ScoredPart(image, bool(bad), float(s), float(c), bool(out), peak.baseline)
             for image, bad, s, c, out, peak in zip(images, defective, scores, confidence, rejected, peaks)]
    files: dict[str, Path] = {}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if target_recall is not None and chosen is not None:
            files["thresholds"] = write_thresholds_yaml(out_dir / "thresholds.yaml", chosen)
        files["scores"] = _write_scores_csv(out_dir / "scores.csv", parts)
        if plots:
            files.update(_write_plots(out_dir, anomaly_model, kept, parts, threshold))
        files["metrics"] = out_dir / "metrics.json"

    result = AnomalyEvalResult(
        model=str(anomaly_model.path or model_name), data=str(data), split=split, imgsz=int(anomaly_model.imgsz),
        reject_classes=[class_names[i] for i in reject_ids], defective=rates.defective, good=rates.good,
        left_out=left_out, image_auroc=image_auroc, pixel_auroc=pixel_auroc, threshold_source=source,
        threshold_confidence=float(threshold), threshold_score=_score_for_confidence(anomaly_model, threshold),
        rates=rates, at_false_reject_rate=at_frr, thresholds=chosen,
        escaped_parts=[p.image for p in parts if p.defective and not p.rejected],
        false_rejected_parts=[p.image for p in parts if p.rejected and not p.defective],
        files=files, notes=notes,
    )
    if out_dir is not None:
        files["metrics"].write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return result


def _score_for_confidence(model: AnomalyModel, confidence: float) -> float | None:
    """The raw score of a confidence threshold; None for 1, which no score reaches."""
    return float(model.score_for_confidence(confidence)) if confidence < 1.0 else None


def _write_scores_csv(path: Path, parts: Sequence[ScoredPart]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "defective", "score", "confidence", "rejected", "baseline"])
        for part in parts:
            writer.writerow([part.image, int(part.defective), f"{part.score:.6g}", f"{part.confidence:.6g}",
                             int(part.rejected), f"{part.baseline:.6g}"])
    return path


def _write_plots(out_dir: Path, model: AnomalyModel, truths: Sequence[GroundTruth], parts: Sequence[ScoredPart],
                 threshold_confidence: float) -> dict[str, Path]:
    """The score histogram and heatmaps of the parts worth a look (scored again: only their maps are needed)."""
    confidence = np.array([p.confidence for p in parts])
    defective = np.array([p.defective for p in parts], dtype=bool)
    files = {"score_histogram": plot_score_histogram(
        confidence[~defective], confidence[defective], threshold_confidence, out_dir / "score_histogram.png")}
    examples: list[tuple[str, int]] = []
    if defective.any():
        bad = np.flatnonzero(defective)
        examples.append(("highest_defective", int(bad[np.argmax(confidence[bad])])))
        examples.append(("lowest_defective", int(bad[np.argmin(confidence[bad])])))
    if (~defective).any():
        good = np.flatnonzero(~defective)
        examples.append(("highest_good", int(good[np.argmax(confidence[good])])))
    if not examples:
        return files
    images = [read_image(truths[index].image_path) for _, index in examples]
    results = model.score(images)
    threshold_score = _score_for_confidence(model, threshold_confidence)
    for (name, index), image, result in zip(examples, images, results):
        part = parts[index]
        caption = (f"{name.replace('_', ' ')}: {Path(part.image).name} score {result.score:.3g} "
                   f"(conf {result.confidence:.3f}) -> {'REJECT' if part.rejected else 'pass'}")
        files[f"heatmap_{name}"] = write_heatmap(
            out_dir / f"heatmap_{name}.png", image, result.anomaly_map, truths[index].xyxy, result.peak_xyxy,
            threshold_score=threshold_score, baseline=result.baseline, caption=caption,
        )
    return files
