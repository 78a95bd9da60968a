"""The one tile grid: where tiles start along an image, for training tiles (``convert --tile``) and
inference tiles (``watch --tile``) alike, so a model sees at inference the same tile geometry it was
trained on.

The step between tiles is ``round(tile * (1 - overlap))`` pixels (416 px at overlap 0.2: 333 px, not
332): rounding, as ``convert`` has always cut its tiles, keeps existing converted datasets reproducible.
The last tile of a row or column ends flush with the image border instead of padding past it.
"""

from __future__ import annotations


def tile_step(tile: int, overlap: float) -> int:
    """Pixels between the starts of two neighbouring tiles (at least 1)."""
    return max(1, round(tile * (1.0 - overlap)))


def tile_starts(extent: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels along an ``extent``-pixel side, overlapping by ``overlap``
    (a fraction of a tile); one tile at 0 when the side is no longer than a tile."""
    if extent <= tile:
        return [0]
    starts = list(range(0, extent - tile, tile_step(tile, overlap)))
    starts.append(extent - tile)  # the last tile ends at the border rather than padding past it
    return starts


def tile_origins(size_wh: tuple[int, int], tile_wh: tuple[int, int], overlap: float) -> list[tuple[int, int]]:
    """Top-left corners (x, y) of the tiles covering a ``size_wh`` image, row by row."""
    return [(x, y) for y in tile_starts(size_wh[1], tile_wh[1], overlap)
            for x in tile_starts(size_wh[0], tile_wh[0], overlap)]
