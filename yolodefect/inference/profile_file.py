"""The reference profile file (``profile.json`` beside thresholds.yaml): the record and its reading and writing.

``yolodefect eval`` builds it (:mod:`yolodefect.evaluation.profile`) and ``watch``'s drift monitor reads it
(:mod:`yolodefect.stream.drift`); like the thresholds file, it is shared by both through the inference core.
For every image of the evaluated split: its :data:`~yolodefect.inference.image_stats.IMAGE_FEATURES`, the top
detection confidence (0 when the model found nothing) and the number of detections the reject rules count;
and the split's reject rate at the operating thresholds. The values are kept, sorted, rather than a
histogram: any test (population stability index, Kolmogorov-Smirnov, Wasserstein) can be computed from
them later, with the bins chosen then.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yolodefect.errors import UsageError
from yolodefect.inference.image_stats import IMAGE_FEATURES

PROFILE_NAME = "profile.json"
PROFILE_VERSION = 1
DETECTION_FEATURES = ("top_confidence", "detections")


@dataclass(frozen=True)
class ReferenceProfile:
    """Per feature, the split's values (sorted); ``reject_rate`` is the share of its parts the rules reject."""

    split: str
    model: str
    images: int
    reject_rate: float
    thresholds: dict[str, float]
    features: dict[str, list[float]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # images left out (named), so the count is honest
    version: int = PROFILE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def quantiles(self, feature: str, q: Sequence[float] = (0.05, 0.5, 0.95)) -> list[float]:
        return [float(v) for v in np.quantile(np.asarray(self.features[feature]), q)]


def write_profile(profile: ReferenceProfile, path: Path) -> Path:
    """Write ``profile`` as JSON, through a temporary file moved into place (never a half-written profile)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(profile.to_dict(), indent=1), encoding="utf-8")
    os.replace(partial, path)
    return path


def read_profile(path: Path) -> ReferenceProfile:
    """A profile written by :func:`write_profile`; UsageError naming the file when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the reference profile {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not a reference profile (not JSON: {exc}); rewrite it with "
                         "yolodefect eval") from None
    if not isinstance(data, Mapping) or "features" not in data or "version" not in data:
        raise UsageError(f"{path} is not a reference profile written by yolodefect eval")
    if data["version"] > PROFILE_VERSION:
        raise UsageError(f"{path} is a version {data['version']} profile; this yolodefect reads up to "
                         f"version {PROFILE_VERSION}: upgrade yolodefect")
    missing = [name for name in (*IMAGE_FEATURES, *DETECTION_FEATURES) if name not in data["features"]]
    if missing:
        raise UsageError(f"the reference profile {path} lacks {', '.join(missing)}; rewrite it with yolodefect eval")
    return ReferenceProfile(**{key: data[key] for key in ReferenceProfile.__dataclass_fields__ if key in data})
