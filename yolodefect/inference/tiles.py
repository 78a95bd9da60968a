"""The one tile grid: where tiles start along an image, for training tiles (``convert --tile``) and
inference tiles (``watch --tile``) alike, so a model sees at inference the same tile geometry it was
trained on.

The step between tiles is ``round(tile * (1 - overlap))`` pixels (416 px at overlap 0.2: 333 px, not
332): rounding, as ``convert`` has always cut its tiles, keeps existing converted datasets reproducible.
The last tile of a row or column ends flush with the image border instead of padding past it.
"""

from __future__ import annotations

from yolodefect.errors import UsageError

MIN_TILE_PX = 32  # a YOLO stride; smaller tiles hold no context around a defect
MAX_OVERLAP = 0.9  # at 0.9 a tile starts every tenth of a tile already: ~100 model calls per tile area


def check_tile_grid(tile: int | None, overlap: float, *, tile_option: str = "--tile",
                    overlap_option: str = "--overlap") -> None:
    """UsageError unless ``tile`` (when set) is a whole number of at least MIN_TILE_PX pixels and ``overlap`` a
    fraction in [0, MAX_OVERLAP): one rule for convert's training tiles and watch's inference tiles."""
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < MIN_TILE_PX):
        raise UsageError(f"{tile_option} {tile!r}: tiles must be a whole number of at least {MIN_TILE_PX} pixels")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < MAX_OVERLAP:
        raise UsageError(f"{overlap_option} {overlap!r}: the tile overlap is a fraction of a tile in "
                         f"[0, {MAX_OVERLAP:g})")


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
