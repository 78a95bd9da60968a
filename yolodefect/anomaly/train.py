"""``yolodefect anomaly train``: learn what a good part looks like from good images only.

The good images are a dataset's defect-free images (an empty or missing label file in the chosen
split, as ``convert`` keeps them, e.g. DeepPCB's templates with ``--include-templates``) or every
image of a folder. A tenth of them (at least one) is held out: never in the memory bank, their
highest score becomes the reference score and the model's default threshold.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolodefect import __version__
from yolodefect.anomaly.backbones import load_backbone
from yolodefect.anomaly.model import SCORE_RULE, AnomalyModel, image_score, square_image
from yolodefect.anomaly.patches import (
    MAX_FEATURE_DIM,
    POOL_FACTOR,
    greedy_coreset,
    patch_features,
)
from yolodefect.data.image_file import read_image
from yolodefect.data.records import IMAGE_SUFFIXES
from yolodefect.data.yolo_dataset import label_path_for, load_data_config
from yolodefect.errors import DatasetError, UsageError
from yolodefect.progress import ProgressCallback, no_progress
from yolodefect.run_dirs import first_free_dir
from yolodefect.shipped import require_shipped_model

logger = logging.getLogger(__name__)

MIN_GOOD_IMAGES = 10
ANNOTATION_SUFFIXES = (".xml", ".json", ".txt")
FEW_HOLDOUT_IMAGES = 30  # below this the maximum of the held-out scores is a noisy threshold
FEATURE_BATCH = 8


@dataclass
class AnomalyTrainOptions:
    data: Path  # a data.yaml / dataset folder (its defect-free images), or a folder of good images
    backbone: str | None = None  # None: the shipped demo model (weights/yolodefect-demo.pt beside the package)
    backbone_weights: Path | None = None
    imgsz: int = 256
    coreset_ratio: float = 0.1
    # patches; scoring time grows with it: 15 / 21 / 33 / 100 ms per 256 px image at 1,024 / 2,048 / 4,096 /
    # 10,000 (bench/results/anomaly_deeppcb.json, 2 cores): 4,096 keeps a part in tens of milliseconds.
    max_bank: int = 4096
    split: str = "train"
    holdout: float = 0.1
    out: Path | None = None  # model file; default runs/anomaly/<data name>/anomaly.npz
    seed: int = 0


@dataclass
class AnomalyTrainResult:
    model_path: Path
    model: AnomalyModel
    good_images: int
    holdout_images: int
    bank_size: int
    bank_bytes: int
    pool_size: int
    reference_score: float
    seconds: float
    holdout_scores: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": str(self.model_path), "good_images": self.good_images, "holdout_images": self.holdout_images,
                "bank_size": self.bank_size, "bank_bytes": self.bank_bytes, "pool_size": self.pool_size,
                "reference_score": self.reference_score, "threshold": self.model.threshold,
                "seconds": round(self.seconds, 2), "card": self.model.card}


def good_images(data: Path, split: str = "train") -> list[Path]:
    """The defect-free images of a dataset split, or every image of a plain folder of good images."""
    data = Path(data)
    if _is_plain_folder(data):
        annotations = next((p for p in data.rglob("*") if p.suffix.lower() in ANNOTATION_SUFFIXES and p.is_file()), None)
        if annotations is not None:
            # A raw labelled dataset (NEU-DET's VOC XML, LabelMe JSON ...) is not a folder of good parts: every
            # labelled defect would be learned as normal.
            raise DatasetError(f"{data} holds annotation files (e.g. {annotations}): it looks like a labelled dataset, "
                               "not a folder of good parts. Convert it first (yolodefect convert SRC OUT "
                               "--include-templates where the source has defect-free images) and train on OUT")
        return sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    config = load_data_config(data)
    return [image for image in config.images(split) if _label_is_empty(label_path_for(image))]


def _label_is_empty(label: Path) -> bool:
    return not label.is_file() or not label.read_text(encoding="utf-8", errors="replace").strip()


def default_model_path(data: Path) -> Path:
    data = Path(data)
    name = (data.parent.name if data.is_file() else data.name) or "good"
    return first_free_dir(Path("runs/anomaly") / name) / "anomaly.npz"


def train_anomaly(options: AnomalyTrainOptions, progress: ProgressCallback = no_progress) -> AnomalyTrainResult:
    """Build the memory bank from the good images and set the threshold on the held-out ones."""
    _check(options)
    started = time.perf_counter()
    images = good_images(options.data, options.split)
    if len(images) < MIN_GOOD_IMAGES:
        where = (f"the {options.split} split of {options.data} (images with an empty label file)"
                 if not _is_plain_folder(options.data) else f"folder {options.data}")
        raise DatasetError(f"found {len(images)} good image(s) in {where}; an anomaly model needs at least "
                           f"{MIN_GOOD_IMAGES} (hundreds are better). Keep defect-free images when converting "
                           "(DeepPCB: convert --include-templates) or give a folder of good images")
    order = np.random.default_rng(options.seed).permutation(len(images))
    held = max(1, round(options.holdout * len(images)))
    holdout_paths = [images[i] for i in sorted(order[:held])]
    bank_paths = [images[i] for i in sorted(order[held:])]

    if held < FEW_HOLDOUT_IMAGES:
        logger.warning("the threshold is the highest score of only %d held-out good image(s): expect more false "
                       "rejects than it suggests; use more good images or --holdout, or choose it with "
                       "yolodefect eval MODEL DATA --target-recall", held)
    backbone_spec = options.backbone or str(require_shipped_model())
    backbone = load_backbone(backbone_spec, options.backbone_weights)
    feature_dim = min(backbone.info.channels, MAX_FEATURE_DIM)
    cells = (options.imgsz // 8) ** 2
    total = len(bank_paths) * cells
    bank_size = max(1, min(math.ceil(options.coreset_ratio * total), options.max_bank))
    pool_target = min(total, POOL_FACTOR * bank_size)

    pool: list[torch.Tensor] = []
    for start in range(0, len(bank_paths), FEATURE_BATCH):
        chunk = [read_image(p) for p in bank_paths[start:start + FEATURE_BATCH]]
        batch = np.stack([square_image(image, options.imgsz) for image in chunk])
        features = patch_features(backbone(batch), feature_dim).reshape(-1, feature_dim)
        keep = math.ceil(pool_target * len(features) / total)
        pool.append(features[greedy_coreset(features, keep, seed=options.seed + start)] if keep < len(features)
                    else features)
        progress("features", min(start + FEATURE_BATCH, len(bank_paths)), len(bank_paths))
    pooled = torch.cat(pool)
    progress("coreset", 0, 1)
    bank = pooled[greedy_coreset(pooled, bank_size, seed=options.seed)].numpy()
    progress("coreset", 1, 1)

    card: dict[str, Any] = {
        "format": 1, "backbone": dict(backbone.info.to_dict(), path=str(Path(backbone_spec).resolve())
                                      if backbone.info.kind == "ultralytics" else None),
        "imgsz": options.imgsz, "feature_dim": feature_dim, "score_rule": SCORE_RULE, "bank_size": len(bank),
        "bank_bytes": int(bank.astype(np.float32).nbytes), "pool_size": len(pooled),
        "coreset_ratio": options.coreset_ratio, "max_bank": options.max_bank,
        "data": str(options.data), "split": options.split, "good_images": len(bank_paths), "holdout_images": held,
        "reference_score": 1.0, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "yolodefect": __version__,
    }
    model = AnomalyModel(backbone, bank, card)
    holdout_scores = []
    for start in range(0, held, FEATURE_BATCH):
        chunk = [read_image(p) for p in holdout_paths[start:start + FEATURE_BATCH]]
        holdout_scores += [image_score(d, SCORE_RULE) for d in model.patch_distances(chunk)]
        progress("threshold", min(start + FEATURE_BATCH, held), held)
    reference = max(max(holdout_scores), 1e-6)
    card.update(reference_score=reference, threshold=reference,
                holdout_score_median=float(np.median(holdout_scores)),
                train_seconds=round(time.perf_counter() - started, 1))
    model = AnomalyModel(backbone, bank, card)
    path = model.save(options.out or default_model_path(options.data))
    return AnomalyTrainResult(path, model, len(bank_paths), held, len(bank), model.bank_bytes, len(pooled),
                              reference, time.perf_counter() - started, holdout_scores)


def _is_plain_folder(data: Path) -> bool:
    data = Path(data)
    return data.is_dir() and not (data / "data.yaml").is_file() and not (data / "images").is_dir()


def _check(options: AnomalyTrainOptions) -> None:
    if options.imgsz < 32 or options.imgsz % 16:
        raise UsageError(f"--imgsz {options.imgsz}: give a multiple of 16, at least 32 (features are taken at "
                         "strides 8 and 16)")
    if not 0.0 < options.coreset_ratio <= 1.0:
        raise UsageError(f"--coreset-ratio {options.coreset_ratio}: give a fraction in (0, 1], e.g. 0.1")
    if options.max_bank < 1:
        raise UsageError(f"--max-bank {options.max_bank}: give a positive number of patches")
    if not 0.0 < options.holdout < 1.0:
        raise UsageError(f"holdout {options.holdout}: give a fraction in (0, 1)")
    if not Path(options.data).exists():
        raise UsageError(f"{options.data} does not exist (give a data.yaml, a dataset folder or a folder of good images)")
