"""Cutting large images into overlapping tiles, with boxes clipped to each tile."""

from __future__ import annotations

from dataclasses import dataclass

from yolodefect.data.records import Box
from yolodefect.errors import UsageError


@dataclass(frozen=True)
class TileWindow:
    """A tile's corners in the source image, absolute pixels."""

    x0: int
    y0: int
    x1: int
    y1: int


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # the last tile ends at the border rather than padding past it
    return starts


def tile_windows(width: int, height: int, *, tile: int, overlap: float) -> list[TileWindow]:
    """Windows of ``tile`` pixels covering the image, overlapping by ``overlap`` (0..0.9) of a tile."""
    if tile < 32:
        raise UsageError(f"--tile {tile}: tiles must be at least 32 pixels")
    if not 0 <= overlap < 0.9:
        raise UsageError(f"--overlap {overlap}: use a fraction in [0, 0.9)")
    stride = max(1, int(round(tile * (1 - overlap))))
    return [
        TileWindow(x, y, min(x + tile, width), min(y + tile, height))
        for y in _starts(height, tile, stride)
        for x in _starts(width, tile, stride)
    ]


def boxes_in_window(boxes: list[Box], window: TileWindow, *, min_visibility: float) -> list[Box]:
    """Boxes clipped to the window, in its coordinates; a box is kept when at least
    ``min_visibility`` of its area lies inside (a defect cut to a sliver teaches nothing)."""
    kept = []
    for box in boxes:
        x0, y0, x1, y1 = box.xyxy
        cx0, cy0 = max(x0, window.x0), max(y0, window.y0)
        cx1, cy1 = min(x1, window.x1), min(y1, window.y1)
        if cx1 <= cx0 or cy1 <= cy0 or box.area <= 0:
            continue
        if (cx1 - cx0) * (cy1 - cy0) / box.area < min_visibility:
            continue
        kept.append(Box(box.class_name, (cx0 - window.x0, cy0 - window.y0, cx1 - window.x0, cy1 - window.y0)))
    return kept
