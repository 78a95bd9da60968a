"""One tile grid: the tiles ``convert --tile`` trains on are the tiles ``watch --tile`` infers on."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yolodefect.data.convert import ConvertOptions, build_dataset
from yolodefect.data.records import Box, ImageRecord, SourceDataset
from yolodefect.detections import Detections
from yolodefect.inference.tiles import tile_origins, tile_starts
from yolodefect.stream.detector import TiledDetector

SIZE_WH = (1000, 750)
TILE, OVERLAP = 416, 0.2


def converted_tile_origins(tmp_path: Path) -> set[tuple[int, int]]:
    """Tile corners of a real ``convert --tile`` run, read back from the tile file names (``<stem>_x<X>_y<Y>``)."""
    records = []
    for index in range(10):
        path = tmp_path / "src" / f"plate{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full(SIZE_WH[::-1], 40 + index, np.uint8), mode="L").save(path)
        records.append(ImageRecord(path, [Box("pit", (10, 10, 40, 40))]))
    out = tmp_path / "out"
    build_dataset(SourceDataset("t", records, ["pit"]), out,
                  ConvertOptions(tile=TILE, overlap=OVERLAP, background_tiles=1.0), source_label="mem")
    names = [p.stem for p in out.glob("images/*/plate0_*")]
    return {(int(m.group(1)), int(m.group(2))) for m in (re.search(r"_x(\d+)_y(\d+)$", n) for n in names)}


def watched_tile_origins() -> list[tuple[int, int]]:
    """Tile corners ``TiledDetector`` (what ``watch --tile`` runs) cuts: each pixel encodes its own (x, y)."""
    width, height = SIZE_WH
    ys, xs = np.mgrid[0:height, 0:width]
    frame = np.stack([xs % 256, ys % 256, (xs // 256) * 16 + ys // 256], axis=-1).astype(np.uint8)
    seen: list[tuple[int, int]] = []

    def recording_detector(tile: np.ndarray) -> Detections:
        b, g, r = (int(v) for v in tile[0, 0])
        seen.append((b + 256 * (r // 16), g + 256 * (r % 16)))
        assert tile.shape[:2] == (TILE, TILE)  # every tile is whole: the last one is flush with the border
        return Detections.empty()

    TiledDetector(recording_detector, (TILE, TILE), overlap=OVERLAP)(frame)
    return seen


def test_convert_and_watch_cut_the_same_tiles(tmp_path: Path) -> None:
    expected = [(x, y) for y in (0, 333, 334) for x in (0, 333, 584)]  # step round(416 * 0.8) = 333 px
    assert watched_tile_origins() == expected
    assert converted_tile_origins(tmp_path) == set(expected)


@pytest.mark.parametrize(
    ("extent", "tile", "overlap", "expected"),
    [
        (1000, 416, 0.2, [0, 333, 584]),  # 332.8 rounds to 333 (truncating gave 332: a grid off by a pixel per step)
        (416, 416, 0.2, [0]),
        (300, 416, 0.2, [0]),  # smaller than a tile: one tile, clipped by the caller
        (1000, 512, 0.25, [0, 384, 488]),
        (100, 40, 0.0, [0, 40, 60]),
    ],
)
def test_tile_starts(extent: int, tile: int, overlap: float, expected: list[int]) -> None:
    assert tile_starts(extent, tile, overlap) == expected


def test_tile_origins_run_row_by_row() -> None:
    assert tile_origins((600, 500), (416, 416), 0.2) == [(0, 0), (184, 0), (0, 84), (184, 84)]


@pytest.mark.parametrize(("tile", "overlap"), [(16, 0.2), (416, 0.95), (416, -0.1)])
def test_convert_and_watch_refuse_the_same_tile_grids(tile, overlap):
    # One rule for the grid the model is trained on and the grid the station slices frames with.
    from yolodefect.data.convert import ConvertOptions
    from yolodefect.errors import UsageError
    from yolodefect.stream.options import WatchOptions

    with pytest.raises(UsageError) as convert_error:
        ConvertOptions(tile=tile, overlap=overlap)
    with pytest.raises(UsageError) as watch_error:
        WatchOptions(source="frames", tile=tile, tile_overlap=overlap)
    assert str(convert_error.value).split(":", 1)[1] == str(watch_error.value).split(":", 1)[1]
