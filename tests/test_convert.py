"""The conversion pipeline after reading: cleaning, splitting, tiling and the atomic writer."""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from yolodefect.data.classes import build_class_map
from yolodefect.data.convert import ConvertOptions, build_dataset, inspect_image
from yolodefect.data.records import Box, ImageRecord, SourceDataset
from yolodefect.data.split import SplitItem, assign_splits, parse_fractions
from yolodefect.data.tiling import TileWindow, boxes_in_window, tile_windows
from yolodefect.errors import FormatError, UsageError


def write_image(path: Path, size_wh=(100, 80), value: int | None = None, mode="L", seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size_wh
    shape = (h, w) if mode == "L" else (h, w, 3)
    pixels = np.full(shape, value, np.uint8) if value is not None else rng.integers(0, 255, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode=mode).save(path)
    return path


def make_source(tmp_path: Path, n_per_class=10, n_background=5, classes=("scratch", "pit")) -> SourceDataset:
    records = []
    seed = 0
    for name in classes:
        for i in range(n_per_class):
            seed += 1
            image = write_image(tmp_path / "src" / f"{name}_{i}.png", seed=seed)
            records.append(ImageRecord(image, [Box(name, (10, 20, 30, 50))]))
    for i in range(n_background):
        seed += 1
        records.append(ImageRecord(write_image(tmp_path / "src" / f"good_{i}.png", seed=seed)))
    return SourceDataset("test", records, list(classes))


def read_labels(out: Path) -> dict[str, list[str]]:
    return {p.stem: p.read_text().splitlines() for p in out.glob("labels/*/*.txt")}


def test_writes_exact_labels_data_yaml_and_report(tmp_path):
    image = write_image(tmp_path / "src" / "a.png", size_wh=(200, 100))
    background = write_image(tmp_path / "src" / "b.png", size_wh=(200, 100), seed=3)
    source = SourceDataset("test", [ImageRecord(image, [Box("pit", (20, 10, 60, 50))]), ImageRecord(background)] * 1,
                           ["pit"])
    # Enough images for three splits: repeat with distinct pixels.
    for i in range(8):
        source.records.append(ImageRecord(write_image(tmp_path / "src" / f"c{i}.png", size_wh=(200, 100), seed=10 + i),
                                          [Box("pit", (0, 0, 100, 50))]))
    out = tmp_path / "out"
    result = build_dataset(source, out, ConvertOptions(), source_label="mem")

    labels = read_labels(out)
    assert labels["a"] == ["0 0.200000 0.300000 0.200000 0.400000"]
    assert labels["b"] == []  # a defect-free image keeps an empty label file
    assert labels["c0"] == ["0 0.250000 0.250000 0.500000 0.500000"]
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "pit"} and data["nc"] == 1
    assert "path" not in data and not any(str(tmp_path) in str(v) for v in data.values())
    report = json.loads((out / "conversion.json").read_text())
    assert report["images_written"] == 10 and report["boxes_written"] == 9
    assert result.images_written == 10
    assert not list(tmp_path.glob(".out.*")), "the staging folder must be gone"


def test_links_are_relative_and_survive_moving_both_folders(tmp_path):
    source = make_source(tmp_path / "project")
    build_dataset(source, tmp_path / "project" / "out", ConvertOptions(), source_label="mem")
    link = next((tmp_path / "project" / "out" / "images").rglob("*.png"))
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    (tmp_path / "project").rename(tmp_path / "moved")
    assert next((tmp_path / "moved" / "out" / "images").rglob("*.png")).read_bytes()


def test_copy_keeps_grayscale_and_applies_exif_orientation(tmp_path):
    path = tmp_path / "src" / "rotated.jpg"
    path.parent.mkdir()
    image = Image.fromarray(np.zeros((40, 100), np.uint8), mode="L")
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: 40 wide, 100 high
    image.save(path, exif=exif)
    records = [ImageRecord(path, [Box("pit", (5, 5, 20, 30))])]
    records += [ImageRecord(write_image(tmp_path / "src" / f"g{i}.png", seed=i), [Box("pit", (1, 1, 9, 9))]) for i in range(9)]
    out = tmp_path / "out"
    build_dataset(SourceDataset("t", records, ["pit"]), out, ConvertOptions(transfer="copy"), source_label="mem")
    written = next(out.glob("images/*/rotated.jpg"))
    with Image.open(written) as copied:
        assert copied.mode == "L"
        assert copied.size == (40, 100)
    assert inspect_image(path).size_wh == (40, 100)


def test_identical_images_never_land_in_two_splits(tmp_path):
    records = []
    for i in range(40):
        # every image exists three times under different names: same bytes
        seed = i
        for copy in range(3):
            path = write_image(tmp_path / "src" / f"img{i}_{copy}.png", seed=seed)
            records.append(ImageRecord(path, [Box("pit" if i % 2 else "scratch", (1, 1, 20, 20))]))
    out = tmp_path / "out"
    result = build_dataset(SourceDataset("t", records, ["pit", "scratch"]), out, ConvertOptions(), source_label="mem")
    splits_of_hash = defaultdict(set)
    for image in out.glob("images/*/*.png"):
        splits_of_hash[hashlib.sha1(image.read_bytes()).hexdigest()].add(image.parent.name)
    assert len(splits_of_hash) == 40
    assert all(len(splits) == 1 for splits in splits_of_hash.values())
    assert len(result.duplicates) == 40


def test_split_is_stratified_seeded_and_keeps_every_class_everywhere():
    rng = np.random.default_rng(1)
    items = []
    for i in range(300):
        classes = {"common"} if i < 250 else {"rare"} if i < 262 else set()
        if i % 7 == 0:
            classes.add("medium")
        items.append(SplitItem(f"h{i}", frozenset(classes), None, f"i{i}"))
    rng.shuffle(items)
    fractions = parse_fractions("0.8,0.1,0.1")
    first = assign_splits(items, fractions, seed=0, keep_source_split=False).splits
    again = assign_splits(items, fractions, seed=0, keep_source_split=False).splits
    other = assign_splits(items, fractions, seed=1, keep_source_split=False).splits
    assert first == again and first != other
    for cls in ("common", "rare", "medium", None):
        for split in ("train", "val", "test"):
            assert any((cls in item.class_names if cls else not item.class_names) and s == split
                       for item, s in zip(items, first)), (cls, split)
    counts = {s: first.count(s) for s in ("train", "val", "test")}
    assert abs(counts["train"] - 240) <= 6 and abs(counts["val"] - 30) <= 6


def test_keep_source_split_moves_cross_split_duplicates_to_train():
    items = [SplitItem("same", frozenset({"a"}), "val", "x"), SplitItem("same", frozenset({"a"}), "test", "y"),
             SplitItem("other", frozenset({"a"}), "test", "z")]
    result = assign_splits(items, {"train": .8, "val": .1, "test": .1}, seed=0, keep_source_split=True)
    assert result.splits == ["train", "train", "test"]
    assert "leakage" in result.notes[-1].message


@pytest.mark.parametrize("text", ["0.8,0.3", "a,b", "1", "0,0.5,0.5", "0.5,0.6,-0.1"])
def test_bad_split_fractions_are_usage_errors(text):
    with pytest.raises(UsageError, match="--split"):
        parse_fractions(text)


def test_boxes_are_clipped_and_empty_ones_dropped_with_a_warning(tmp_path):
    image = write_image(tmp_path / "a.png", size_wh=(100, 80))
    records = [ImageRecord(image, [Box("pit", (-10, 70, 50, 95)), Box("pit", (120, 10, 130, 20))],
                           declared_size_wh=(50, 50), annotation_path=tmp_path / "a.xml")]
    records += [ImageRecord(write_image(tmp_path / f"g{i}.png", seed=i + 5), [Box("pit", (1, 1, 9, 9))]) for i in range(9)]
    out = tmp_path / "out"
    result = build_dataset(SourceDataset("t", records, ["pit"]), out, ConvertOptions(), source_label="mem")
    assert read_labels(out)["a"] == ["0 0.250000 0.937500 0.500000 0.125000"]
    messages = " ".join(note.message for note in result.warnings)
    assert "no area inside the 100x80 image" in messages
    assert "annotation says 50x50 but the image is 100x80" in messages


def test_truncated_jpeg_is_an_error_naming_the_file_or_skipped(tmp_path):
    good = make_source(tmp_path)
    bad = tmp_path / "src" / "broken.jpg"
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:-20])
    good.records.append(ImageRecord(bad, [Box("pit", (1, 1, 5, 5))]))
    with pytest.raises(FormatError, match="broken.jpg.*truncated"):
        build_dataset(good, tmp_path / "out", ConvertOptions(), source_label="mem")
    assert not (tmp_path / "out").exists(), "a failed conversion leaves nothing behind"
    result = build_dataset(good, tmp_path / "out", ConvertOptions(skip_bad=True), source_label="mem")
    assert [Path(n.path).name for n in result.skipped] == ["broken.jpg"]
    assert result.images_written == len(good.records) - 1


def test_refuses_non_empty_output_unless_forced_and_never_overlaps_source(tmp_path):
    source = make_source(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("user data")
    with pytest.raises(UsageError, match="not empty"):
        build_dataset(source, out, ConvertOptions(), source_label="mem")
    assert (out / "precious.txt").read_text() == "user data"
    build_dataset(source, out, ConvertOptions(force=True), source_label="mem")
    assert not (out / "precious.txt").exists() and (out / "data.yaml").exists()

    from yolodefect.data.convert import convert
    with pytest.raises(UsageError, match="overlaps the source"):
        convert(tmp_path / "src", tmp_path / "src" / "yolo", ConvertOptions(format="voc"))


def test_class_map_renames_merges_drops_in_stable_order():
    class_map = build_class_map(["crack", "scratch", "scuff", "dust"], ["scratch,scuff=surface; crack=crack_line"], ["dust"])
    assert class_map.output_names == ["crack_line", "surface"]
    assert class_map("scuff") == "surface" and class_map("dust") is None
    with pytest.raises(UsageError, match="did you mean 'scratch'"):
        build_class_map(["scratch"], ["scrach=x"])
    with pytest.raises(UsageError, match="every class was dropped"):
        build_class_map(["a"], [], ["a"])


def test_dropped_class_leaves_image_as_background(tmp_path):
    source = make_source(tmp_path)
    out = tmp_path / "out"
    result = build_dataset(source, out, replace(ConvertOptions(), drop=("pit",)), source_label="mem")
    assert result.class_names == ["scratch"]
    labels = read_labels(out)
    assert labels["pit_0"] == [] and labels["scratch_0"] == ["0 0.200000 0.437500 0.200000 0.375000"]


def test_tile_windows_cover_the_image_and_end_at_the_border():
    windows = tile_windows(1000, 600, tile=512, overlap=0.25)
    assert {(w.x0, w.y0) for w in windows} == {(0, 0), (384, 0), (488, 0), (0, 88), (384, 88), (488, 88)}
    assert all(w.x1 - w.x0 == 512 and w.y1 - w.y0 == 512 for w in windows)
    assert tile_windows(300, 200, tile=512, overlap=0.2) == [TileWindow(0, 0, 300, 200)]


def test_boxes_in_window_clips_and_applies_min_visibility():
    window = TileWindow(100, 100, 200, 200)
    boxes = [Box("a", (150, 150, 170, 170)), Box("b", (190, 150, 230, 170)), Box("c", (180, 150, 205, 170))]
    kept = boxes_in_window(boxes, window, min_visibility=0.5)
    assert kept == [Box("a", (50, 50, 70, 70)), Box("c", (80, 50, 100, 70))]


def test_tiled_conversion_writes_tiles_with_their_boxes(tmp_path):
    records = []
    for i in range(10):
        image = write_image(tmp_path / "src" / f"big{i}.png", size_wh=(256, 128), seed=i)
        records.append(ImageRecord(image, [Box("pit", (10, 10, 40, 40))]))
    out = tmp_path / "out"
    result = build_dataset(SourceDataset("t", records, ["pit"]), out,
                           ConvertOptions(tile=128, overlap=0.0, background_tiles=1.0), source_label="mem")
    assert result.images_written == 20  # two tiles per image, the empty ones kept at ratio 1.0
    labels = read_labels(out)
    assert labels["big0_x0_y0"] == ["0 0.195312 0.195312 0.234375 0.234375"]
    assert labels["big0_x128_y0"] == []
    with Image.open(next(out.glob("images/*/big0_x128_y0.png"))) as tile:
        assert tile.size == (128, 128)


def test_a_box_listed_twice_is_written_once_with_a_warning(tmp_path):
    records = [ImageRecord(write_image(tmp_path / f"g{i}.png", seed=i), [Box("pit", (1, 1, 9, 9)), Box("pit", (1, 1, 9, 9))])
               for i in range(10)]
    out = tmp_path / "out"
    result = build_dataset(SourceDataset("t", records, ["pit"]), out, ConvertOptions(), source_label="mem")
    assert result.boxes_written == 10
    assert all(len(lines) == 1 for lines in read_labels(out).values())
    assert sum("listed twice" in note.message for note in result.warnings) == 10
