"""thresholds.yaml: the operating thresholds ``yolodefect eval --target-recall`` writes and both
``eval --thresholds`` and ``watch --thresholds`` run at (one record, one reader, one writer)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from yolodefect.errors import FormatError, UsageError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Thresholds:
    """Per-class confidence thresholds and what they achieved on the split they were chosen on."""

    conf: dict[str, float]
    target_recall: float | None  # None in a hand-written file that states no target
    target_reached: bool
    recall: float | None
    escape_rate: float | None
    false_reject_rate: float | None
    reject_classes: list[str]
    per_class: bool = False
    split: str | None = None
    model: str | None = None
    notes: list[str] = field(default_factory=list)
    # Set by a calibration run on a moving line (yolodefect calibrate): the run it was chosen on, and k of
    # the line rule (a class must reach its threshold on k of a part's frames). None: chosen on still images.
    calibrated_on: dict | None = None
    min_frames: int | None = None

    def to_dict(self) -> dict:
        """The thresholds.yaml layout the inspection station reads."""
        return {
            "conf": {name: float(value) for name, value in self.conf.items()},
            "target_recall": self.target_recall,
            "target_reached": bool(self.target_reached),
            "achieved": {
                "recall": self.recall,
                "escape_rate": self.escape_rate,
                "false_reject_rate": self.false_reject_rate,
            },
            "reject_classes": list(self.reject_classes),
            "per_class": bool(self.per_class),
            "split": self.split,
            "model": self.model,
            "notes": list(self.notes),
            **({"calibrated_on": dict(self.calibrated_on)} if self.calibrated_on is not None else {}),
            **({"min_frames": int(self.min_frames)} if self.min_frames is not None else {}),
        }


def write_thresholds_yaml(path: Path | str, thresholds: Thresholds) -> Path:
    """Write thresholds.yaml (the file the inspection station loads); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(thresholds.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _optional_rate(data: dict, key: str, path: Path) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise FormatError(path, f"achieved.{key} must be a number in [0, 1] or null, got {value!r}")
    return float(value)


def read_thresholds_yaml(path: Path | str) -> Thresholds:
    """Read a thresholds.yaml written by :func:`write_thresholds_yaml` (or by hand: only ``conf`` is required).

    A hand-written file without ``reject_classes`` rejects on the classes it names in ``conf``. A file
    whose thresholds missed their target recall is read with a warning: parts may escape.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"thresholds file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise FormatError(path, f"not valid YAML: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("conf"), dict) or not data["conf"]:
        raise FormatError(path, "expected a mapping with 'conf: {class_name: threshold, ...}'")
    conf: dict[str, float] = {}
    for name, value in data["conf"].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise FormatError(path, f"threshold for {name!r} must be a number in [0, 1], got {value!r}", where="conf")
        conf[str(name)] = float(value)
    achieved = data.get("achieved") or {}
    if not isinstance(achieved, dict):
        raise FormatError(path, "'achieved' must be a mapping of recall, escape_rate, false_reject_rate")
    reject = data.get("reject_classes")
    if reject is not None and (not isinstance(reject, list) or not all(isinstance(x, str) for x in reject)):
        raise FormatError(path, "'reject_classes' must be a list of class names")
    target = data.get("target_recall")
    if target is not None and (not isinstance(target, (int, float)) or not 0 < target <= 1):
        raise FormatError(path, f"'target_recall' must be a number in (0, 1], got {target!r}")
    target_reached = bool(data.get("target_reached", True))
    min_frames = data.get("min_frames")
    if min_frames is not None and (isinstance(min_frames, bool) or not isinstance(min_frames, int) or min_frames < 1):
        raise FormatError(path, f"'min_frames' must be a whole number >= 1, got {min_frames!r}")
    calibrated_on = data.get("calibrated_on")
    if calibrated_on is not None and not isinstance(calibrated_on, dict):
        raise FormatError(path, "'calibrated_on' must be a mapping (video, parts, ...)")
    if not target_reached:
        logger.warning(
            "thresholds in %s did not reach their target recall on the evaluation split; "
            "the station may pass defective parts (see its 'achieved' section)", path,
        )
    return Thresholds(
        conf=conf,
        target_recall=float(target) if target is not None else None,
        target_reached=target_reached,
        recall=_optional_rate(achieved, "recall", path),
        escape_rate=_optional_rate(achieved, "escape_rate", path),
        false_reject_rate=_optional_rate(achieved, "false_reject_rate", path),
        reject_classes=list(reject) if reject is not None else list(conf),
        per_class=bool(data.get("per_class", False)),
        split=data.get("split"),
        model=data.get("model"),
        notes=[str(note) for note in data.get("notes") or []],
        calibrated_on=calibrated_on,
        min_frames=min_frames,
    )
