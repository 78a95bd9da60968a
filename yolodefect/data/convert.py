"""``yolodefect convert``: any supported source -> a clean, split, Ultralytics-ready YOLO dataset."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from yolodefect import __version__
from yolodefect.data.classes import ClassMap, build_class_map
from yolodefect.data.formats import FORMAT_NAMES, read_source
from yolodefect.data.formats.base import BadFilePolicy, ReadOptions
from yolodefect.data.image_file import verify_image_bytes
from yolodefect.data.records import SPLITS, Box, ImageRecord, Note, SourceDataset
from yolodefect.data.split import SplitItem, assign_splits, parse_fractions
from yolodefect.data.staging import sigterm_as_interrupt, staged_output
from yolodefect.data.tiling import boxes_in_window, tile_windows
from yolodefect.data.writer import (
    OutputImage,
    Transfer,
    check_output_folder,
    prepare_split_folders,
    write_data_yaml,
    write_item,
)
from yolodefect.errors import FormatError, UsageError
from yolodefect.inference.tiles import check_tile_grid
from yolodefect.option_checks import choice, fraction, optional_bool, whole_number
from yolodefect.progress import ProgressCallback, no_progress

GENERATED = "synthetic"  # the format of records a generator made in memory (``build_dataset`` only, never read)


@dataclass(frozen=True)
class ConvertOptions:
    format: str = "auto"
    split: str = "0.8,0.1,0.1"
    keep_split: bool | None = None  # None: keep it when every source image has one
    seed: int = 0
    classes: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    transfer: Transfer = "link"
    tile: int | None = None
    overlap: float = 0.2
    min_visibility: float = 0.5
    background_tiles: float = 0.2
    skip_bad: bool = False
    force: bool = False
    include_templates: bool = False
    mask_min_area: int = 1
    mask_threshold: int = 127

    def __post_init__(self) -> None:
        """Refuse a bad value when the options are built, naming the CLI flag."""
        choice("--format", self.format, (*FORMAT_NAMES, GENERATED))
        parse_fractions(self.split)
        optional_bool("--keep-split", self.keep_split)
        whole_number("--seed", self.seed, 0)
        for name in ("classes", "drop"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(item, str) for item in value):
                raise UsageError(f"--{name} must be a tuple of strings, got {value!r}")
        choice("--copy/--link", self.transfer, ("link", "copy"))
        check_tile_grid(self.tile, self.overlap)  # the one rule watch --tile applies too
        fraction("--min-visibility", self.min_visibility)
        fraction("--background-tiles", self.background_tiles)
        whole_number("--min-area", self.mask_min_area, 0)
        whole_number("--mask-threshold", self.mask_threshold, 0)
        if self.mask_threshold > 255:
            raise UsageError(f"--mask-threshold is a grey level in 0..255, got {self.mask_threshold}")


@dataclass
class SplitSummary:
    images: int = 0
    boxes: int = 0
    backgrounds: int = 0
    boxes_per_class: dict[str, int] = field(default_factory=dict)


@dataclass
class ConversionResult:
    source: str
    out: str
    format: str
    format_detected: bool
    split_mode: str
    class_names: list[str]
    class_mapping: dict[str, str | None]
    images_read: int
    boxes_read: int
    splits: dict[str, SplitSummary]
    skipped: list[Note]
    warnings: list[Note]
    duplicates: list[Note]
    options: dict
    seconds: float
    yolodefect_version: str = __version__

    @property
    def images_written(self) -> int:
        return sum(s.images for s in self.splits.values())

    @property
    def boxes_written(self) -> int:
        return sum(s.boxes for s in self.splits.values())

    @property
    def warning_counts(self) -> dict[str, int]:
        """How many warnings of each counted kind ("clipped_boxes", "blank_masks"...), by kind."""
        return dict(sorted(Counter(note.kind for note in self.warnings if note.kind).items()))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["images_written"] = self.images_written
        data["boxes_written"] = self.boxes_written
        data["warning_counts"] = self.warning_counts
        return data


@dataclass(frozen=True)
class ImageFacts:
    sha1: str
    size_wh: tuple[int, int]
    needs_reorientation: bool
    jpeg_trailing_bytes: int = 0  # bytes after the JPEG's end-of-image marker, left out when written
    jpeg_trailer_words: str = ""  # those bytes in words ("300 NUL bytes")


def inspect_image(path: Path) -> ImageFacts:
    """Content hash, displayed size and EXIF orientation; truncated or unreadable images raise.

    Truncated JPEGs are refused rather than repaired: Ultralytics "repairs" them by re-saving the
    file, grey where data is missing, and some versions write that through a link into the user's
    source dataset. The verdict is :func:`~yolodefect.data.image_file.verify_image_bytes`, the one
    ``check`` gives too.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise FormatError(path, f"cannot read image: {error.strerror}") from None
    try:
        facts = verify_image_bytes(path, data)
    except FormatError as error:
        raise FormatError(path, f"{error.detail}: re-export it or pass --skip-bad") from None
    return ImageFacts(hashlib.sha1(data).hexdigest(), facts.size_wh, facts.needs_reorientation,
                      facts.jpeg_trailing_bytes, facts.jpeg_trailer_words)


# Corners up to half a pixel outside the image are exporter rounding (COCO floats, polygon points
# on the edge): clipped without a warning, which would flood a large dataset and hide real ones.
BORDER_TOLERANCE_PX = 0.5


def clean_boxes(record: ImageRecord, size_wh: tuple[int, int], class_map: ClassMap,
                 policy: BadFilePolicy) -> tuple[Box, ...]:
    """The record's boxes in output classes, inside the image; every box changed or dropped is a counted warning."""
    width, height = size_wh
    where = record.annotation_path or record.image_path
    kept: list[Box] = []
    seen: set[tuple[str, tuple]] = set()
    for box in record.boxes:
        target = class_map(box.class_name)
        if target is None:
            continue
        described = _describe_box(record, box)
        if (target, box.xyxy) in seen:
            policy.warn(where, f"{described} is listed twice: kept once", kind="repeated_boxes")
            continue
        seen.add((target, box.xyxy))
        x0, y0, x1, y1 = box.xyxy
        clipped = (min(max(x0, 0.0), width), min(max(y0, 0.0), height),
                   min(max(x1, 0.0), width), min(max(y1, 0.0), height))
        if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
            policy.warn(where, f"{described} has no area inside the {width}x{height} image: dropped",
                        kind="empty_boxes")
            continue
        if max(abs(given - inside) for given, inside in zip(box.xyxy, clipped)) > BORDER_TOLERANCE_PX:
            policy.warn(where, f"{described} crosses the border of the {width}x{height} image: "
                               f"clipped to {_format_xyxy(clipped)}", kind="clipped_boxes")
        kept.append(Box(target, clipped))
    return tuple(kept)


def _describe_box(record: ImageRecord, box: Box) -> str:
    """"box scratch (x0, y0, x1, y1)", naming the image when the annotation file labels several (COCO)."""
    text = f"box {box.class_name} {_format_xyxy(box.xyxy)}"
    if record.annotation_path is not None and record.annotation_path.stem != record.image_path.stem:
        text += f" of {record.image_path.name}"
    return text


def _format_xyxy(xyxy: Sequence[float]) -> str:
    return "(" + ", ".join(f"{value:g}" for value in xyxy) + ")"


def _unique_names(records: Sequence[ImageRecord]) -> list[str]:
    """Output file names: the source file name, prefixed by its folders only on a clash."""
    names = [r.image_path.name for r in records]
    clashes = {n for n, count in Counter(names).items() if count > 1}
    unique = []
    seen: set[str] = set()
    for record, name in zip(records, names):
        if name in clashes:
            name = "__".join(record.image_path.parts[-3:])
        base, suffix, index = Path(name).stem, Path(name).suffix, 1
        while name in seen:
            name, index = f"{base}_{index}{suffix}", index + 1
        seen.add(name)
        unique.append(name)
    return unique


def _decide_split_mode(source: SourceDataset, keep_split: bool | None) -> bool:
    if keep_split is None:
        return bool(source.records) and all(r.split for r in source.records)
    if keep_split and not source.has_source_split:
        raise UsageError(f"--keep-split: this {source.format} source defines no split; drop the flag for a seeded split")
    return keep_split


def _carve_val_from_train(splits: list[str], items: list[SplitItem], fractions: dict[str, float], seed: int) -> list[str]:
    """A kept source split without val (DeepPCB's trainval/test): take val out of train, stratified."""
    train_idx = [i for i, s in enumerate(splits) if s == "train"]
    share = fractions.get("val", 0.1) / (fractions.get("train", 0.8) + fractions.get("val", 0.1))
    inner = assign_splits([items[i] for i in train_idx], {"train": 1 - share, "val": share},
                          seed=seed, keep_source_split=False)
    for index, split in zip(train_idx, inner.splits):
        splits[index] = split
    return splits


def _plan_outputs(records, facts, boxes, splits, names, options: ConvertOptions) -> list[OutputImage]:
    if options.tile is None:
        return [OutputImage(r.image_path, s, n, b, f.size_wh, None, f.needs_reorientation, f.jpeg_trailing_bytes)
                for r, f, b, s, n in zip(records, facts, boxes, splits, names)]
    rng = np.random.default_rng(options.seed)
    planned = []
    for record, fact, record_boxes, split, name in zip(records, facts, boxes, splits, names):
        windows = tile_windows(*fact.size_wh, tile=options.tile, overlap=options.overlap)
        tiles = []
        for window in windows:
            tile_boxes = tuple(boxes_in_window(list(record_boxes), window, min_visibility=options.min_visibility))
            tile_name = f"{Path(name).stem}_x{window.x0}_y{window.y0}{Path(name).suffix}"
            tiles.append(OutputImage(record.image_path, split, tile_name, tile_boxes,
                                     (window.x1 - window.x0, window.y1 - window.y0), window))
        empty = [t for t in tiles if not t.boxes]
        kept_empty = [t for t in empty if rng.random() < options.background_tiles]
        if not record_boxes and not kept_empty and empty:
            kept_empty = [empty[int(rng.integers(len(empty)))]]  # a defect-free image keeps at least one tile
        planned += [t for t in tiles if t.boxes] + kept_empty
    return planned


def _summarise(outputs: Sequence[OutputImage]) -> dict[str, SplitSummary]:
    summaries: dict[str, SplitSummary] = {}
    for split in SPLITS:
        items = [o for o in outputs if o.split == split]
        if not items:
            continue
        per_class = Counter(box.class_name for o in items for box in o.boxes)
        summaries[split] = SplitSummary(len(items), sum(len(o.boxes) for o in items),
                                        sum(1 for o in items if not o.boxes), dict(sorted(per_class.items())))
    return summaries


@sigterm_as_interrupt()
def convert(src: Path, out: Path, options: ConvertOptions = ConvertOptions(),
            progress: ProgressCallback | None = None) -> ConversionResult:
    """Read ``src`` in ``options.format``, clean and split it, and write a YOLO dataset to ``out``.

    ``src`` is never modified; ``out`` appears complete or not at all, also when the run is stopped
    by Ctrl-C or SIGTERM (which raises :class:`~yolodefect.data.staging.Terminated`).
    """
    started = time.perf_counter()
    src, out = Path(src), Path(out)
    check_output_folder(out, force=options.force, sources=[src])
    read_options = ReadOptions(options.skip_bad, options.mask_min_area, options.mask_threshold, options.include_templates)
    source = read_source(src, options.format, read_options)
    return build_dataset(source, out, options, progress, source_label=str(src), started=started)


@sigterm_as_interrupt()
def build_dataset(source: SourceDataset, out: Path, options: ConvertOptions, progress: ProgressCallback | None = None,
                  *, source_label: str, started: float | None = None) -> ConversionResult:
    """Clean, split and write records already read (by a format reader or the synthetic generator)."""
    started = time.perf_counter() if started is None else started
    fractions = parse_fractions(options.split)
    check_output_folder(out, force=options.force)
    report = progress or no_progress
    class_map = build_class_map(source.class_names, options.classes, options.drop)

    policy = BadFilePolicy(options.skip_bad, list(source.skipped), list(source.warnings))
    records, facts = _inspect_all(source.records, policy, report)
    boxes = []
    for record, fact in zip(records, facts):
        if record.declared_size_wh and tuple(record.declared_size_wh) != fact.size_wh:
            policy.warn(record.annotation_path or record.image_path,
                        f"annotation says {record.declared_size_wh[0]}x{record.declared_size_wh[1]} but the image is "
                        f"{fact.size_wh[0]}x{fact.size_wh[1]}: using the image's size", kind="size_mismatches")
        if fact.jpeg_trailing_bytes:
            policy.warn(record.image_path, f"JPEG ends with {fact.jpeg_trailer_words} after its end-of-image "
                        "marker: the image is complete, written as a copy without them", kind="jpeg_trailing_bytes")
        boxes.append(clean_boxes(record, fact.size_wh, class_map, policy))

    keep = _decide_split_mode(source, options.keep_split)
    items = [SplitItem(f.sha1, frozenset(b.class_name for b in bx), r.split, str(r.image_path))
             for r, f, bx in zip(records, facts, boxes)]
    split_result = assign_splits(items, fractions, seed=options.seed, keep_source_split=keep)
    splits = split_result.splits
    split_mode = "source" if keep else f"seeded {options.split} (seed {options.seed}, stratified by class)"
    if keep and "val" not in splits:
        splits = _carve_val_from_train(splits, items, fractions, options.seed)
        split_mode = "source, val taken from train (seeded, stratified)"

    outputs = _plan_outputs(records, facts, boxes, splits, _unique_names(records), options)
    class_ids = {name: index for index, name in enumerate(class_map.output_names)}
    present = [s for s in SPLITS if any(o.split == s for o in outputs)]
    with staged_output(out) as staging:
        prepare_split_folders(staging, present)
        for done, item in enumerate(outputs, start=1):
            write_item(staging, item, class_ids, options.transfer)
            if done % 50 == 0 or done == len(outputs):
                report("write", done, len(outputs))
        write_data_yaml(staging, class_map.output_names, present)
        result = ConversionResult(
            source=source_label, out=str(out), format=source.format, format_detected=options.format == "auto",
            split_mode=split_mode, class_names=class_map.output_names, class_mapping=class_map.mapping,
            images_read=len(source.records), boxes_read=source.box_count, splits=_summarise(outputs),
            skipped=policy.skipped, warnings=policy.warnings, duplicates=split_result.notes,
            options=asdict(options), seconds=round(time.perf_counter() - started, 3),
        )
        (staging / "conversion.json").write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return result


def _inspect_all(records: list[ImageRecord], policy: BadFilePolicy,
                 report: ProgressCallback) -> tuple[list[ImageRecord], list[ImageFacts]]:
    def attempt(record: ImageRecord) -> ImageFacts | FormatError:
        try:
            return inspect_image(record.image_path)
        except FormatError as error:
            return error

    kept_records, kept_facts = [], []
    pool = ThreadPoolExecutor(max_workers=8)
    try:
        for done, (record, outcome) in enumerate(zip(records, pool.map(attempt, records)), start=1):
            if isinstance(outcome, FormatError):
                policy.bad(outcome.path, outcome.detail)
            else:
                kept_records.append(record)
                kept_facts.append(outcome)
            if done % 100 == 0 or done == len(records):
                report("inspect", done, len(records))
    finally:
        # On an error or Ctrl-C/SIGTERM, stop now rather than after inspecting every remaining image.
        pool.shutdown(wait=True, cancel_futures=True)
    return kept_records, kept_facts
