"""An anomaly model: a backbone, a memory bank of good patches, a threshold, and the card saying what it saw.

One ``.npz`` file (``numpy.load`` with ``allow_pickle=False``: opening it runs no code, unlike a
pickled ``.pt``): the memory bank and a JSON card. The backbone is named by file and sha256, not
copied: it is the user's own detector or a public checkpoint, and a changed file would give
features the bank was not built from, so loading refuses it and says so.

Scores: a part's score is how far its most anomalous patch stands out: its largest patch distance to
the nearest good patch (PatchCore's image score) minus the part's own 90th-percentile patch distance
(``SCORE_RULE``). PatchCore's plain maximum ranks a good part of a design the memory bank never saw
(every patch a little far) above a defective part of a familiar one. Measured on DeepPCB (bank from
the trainval boards' templates, test on 500 boards, 332 of them of designs never seen;
bench/results/anomaly_deeppcb.json, ``score_rules``): image AUROC 0.964 with the maximum, 0.974 with
the maximum over the 90th percentile; on the val split (familiar designs) 0.984 either way. The 90th
percentile leaves a defect up to a tenth of the part's area standing out. Models written before
the rule (no ``score_rule`` in the card) keep the plain maximum their threshold was set with.

``confidence = score / (score + reference_score)`` maps the score into (0, 1) so the station's
reject rules treat the anomaly stage like any other class: 0.5 is the reference score, the
highest score of the good images held out at training.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from yolodefect.anomaly.backbones import FeatureBackbone, load_backbone
from yolodefect.anomaly.patches import MAX_FEATURE_DIM, NearestSearch, patch_features
from yolodefect.errors import FormatError, UsageError

ANOMALY_CLASS = "anomaly"
FORMAT_MARKER = "yolodefect_anomaly"
FORMAT_VERSION = 1
MAP_SIGMA_PX = 4.0  # PatchCore's smoothing of the upsampled map, at the model's image size
SCORE_RULE = "peak_over_p90"  # written to new models' cards; a card without it means "peak"
SCORE_RULES = ("peak", "peak_over_p90")
SCORE_BATCH = 8


@dataclass
class AnomalyResult:
    """One image's verdict from the anomaly model."""

    score: float  # raw: largest patch distance to the nearest good patch, less the score rule's baseline
    confidence: float  # score / (score + reference_score), in (0, 1)
    anomaly_map: np.ndarray  # (H, W) float32 raw per-pixel distance (PatchCore's map), input image pixels
    peak_xyxy: np.ndarray  # (4,) float32 box around the most anomalous region, input image pixels
    baseline: float = 0.0  # what the score rule subtracted from the peak: heat_levels colours above it


def heat_levels(anomaly_map: np.ndarray, baseline: float, threshold_score: float | None,
                full_scale: float) -> np.ndarray:
    """Colour level in [0, 1] of each pixel of a map: 0 at the image's baseline, 1 at ``full_scale`` times the
    threshold score above it, so a heatmap shows the part's own standing-out patches on the score's scale;
    without a finite threshold (1: never reject) the map's own peak is 1."""
    above = np.asarray(anomaly_map, dtype=np.float32) - np.float32(baseline)
    top = threshold_score * full_scale if threshold_score is not None else 0.0
    if not np.isfinite(top) or top <= 0:
        top = max(float(above.max()), 1e-12)
    return np.clip(above / top, 0.0, 1.0)


class AnomalyModel:
    """Scores images against the memory bank of good patches."""

    def __init__(self, backbone: FeatureBackbone, bank: np.ndarray, card: dict[str, Any], path: Path | None = None):
        self.backbone = backbone
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.card = card
        self.path = path
        self.imgsz = int(card["imgsz"])
        self.feature_dim = int(card["feature_dim"])
        self.reference_score = float(card["reference_score"])
        self.threshold = float(card.get("threshold", self.reference_score))
        self.score_rule = str(card.get("score_rule", "peak"))
        if self.score_rule not in SCORE_RULES:
            raise FormatError(path or Path("<anomaly model>"), f"score rule {self.score_rule!r} is not one this "
                              f"yolodefect knows ({', '.join(SCORE_RULES)}): written by a newer version?")
        self._search = NearestSearch(self.bank)

    @property
    def bank_bytes(self) -> int:
        return int(self.bank.nbytes)

    def confidence(self, score: float) -> float:
        return float(score / (score + self.reference_score)) if score > 0 else 0.0

    def score_for_confidence(self, confidence: float) -> float:
        if not 0.0 <= confidence < 1.0:
            raise UsageError(f"an anomaly confidence threshold must be in [0, 1), got {confidence}")
        return float(self.reference_score * confidence / (1.0 - confidence))

    @property
    def threshold_confidence(self) -> float:
        return self.confidence(self.threshold)

    def patch_distances(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, h, w) distance of each patch (stride 8 at the model's size) to its nearest good patch."""
        batch = np.stack([square_image(image, self.imgsz) for image in images])
        features = patch_features(self.backbone(batch), self.feature_dim)
        n, h, w, dim = features.shape
        return self._search.distances(features.reshape(-1, dim).numpy()).reshape(n, h, w)

    def score(self, images: Sequence[np.ndarray]) -> list[AnomalyResult]:
        """Anomaly score, map and peak box of each image (BGR or gray uint8, any size)."""
        results: list[AnomalyResult] = []
        for start in range(0, len(images), SCORE_BATCH):
            chunk = images[start:start + SCORE_BATCH]
            for image, distances in zip(chunk, self.patch_distances(chunk)):
                offset = baseline(distances, self.score_rule)
                score = float(distances.max()) - offset
                square_map = cv2.GaussianBlur(cv2.resize(distances, (self.imgsz, self.imgsz),
                                                         interpolation=cv2.INTER_LINEAR), (0, 0), MAP_SIGMA_PX)
                height, width = image.shape[:2]
                peak = peak_box(square_map) * np.array([width, height, width, height], np.float32) / self.imgsz
                results.append(AnomalyResult(score, self.confidence(score),
                                             cv2.resize(square_map, (width, height), interpolation=cv2.INTER_LINEAR),
                                             peak.astype(np.float32), offset))
        return results

    def with_threshold(self, threshold: float) -> AnomalyModel:
        card = dict(self.card, threshold=float(threshold))
        return AnomalyModel(self.backbone, self.bank, card, self.path)

    def save(self, path: Path | str) -> Path:
        """Write the model file atomically (a temporary file in the same folder, then renamed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, **{FORMAT_MARKER: np.array(FORMAT_VERSION), "memory_bank": self.bank,
                                 "card": np.array(json.dumps(self.card))})
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.path = path
        return path


def baseline(distances: np.ndarray, rule: str = SCORE_RULE) -> float:
    """What ``rule`` subtracts from an image's (h, w) patch distances: 0, or their 90th percentile."""
    return 0.0 if rule == "peak" else float(np.percentile(distances, 90))


def image_score(distances: np.ndarray, rule: str = SCORE_RULE) -> float:
    """One image's anomaly score from its (h, w) patch distances, by ``rule`` (see the module docstring)."""
    return float(distances.max()) - baseline(distances, rule)


def square_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resized (stretched) to size x size BGR, as the memory bank was built: parts keep their aspect on the line."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def peak_box(anomaly_map: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) around the region holding the map's maximum: pixels above halfway from median to peak."""
    peak = float(anomaly_map.max())
    level = (peak + float(np.median(anomaly_map))) / 2.0
    mask = (anomaly_map >= level).astype(np.uint8)
    _, labels = cv2.connectedComponents(mask, connectivity=8)
    y, x = np.unravel_index(int(np.argmax(anomaly_map)), anomaly_map.shape)
    ys, xs = np.nonzero(labels == labels[y, x])
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def is_anomaly_model_file(path: Path | str) -> bool:
    """True for a file written by :meth:`AnomalyModel.save` (checked from its content, not its name)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as data:
            return FORMAT_MARKER in data.files
    except Exception:  # not a zip / not an npz: some other model file
        return False


def load_anomaly_model(path: Path | str, *, backbone_weights: Path | str | None = None,
                       imgsz: int | None = None) -> AnomalyModel:
    """Read a model file; refuse it (naming the file and why) when its backbone or image size cannot match."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"anomaly model {path} does not exist (train one with `yolodefect anomaly train DATA`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            if FORMAT_MARKER not in data.files:
                raise FormatError(path, "not an anomaly model (no yolodefect_anomaly marker); "
                                        "train one with `yolodefect anomaly train DATA`")
            version = int(data[FORMAT_MARKER])
            bank = data["memory_bank"]
            card = json.loads(str(data["card"]))
    except FormatError:
        raise
    except Exception as error:  # zipfile.BadZipFile, ValueError, KeyError, JSONDecodeError
        raise FormatError(path, f"not a readable anomaly model ({type(error).__name__}: {error})") from error
    if version > FORMAT_VERSION:
        raise FormatError(path, f"written by a newer yolodefect (format {version}; this one reads {FORMAT_VERSION})")
    if imgsz is not None and int(imgsz) != int(card["imgsz"]):
        raise FormatError(path, f"trained at {card['imgsz']} px; scoring at {imgsz} px would compare patches of "
                                f"another scale with its memory bank: retrain with --imgsz {imgsz}")
    backbone = _matching_backbone(path, card["backbone"], backbone_weights)
    expected_dim = min(backbone.info.channels, MAX_FEATURE_DIM)
    if bank.ndim != 2 or bank.shape[1] != int(card["feature_dim"]) or bank.shape[1] != expected_dim:
        raise FormatError(path, f"memory bank of shape {bank.shape} does not fit backbone {backbone.info.name} "
                                f"({expected_dim} features per patch)")
    return AnomalyModel(backbone, bank, card, path)


def _matching_backbone(model_path: Path, recorded: dict[str, Any], override: Path | str | None) -> FeatureBackbone:
    kind, name, sha256 = recorded["kind"], recorded["name"], recorded["sha256"]
    if kind == "torchvision":
        backbone = load_backbone(name, override)
    else:
        candidates = [Path(override)] if override else [Path(recorded.get("path", name)),
                                                        model_path.parent / name, Path("weights") / name]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise UsageError(f"{model_path}: its backbone {name} was not found (looked at "
                             f"{', '.join(str(c) for c in candidates)}); pass --backbone-weights PATH.pt")
        backbone = load_backbone(found)
    if sha256 and backbone.info.sha256 != sha256:
        raise FormatError(model_path, f"built on backbone {name} sha256 {sha256[:12]}, but "
                                      f"{override or backbone.info.name} has sha256 {backbone.info.sha256[:12]}: its "
                                      "features would not match the memory bank; retrain on this backbone")
    return backbone
