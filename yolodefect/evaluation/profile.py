"""Building the reference profile of an evaluated split (the record and its file: :mod:`yolodefect.inference.profile_file`).

``watch``'s drift monitor compares rolling windows of the same numbers on the line with these distributions
(issue #17).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from yolodefect.data.image_file import UnreadableImageError, read_image
from yolodefect.detections import Detections
from yolodefect.inference.image_stats import IMAGE_FEATURES, image_statistics
from yolodefect.inference.profile_file import (DETECTION_FEATURES, PROFILE_NAME, PROFILE_VERSION, ReferenceProfile,
                                               read_profile, write_profile)
from yolodefect.inference.rules import RejectRules

__all__ = ["DETECTION_FEATURES", "PROFILE_NAME", "PROFILE_VERSION", "ReferenceProfile", "build_profile",
           "read_profile", "write_profile"]


def build_profile(image_paths: Sequence[Path | str], predictions: Sequence[Detections], class_names: Sequence[str],
                  rules: RejectRules, *, split: str, model: str, reject_rate: float) -> ReferenceProfile:
    """The profile of a split from its images and the model's predictions on them (in the same order)."""
    if len(image_paths) != len(predictions):
        raise ValueError(f"{len(image_paths)} images but {len(predictions)} predictions")
    values: dict[str, list[float]] = {name: [] for name in (*IMAGE_FEATURES, *DETECTION_FEATURES)}
    unreadable = []
    for path, found in zip(image_paths, predictions):
        try:
            stats = image_statistics(read_image(Path(path)))
        except UnreadableImageError:
            unreadable.append(str(path))
            continue
        for name, value in stats.items():
            values[name].append(round(value, 4))
        values["top_confidence"].append(round(float(found.confidence.max()), 4) if len(found) else 0.0)
        values["detections"].append(float(int(rules.mask(found, class_names).sum())))
    thresholds = {name: float(rules.threshold(name)) for name in class_names}
    return ReferenceProfile(split=split, model=model, images=len(values["brightness"]),
                            reject_rate=round(float(reject_rate), 6), thresholds=thresholds,
                            features={name: sorted(v) for name, v in values.items()}, unreadable=unreadable)


