"""A labelled dataset from the station camera's point of view: crops of synthetic conveyor frames.

The demo model must find defects on conveyor frames (parts on a moving belt, encoded as video),
not only on the clean part images ``synth`` renders. Training on whole 640 px frames costs ~4x
the compute of square crops, so each kept frame is cropped to ``crop`` pixels at its native scale;
the station then runs the model with tiles of the same size (``watch --tile``), and the defects
are as many pixels wide in training as on the line. Train, val and test crops come from different
videos (different parts), so neighbouring frames of one part never straddle two splits.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from yolodefect.data.conveyor import ConveyorTruth, write_conveyor_video
from yolodefect.data.convert import GENERATED, ConversionResult, ConvertOptions, build_dataset
from yolodefect.data.records import Box, ImageRecord, SourceDataset
from yolodefect.data.staging import sigterm_as_interrupt
from yolodefect.data.synth import CLASS_NAMES, SYNTH_KINDS
from yolodefect.data.writer import check_output_folder
from yolodefect.errors import UsageError
from yolodefect.progress import ProgressCallback, no_progress

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class StationOptions:
    kinds: tuple[str, ...] = SYNTH_KINDS
    parts: tuple[int, int, int] = (24, 8, 0)  # conveyor parts per kind for train, val, test
    defective: float = 0.6
    balanced_classes: bool = True  # deal defect classes in shuffled rounds so short videos show every class
    seed: int = 0
    frame_size: tuple[int, int] = (640, 360)
    part_size: tuple[int, int] = (256, 192)
    crop: int = 320
    frame_step: int = 6  # keep every n-th frame (neighbours are near duplicates)
    min_visible: float = 0.5  # label a defect when at least this share of its box is in the crop
    force: bool = False


def station_class_names(kinds: tuple[str, ...]) -> list[str]:
    return [name for kind in kinds for name in CLASS_NAMES[kind]]


def _check(options: StationOptions) -> None:
    unknown = [kind for kind in options.kinds if kind not in SYNTH_KINDS]
    if unknown or not options.kinds:
        raise UsageError(f"kinds {list(options.kinds)}: choose from {', '.join(SYNTH_KINDS)}")
    if len(options.parts) != 3 or min(options.parts) < 0 or options.parts[0] < 1 or options.parts[1] < 1:
        raise UsageError(f"parts {options.parts}: need (train >= 1, val >= 1, test >= 0)")
    width, height = options.frame_size
    if not 32 <= options.crop <= min(width, height):
        raise UsageError(f"crop {options.crop} must lie in 32..{min(width, height)} for frames of {width}x{height}")
    if options.frame_step < 1 or not 0.0 < options.min_visible <= 1.0:
        raise UsageError("frame_step must be >= 1 and min_visible in (0, 1]")


def crop_boxes(truth: ConveyorTruth, frame_index: int, x0: int, y0: int, size: int,
               min_visible: float) -> list[Box]:
    """The defects of a frame that show in the square crop at (x0, y0), in crop pixels."""
    boxes = []
    for defect in truth.visible_defects(frame_index, min_visible=min_visible):
        x1, y1, x2, y2 = defect.xyxy
        cx1, cy1 = max(x1, x0), max(y1, y0)
        cx2, cy2 = min(x2, x0 + size), min(y2, y0 + size)
        full = max(x2 - x1, 1e-6) * max(y2 - y1, 1e-6)
        if max(0.0, cx2 - cx1) * max(0.0, cy2 - cy1) / full >= min_visible:
            boxes.append(Box(defect.class_name, (cx1 - x0, cy1 - y0, cx2 - x0, cy2 - y0)))
    return boxes


def _crop_left(truth: ConveyorTruth, frame_index: int, size: int, rng: np.random.Generator) -> int:
    """A crop around one of the visible parts (jittered), so belt-only crops stay a minority."""
    width = truth.frame_size[0]
    part_w = truth.part_size[0]
    visible = [part.index for part in truth.parts if part.first_frame <= frame_index <= part.last_frame]
    if not visible:
        return int(rng.integers(0, width - size + 1))
    centre = truth.part_left(int(rng.choice(visible)), frame_index) + part_w / 2
    jitter = rng.uniform(-size / 4, size / 4)
    return int(np.clip(round(centre - size / 2 + jitter), 0, width - size))


def _crops_of_video(truth: ConveyorTruth, split: str, folder: Path, options: StationOptions,
                    rng: np.random.Generator) -> list[ImageRecord]:
    width, height = truth.frame_size
    size = options.crop
    records = []
    capture = cv2.VideoCapture(str(truth.path))
    try:
        for frame_index in range(truth.frames):
            ok, frame = capture.read()
            if not ok:
                break
            if frame_index % options.frame_step:
                continue
            x0 = _crop_left(truth, frame_index, size, rng)
            y0 = int(rng.integers(0, height - size + 1))
            path = folder / f"{truth.kind}_{split}_{frame_index:05d}.png"
            cv2.imwrite(str(path), frame[y0:y0 + size, x0:x0 + size])
            boxes = crop_boxes(truth, frame_index, x0, y0, size, options.min_visible)
            records.append(ImageRecord(path, boxes, split=split))
    finally:
        capture.release()
    return records


@sigterm_as_interrupt()  # SIGTERM cleans up the render folder as Ctrl-C does
def synthesize_station(out: Path, options: StationOptions = StationOptions(),
                       progress: ProgressCallback | None = None) -> ConversionResult:
    """Render one conveyor video per kind and split, crop its frames, and write a YOLO dataset."""
    _check(options)
    out = Path(out)
    check_output_folder(out, force=options.force)
    report = progress or no_progress
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = Path(tempfile.mkdtemp(prefix=f".{out.name}.render-", dir=out.parent))
    jobs = [(k, kind, s, split) for k, kind in enumerate(options.kinds)
            for s, split in enumerate(SPLITS) if options.parts[s] > 0]
    try:
        records: list[ImageRecord] = []
        for done, (k, kind, s, split) in enumerate(jobs, start=1):
            seed = [options.seed, k, s]
            truth = write_conveyor_video(raw / f"{kind}_{split}.mp4", kind=kind, parts=options.parts[s],
                                         defective=options.defective, seed=int(np.random.SeedSequence(seed).generate_state(1)[0]),
                                         frame_size=options.frame_size, part_size=options.part_size,
                                         balanced_classes=options.balanced_classes)
            records += _crops_of_video(truth, split, raw, options, np.random.default_rng(seed))
            truth.path.unlink()
            report("render", done, len(jobs))
        source = SourceDataset(GENERATED, records, station_class_names(options.kinds))
        convert_options = replace(ConvertOptions(), format=GENERATED, keep_split=True, seed=options.seed,
                                  transfer="copy", force=options.force)
        label = f"conveyor frames of {', '.join(options.kinds)} parts (seed {options.seed})"
        return build_dataset(source, out, convert_options, progress, source_label=label)
    finally:
        shutil.rmtree(raw, ignore_errors=True)
