"""The shipped demonstration model (weights/yolodefect-demo.pt) and what running it needs.

It was trained by examples/train_demo_model.py on synthetic conveyor frames cropped to 320 px, so
the station runs it on 320 px tiles (the defects then have the pixel size it learned) with its own
thresholds.yaml. It is what ``watch`` runs when no model is given, and what ``demo`` fine-tunes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from yolodefect.errors import UsageError

SHIPPED_MODEL_NAME = "yolodefect-demo.pt"
SHIPPED_TILE = 320


def shipped_model_path() -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / SHIPPED_MODEL_NAME


def shipped_thresholds_path() -> Path:
    return shipped_model_path().with_suffix(".thresholds.yaml")


def require_shipped_model() -> Path:
    path = shipped_model_path()
    if not path.exists():
        raise UsageError(f"the shipped demo model is not at {path}: it comes with the source checkout "
                         "(git clone, then pip install -e .); or give --model path/to/best.pt")
    return path


def with_shipped_model(options):
    """``WatchOptions`` with the shipped model, its thresholds and tile size where none were given."""
    if options.model is not None:
        return options
    changes = {"model": require_shipped_model()}
    if options.thresholds is None and shipped_thresholds_path().exists():
        changes["thresholds"] = shipped_thresholds_path()
    if options.tile is None:
        changes["tile"] = SHIPPED_TILE
    return dataclasses.replace(options, **changes)
