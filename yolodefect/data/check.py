"""Validate a YOLO dataset before training: what Ultralytics would reject, and what would quietly hurt.

The label and image rules follow ``ultralytics.data.utils.verify_image_label`` / ``check_image``
(1 % coordinate tolerance, integer class ids below the class count, images of at least 10 px,
JPEGs ending in the end-of-image marker), without importing Ultralytics, which is slow to import.

Levels: ``error`` is something Ultralytics rejects or silently drops, or that makes the metrics
wrong (leakage between splits, a class with nothing to learn from); ``warning`` is something
that still trains but is probably a mistake.

imgsz rule (:func:`suggest_imgsz`): let ``f`` be the ``small_box_fraction`` quantile (10th
percentile by default) of box side ``sqrt(w*h)`` divided by the image's long side, since
Ultralytics scales the long side to ``imgsz``. The suggestion is the smallest of 320..1280
(step 32) at which ``f * imgsz >= min_box_px`` (12 px by default, about where a stride-8 head
starts to see an object), capped at the median native long side rounded up to a multiple of 32,
because scaling beyond native size adds no detail. When even the cap leaves those boxes under
``min_box_px``, the report suggests tiles (``convert --tile``) small enough that training them
at the suggested imgsz magnifies the boxes to ``min_box_px``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from yolodefect.data.image_file import TRUNCATED_JPEG, verify_image_bytes
from yolodefect.data.yolo_dataset import DataConfig, label_path_for, load_data_config
from yolodefect.errors import FormatError, UsageError

logger = logging.getLogger(__name__)

Level = Literal["error", "warning"]
ERROR: Level = "error"
WARNING: Level = "warning"

COORD_TOLERANCE = 0.01  # Ultralytics accepts coordinates up to 1.01 and down to -0.01
MIN_IMAGE_SIDE = 10  # Ultralytics rejects smaller images as corrupt
DEFAULT_SMALL_BOX_FRACTION = 0.1
DEFAULT_MIN_BOX_PX = 12.0
DEFAULT_IMGSZ = 640  # what Ultralytics trains at when no imgsz is given
STRIDE = 32  # Ultralytics rounds imgsz up to a multiple of the largest stride
IMGSZ_CANDIDATES = tuple(range(320, 1280 + 1, STRIDE))
QUANTILES = (
    ("min", 0.0), ("p10", 0.1), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p90", 0.9), ("max", 1.0),
)


@dataclass(frozen=True)
class Problem:
    """One thing to fix: its level, the file (or folder) it is about and, for label rows, the line."""

    level: Level
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{self.level}: {where}: {self.message}"


@dataclass
class SplitStats:
    """Counts for one split. ``instances`` counts label rows that pass every check."""

    images: int = 0
    instances: int = 0
    background_images: int = 0  # no label file, or an empty one
    unlabelled_images: int = 0  # no label file at all (a subset of the background images)
    class_instances: dict[str, int] = field(default_factory=dict)

    @property
    def background_share(self) -> float:
        return self.background_images / self.images if self.images else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "background_share": self.background_share}


@dataclass(frozen=True)
class BoxSizes:
    """Quantiles of box side ``sqrt(w*h)``: normalised (fraction of the image) and in native pixels."""

    count: int
    relative_side: dict[str, float]
    pixel_side: dict[str, float]
    native_long_side: int  # median long side of the images, pixels


@dataclass(frozen=True)
class ImgszAdvice:
    """The suggested training imgsz and, when boxes stay tiny, a tile size. See the module doc."""

    suggested_imgsz: int
    quantile: float
    min_box_px: float
    box_px_at_suggested: float  # the quantile box side once images are scaled to suggested_imgsz
    box_px_at_default: float  # the same at Ultralytics' default imgsz 640
    small_objects: bool  # box_px_at_suggested < min_box_px: tiling (or upscaling) is needed
    tile: int | None = None  # source pixels per tile for `convert --tile`, when small_objects
    upscale_imgsz: int | None = None  # the imgsz that would upscale boxes to min_box_px, if <= 1280


@dataclass
class CheckReport:
    """Everything ``check`` found about one dataset."""

    data: str
    class_names: list[str]
    splits: dict[str, SplitStats]
    imbalance_ratio: float | None  # max/min train instances per class; inf when a class has none
    box_sizes: BoxSizes | None
    imgsz: ImgszAdvice | None
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.level == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.level == WARNING]

    @property
    def has_errors(self) -> bool:
        return any(problem.level == ERROR for problem in self.problems)

    @property
    def background_share(self) -> float:
        images = sum(stats.images for stats in self.splits.values())
        background = sum(stats.background_images for stats in self.splits.values())
        return background / images if images else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only; infinities become None (JSON has no inf)."""
        return _finite(
            {
                "data": self.data,
                "class_names": list(self.class_names),
                "splits": {name: stats.to_dict() for name, stats in self.splits.items()},
                "imbalance_ratio": self.imbalance_ratio,
                "background_share": self.background_share,
                "box_sizes": asdict(self.box_sizes) if self.box_sizes else None,
                "imgsz": asdict(self.imgsz) if self.imgsz else None,
                "errors": len(self.errors),
                "warnings": len(self.warnings),
                "problems": [asdict(problem) for problem in self.problems],
            }
        )


@dataclass(frozen=True)
class _Row:
    """A label row that passed every check, reduced to what the statistics need."""

    class_id: int
    wh_n: tuple[float, float]  # normalised box width and height


@dataclass(frozen=True)
class _ImageScan:
    path: Path
    sha1: str | None
    size_wh: tuple[int, int] | None
    has_label_file: bool
    label_lines: int
    rows: tuple[_Row, ...]
    problems: tuple[Problem, ...]


def check_dataset(
    data: Path | str,
    *,
    small_box_fraction: float = DEFAULT_SMALL_BOX_FRACTION,
    min_box_px: float = DEFAULT_MIN_BOX_PX,
) -> CheckReport:
    """Check a YOLO dataset (data.yaml, or a folder with one or with images/<split>)."""
    if not 0 < small_box_fraction < 1:
        raise UsageError(f"small_box_fraction {small_box_fraction}: use a fraction between 0 and 1")
    started = time.perf_counter()
    config = load_data_config(data)
    scans, unique, problems = _scan_splits(config)
    problems = _missing_split_problems(config) + problems
    problems.extend(_duplicate_problems(unique))
    splits = {split: _split_stats(split_scans, config.class_names) for split, split_scans in scans.items()}
    problems.extend(_class_presence_problems(splits, config))
    box_sizes, side_fraction, pixel_side = _box_sizes(unique)
    imgsz = None
    if box_sizes is not None:
        imgsz = suggest_imgsz(
            side_fraction,
            pixel_side,
            box_sizes.native_long_side,
            quantile=small_box_fraction,
            min_box_px=min_box_px,
        )
        problems.extend(_small_object_problems(imgsz, str(data)))
    report = CheckReport(
        data=str(data),
        class_names=list(config.class_names),
        splits=splits,
        imbalance_ratio=imbalance_ratio(splits["train"]) if "train" in splits else None,
        box_sizes=box_sizes,
        imgsz=imgsz,
        problems=problems,
    )
    logger.info(
        "checked %s in %.1f s: %d errors, %d warnings",
        data, time.perf_counter() - started, len(report.errors), len(report.warnings),
    )
    return report


def _scan_splits(
    config: DataConfig,
) -> tuple[dict[str, list[_ImageScan]], dict[str, list[_ImageScan]], list[Problem]]:
    """Scans per split, scans per distinct folder (keyed by its first split), and their problems.

    Two splits naming one folder are scanned once: one error says it all, rather than one per image.
    """
    scans: dict[str, list[_ImageScan]] = {}
    folder_owner: dict[Path, str] = {}
    problems: list[Problem] = []
    for split, folder in config.split_dirs.items():
        if folder in folder_owner:
            owner = folder_owner[folder]
            scans[split] = scans[owner]
            problems.append(_error(folder, f"the {split} split uses the same folder as {owner}: every image leaks"))
            continue
        folder_owner[folder] = split
        scans[split] = [_scan_image(path, len(config.class_names)) for path in config.images(split)]
        if not scans[split]:
            problems.append(_error(folder, f"the {split} split has no images"))
        problems.extend(problem for scan in scans[split] for problem in scan.problems)
        problems.extend(_orphan_label_problems(folder, scans[split]))
    unique = {split: scans[split] for split in folder_owner.values()}
    return scans, unique, problems


def imbalance_ratio(stats: SplitStats) -> float | None:
    """Most over fewest instances per class; inf when some class has none, None without boxes."""
    counts = list(stats.class_instances.values())
    if not counts or max(counts) == 0:
        return None
    return max(counts) / min(counts) if min(counts) else math.inf


def suggest_imgsz(
    side_fraction: np.ndarray,
    pixel_side: np.ndarray,
    native_long_side: int,
    *,
    quantile: float = DEFAULT_SMALL_BOX_FRACTION,
    min_box_px: float = DEFAULT_MIN_BOX_PX,
) -> ImgszAdvice:
    """The imgsz rule of the module doc. ``side_fraction`` is box side over image long side,
    ``pixel_side`` the box side in native pixels, one entry per box (not empty)."""
    fraction = float(np.quantile(side_fraction, quantile))
    cap = min(IMGSZ_CANDIDATES[-1], _round_up(native_long_side))
    candidates = [size for size in IMGSZ_CANDIDATES if size <= cap] or [cap]
    suggested = next((size for size in candidates if fraction * size >= min_box_px), candidates[-1])
    small = fraction * suggested < min_box_px
    tile = upscale = None
    if small:
        # Tiles of `tile` source pixels trained at `suggested` magnify boxes by suggested / tile.
        native_px = float(np.quantile(pixel_side, quantile))
        tile = max(STRIDE, int(suggested * native_px / min_box_px) // STRIDE * STRIDE)
        needed = _round_up(min_box_px / fraction) if fraction > 0 else math.inf
        upscale = int(needed) if needed <= IMGSZ_CANDIDATES[-1] else None
    return ImgszAdvice(
        suggested_imgsz=suggested,
        quantile=quantile,
        min_box_px=min_box_px,
        box_px_at_suggested=fraction * suggested,
        box_px_at_default=fraction * DEFAULT_IMGSZ,
        small_objects=small,
        tile=tile,
        upscale_imgsz=upscale,
    )


# --- one image and its label file -------------------------------------------------------------


def _scan_image(image_path: Path, class_count: int) -> _ImageScan:
    problems: list[Problem] = []
    try:
        content = image_path.read_bytes()  # read once: hashed and verified from memory
    except OSError as error:
        content = None
        problems.append(_error(image_path, f"cannot read image: {error}"))
    sha1 = hashlib.sha1(content).hexdigest() if content is not None else None
    size_wh = None
    if content is not None:
        size_wh, image_problems = _verify_image(image_path, content)
        problems.extend(image_problems)
    label_path = label_path_for(image_path)
    has_label_file = label_path.is_file()
    label_lines, rows = 0, []
    if has_label_file:
        label_lines, rows, label_problems = _scan_label(label_path, class_count)
        problems.extend(label_problems)
    else:
        problems.append(
            _warning(
                image_path,
                f"unlabelled: no label file {label_path.name}; Ultralytics trains it as background "
                "(write an empty file if it is defect-free)",
            )
        )
    return _ImageScan(image_path, sha1, size_wh, has_label_file, label_lines, tuple(rows), tuple(problems))


def _verify_image(image_path: Path, content: bytes) -> tuple[tuple[int, int] | None, list[Problem]]:
    """Displayed size (EXIF orientation applied) and what Ultralytics' check_image would reject.

    Whole or not is :func:`~yolodefect.data.image_file.verify_image_bytes`, the verdict ``convert`` gives.
    """
    try:
        facts = verify_image_bytes(image_path, content)
    except FormatError as error:
        consequence = (": Ultralytics would re-save it in place, grey where data is missing"
                       if error.detail == TRUNCATED_JPEG else "")
        return None, [_error(image_path, error.detail + consequence)]
    width, height = facts.size_wh
    problems = []
    if facts.jpeg_trailing_bytes:
        problems.append(
            _warning(
                image_path,
                f"JPEG ends with {facts.jpeg_trailer_words} after its end-of-image marker: the image is "
                "complete, but Ultralytics re-saves it in place when it loads it, so `yolodefect train` refuses it "
                "(`yolodefect convert` writes it without them)",
            )
        )
    if min(width, height) < MIN_IMAGE_SIDE:
        message = f"image is {width}x{height}: Ultralytics rejects images under {MIN_IMAGE_SIDE} px"
        problems.append(_error(image_path, message))
    return (width, height), problems


def _scan_label(label_path: Path, class_count: int) -> tuple[int, list[_Row], list[Problem]]:
    """(non-empty line count, valid rows, problems) of one label file."""
    try:
        text = label_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        return 0, [], [_error(label_path, f"cannot read label file: {error}")]
    lines = [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    rows: list[_Row] = []
    problems: list[Problem] = []
    kinds: set[str] = set()
    first_line_of: dict[tuple[str, ...], int] = {}
    for number, tokens in lines:
        row, kind, messages = _check_row(tokens, class_count)
        problems.extend(_error(label_path, message, line=number) for message in messages)
        if row is not None:
            rows.append(row)
        if kind:
            kinds.add(kind)
        key = tuple(tokens)
        if key in first_line_of:
            message = f"repeats line {first_line_of[key]}: Ultralytics drops the duplicate"
            problems.append(_warning(label_path, message, line=number))
        first_line_of.setdefault(key, number)
    if kinds == {"box", "polygon"}:
        message = "mixes box rows (5 numbers) and polygon rows: Ultralytics ignores every label of this file"
        problems.append(_error(label_path, message))
    return len(lines), rows, problems


def _check_row(tokens: list[str], class_count: int) -> tuple[_Row | None, str | None, list[str]]:
    """(the row when valid, its kind 'box'/'polygon' when its length fits one, problem messages)."""
    try:
        values = [float(token) for token in tokens]
    except ValueError:
        return None, None, [f"not numbers: {' '.join(tokens)!r}"]
    if not all(math.isfinite(value) for value in values):
        return None, None, [f"not finite numbers: {' '.join(tokens)!r}"]
    if len(values) == 5:
        kind = "box"
        width, height = values[3], values[4]
    elif len(values) >= 7 and len(values) % 2 == 1:
        kind = "polygon"
        xs, ys = values[1::2], values[2::2]
        width, height = max(xs) - min(xs), max(ys) - min(ys)
    else:
        return None, None, [
            f"{len(values)} numbers: expected 5 (class cx cy w h) or a class id and at least 3 x y pairs"
        ]
    messages = []
    class_value = values[0]
    if class_value != int(class_value):
        messages.append(f"class id {class_value:g} is not an integer")
    elif not 0 <= class_value < class_count:
        messages.append(
            f"class id {int(class_value)} is out of range: the dataset names {class_count} classes "
            f"(ids 0-{class_count - 1})"
        )
    outside = [value for value in values[1:] if not -COORD_TOLERANCE <= value <= 1 + COORD_TOLERANCE]
    if outside:
        listed = ", ".join(f"{value:g}" for value in outside)
        messages.append(f"coordinates outside [0, 1]: {listed} (labels must be normalised by the image size)")
    if width <= 0 or height <= 0:
        messages.append(f"zero or negative box size (w={width:g}, h={height:g})")
    if messages:
        return None, kind, messages
    return _Row(int(class_value), (width, height)), kind, []


# --- whole-dataset problems -------------------------------------------------------------------


def _missing_split_problems(config: DataConfig) -> list[Problem]:
    where = config.yaml_path or config.root
    return [
        _error(where, f"no {split} split: Ultralytics training needs both train and val")
        for split in ("train", "val")
        if split not in config.split_dirs
    ]


def _orphan_label_problems(folder: Path, scans: list[_ImageScan]) -> list[Problem]:
    label_dir = label_path_for(folder / "_.jpg").parent
    if not label_dir.is_dir():
        return []
    expected = {label_path_for(scan.path) for scan in scans}
    return [
        _warning(path, "label file without an image: it is ignored (image missing or misnamed?)")
        for path in sorted(label_dir.rglob("*.txt"))
        if path not in expected and path.name != "classes.txt"
    ]


def _duplicate_problems(scans_by_split: dict[str, list[_ImageScan]]) -> list[Problem]:
    """Same bytes twice: a warning within a split, an error across splits (metrics leak)."""
    seen: dict[str, list[tuple[str, Path]]] = {}
    problems = []
    for split, scans in scans_by_split.items():
        for scan in scans:
            if scan.sha1 is None:
                continue
            earlier = seen.setdefault(scan.sha1, [])
            other = next(((s, p) for s, p in earlier if s != split), None)
            if other is not None:
                message = f"leakage: same image as {other[1]} in {other[0]}, so {split} metrics are inflated"
                problems.append(_error(scan.path, message))
            elif earlier:
                problems.append(_warning(scan.path, f"duplicate of {earlier[0][1]} in {split}: it counts twice"))
            earlier.append((split, scan.path))
    return problems


def _class_presence_problems(splits: dict[str, SplitStats], config: DataConfig) -> list[Problem]:
    problems = []
    for split, stats in splits.items():
        if stats.images == 0:
            continue  # already reported as an empty split
        folder = config.split_dirs[split]
        for name, count in stats.class_instances.items():
            if count:
                continue
            if split == "train":
                message = f"class {name!r} has no instances in train: the model cannot learn it"
                problems.append(_error(folder, message))
            else:
                message = f"class {name!r} has no instances in {split}: it cannot be measured there"
                problems.append(_warning(folder, message))
    return problems


def _small_object_problems(advice: ImgszAdvice, where: str) -> list[Problem]:
    share = f"{advice.quantile:.0%} of boxes"
    if advice.small_objects:
        upscale = f", or upscale with imgsz {advice.upscale_imgsz}" if advice.upscale_imgsz else ""
        return [
            _warning(
                where,
                f"small objects: {share} are under {advice.box_px_at_suggested:.1f} px even at imgsz "
                f"{advice.suggested_imgsz} (native size); cut tiles with `convert --tile {advice.tile}` "
                f"and train them at imgsz {advice.suggested_imgsz}{upscale}",
            )
        ]
    if advice.box_px_at_default < advice.min_box_px:
        return [
            _warning(
                where,
                f"small objects: {share} are under {advice.box_px_at_default:.1f} px at the default imgsz "
                f"{DEFAULT_IMGSZ}; train at imgsz {advice.suggested_imgsz}",
            )
        ]
    return []


# --- statistics -------------------------------------------------------------------------------


def _split_stats(scans: list[_ImageScan], class_names: list[str]) -> SplitStats:
    per_class = Counter(row.class_id for scan in scans for row in scan.rows)
    return SplitStats(
        images=len(scans),
        instances=sum(per_class.values()),
        background_images=sum(1 for scan in scans if scan.label_lines == 0),
        unlabelled_images=sum(1 for scan in scans if not scan.has_label_file),
        class_instances={name: per_class.get(index, 0) for index, name in enumerate(class_names)},
    )


def _box_sizes(scans_by_split: dict[str, list[_ImageScan]]) -> tuple[BoxSizes | None, np.ndarray, np.ndarray]:
    """Quantiles over every box of every (distinct) split folder, plus the per-box arrays the imgsz
    rule needs: side over image long side, and side in native pixels."""
    relative, pixel, fraction, long_sides = [], [], [], []
    for scans in scans_by_split.values():
        for scan in scans:
            if scan.size_wh is None:
                continue  # unreadable images are reported; their boxes have no pixel size
            width, height = scan.size_wh
            long_sides.append(max(width, height))
            for row in scan.rows:
                w_n, h_n = row.wh_n
                side_px = math.sqrt(w_n * width * h_n * height)
                relative.append(math.sqrt(w_n * h_n))
                pixel.append(side_px)
                fraction.append(side_px / max(width, height))
    if not relative:
        return None, np.zeros(0), np.zeros(0)
    sizes = BoxSizes(
        count=len(relative),
        relative_side=_quantiles(np.array(relative)),
        pixel_side=_quantiles(np.array(pixel)),
        native_long_side=int(round(float(np.median(long_sides)))),
    )
    return sizes, np.array(fraction), np.array(pixel)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    return {name: round(float(np.quantile(values, q)), 4) for name, q in QUANTILES}


# --- small helpers ----------------------------------------------------------------------------


def _round_up(size: float) -> int:
    return int(math.ceil(size / STRIDE) * STRIDE)


def _error(path: Path | str, message: str, *, line: int | None = None) -> Problem:
    return Problem(ERROR, str(path), message, line)


def _warning(path: Path | str, message: str, *, line: int | None = None) -> Problem:
    return Problem(WARNING, str(path), message, line)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
