"""Cutting large images into overlapping tiles, with boxes clipped to each tile."""

from __future__ import annotations

from dataclasses import dataclass

from yolodefect.data.records import Box
from yolodefect.inference.tiles import check_tile_grid, tile_origins


@dataclass(frozen=True)
class TileWindow:
    """A tile's corners in the source image, absolute pixels."""

    x0: int
    y0: int
    x1: int
    y1: int


def tile_windows(width: int, height: int, *, tile: int, overlap: float) -> list[TileWindow]:
    """Windows of ``tile`` pixels covering the image, overlapping by ``overlap`` (a fraction of a tile): the
    grid of :func:`yolodefect.inference.tiles.tile_origins`, the one ``watch --tile`` runs on."""
    check_tile_grid(tile, overlap)
    return [TileWindow(x, y, min(x + tile, width), min(y + tile, height))
            for x, y in tile_origins((width, height), (tile, tile), overlap)]


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
