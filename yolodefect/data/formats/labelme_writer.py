"""LabelMe JSON writing: the pre-annotated documents of the station's review queue (``watch --review``).

The one place a LabelMe document is built and the one place the rule "has a person reviewed it?" lives;
the reader is :mod:`yolodefect.data.formats.labelme`. A document opens directly in LabelMe 5.x (CVAT and
Label Studio import it): one ``rectangle`` shape per box, two corner points in image pixels, the model's
confidence in the shape's ``description``. Extra top-level keys (``yolodefect``: the provenance) are kept
by LabelMe when it saves (its ``otherData``).

Coordinates are written as the shortest decimal that reads back as the same float32 (the precision boxes
have in :class:`~yolodefect.detections.Detections`), so reading a document back gives the model's boxes
exactly, without float noise such as 12.300000190734863 in the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

LABELME_VERSION = "5.5.0"


def _coordinate(value: float) -> float:
    """The shortest decimal that is the same float32 as ``value``."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="0"))


def rectangle_shape(label: str, xyxy: Sequence[float], confidence: float | None = None) -> dict[str, Any]:
    """One LabelMe rectangle (``xyxy`` in image pixels); ``confidence`` goes into its description."""
    x1, y1, x2, y2 = (_coordinate(v) for v in xyxy)
    return {"label": label, "points": [[x1, y1], [x2, y2]], "group_id": None,
            "description": "" if confidence is None else f"model confidence {float(confidence):.2f}",
            "shape_type": "rectangle", "flags": {}}


def shapes_sha256(shapes: Sequence[Mapping[str, Any]]) -> str:
    """The hash that tells untouched pre-annotations from edited ones: sha256 of ``json.dumps(shapes, sort_keys=True)``."""
    return hashlib.sha256(json.dumps(list(shapes), sort_keys=True).encode("utf-8")).hexdigest()


def labelme_document(shapes: Sequence[Mapping[str, Any]], image_name: str, size_wh: tuple[int, int], *,
                     reviewed: bool = False, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A LabelMe 5.x document for the image ``image_name`` (beside the JSON) of ``size_wh`` pixels; ``extra``:
    further top-level keys (e.g. ``{"yolodefect": provenance}``)."""
    width, height = size_wh
    return {"version": LABELME_VERSION, "flags": {"reviewed": bool(reviewed)}, "shapes": [dict(s) for s in shapes],
            "imagePath": image_name, "imageData": None, "imageHeight": int(height), "imageWidth": int(width),
            **dict(extra or {})}


def is_reviewed(document: Mapping[str, Any], predictions_sha256: str | None) -> bool:
    """Whether a person has reviewed a pre-annotated document: its ``flags.reviewed`` is true, or its shapes are no
    longer the ones ``predictions_sha256`` hashes (someone edited them). Without a hash, only the flag counts."""
    flags = document.get("flags")
    if isinstance(flags, Mapping) and flags.get("reviewed") is True:
        return True
    shapes = document.get("shapes")
    if predictions_sha256 is None or not isinstance(shapes, list):
        return False
    return shapes_sha256(shapes) != predictions_sha256
