"""What identifies a model's weights, read from the file alone (nothing is loaded or run): its SHA-256, the model
card written next to it by ``yolodefect export`` and its precision.

Every event the station emits carries these, so a reject can be traced back to exact weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CARD_SUFFIX = ".card.json"


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a weights file, or of an export folder's files (names and bytes, sorted) for OpenVINO."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def card_path(model_path: Path | str) -> Path:
    """``best.pt`` -> ``best.card.json``; an OpenVINO folder ``x_openvino_model`` -> ``x_openvino_model.card.json``."""
    model_path = Path(model_path)
    if model_path.is_dir():
        return model_path.with_name(model_path.name + CARD_SUFFIX)
    return model_path.with_suffix(CARD_SUFFIX)


def load_model_card(model_path: Path | str) -> dict[str, Any] | None:
    """The model card next to the model, if any (shown on the station's panel; never required)."""
    path = card_path(model_path)
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("model card %s is unreadable (%s); ignored", path, exc)
        return None
    if not isinstance(card, dict):
        logger.warning("model card %s is not a JSON object; ignored", path)
        return None
    return card


def guess_precision(model_path: Path | str, card: dict[str, Any] | None) -> str:
    """The card's precision; without a card the file name is the only hint (Ultralytics names INT8 exports *_int8*)."""
    if card and isinstance(card.get("precision"), str) and card["precision"]:
        return str(card["precision"])
    return "int8" if "int8" in Path(model_path).name.lower() else "fp32"
