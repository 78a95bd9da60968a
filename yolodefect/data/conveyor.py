"""A synthetic conveyor video with exact ground truth: parts from the defect generator moving left to right.

The demo and the station tests need a video where it is known which parts are defective, where
every defect is on every frame, and where nothing is downloaded. Parts are rendered by
:func:`yolodefect.data.synth.render_part`, placed one after another with a gap on a belt, and
moved a whole number of pixels per frame so boxes stay exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from yolodefect.data.records import Box
from yolodefect.data.synth import CLASS_NAMES, ClassDealer, render_part
from yolodefect.errors import UsageError, YoloDefectError


@dataclass(frozen=True)
class ConveyorPart:
    """One part on the belt; ``defects`` are in part pixels (add the part's position for frame pixels)."""

    index: int
    defects: tuple[Box, ...]
    first_frame: int  # first frame showing any of the part
    last_frame: int  # last frame showing any of the part

    @property
    def defective(self) -> bool:
        return bool(self.defects)


@dataclass(frozen=True)
class VisibleDefect:
    part_index: int
    class_name: str
    class_id: int
    xyxy: tuple[float, float, float, float]  # frame pixels, clipped to the frame


@dataclass(frozen=True)
class ConveyorTruth:
    """What is in the video: where each part is on each frame, and its defects."""

    path: Path
    kind: str
    class_names: tuple[str, ...]
    frame_size: tuple[int, int]
    part_size: tuple[int, int]
    fps: float
    frames: int
    speed_px_per_frame: int
    pitch_px: int  # part width + gap
    top_y: int
    parts: tuple[ConveyorPart, ...]

    @property
    def defective_parts(self) -> set[int]:
        return {part.index for part in self.parts if part.defective}

    def part_left(self, part_index: int, frame_index: int) -> int:
        """x of the part's left edge on a frame (negative while it enters)."""
        return self.speed_px_per_frame * frame_index - self.part_size[0] - part_index * self.pitch_px

    def visible_defects(self, frame_index: int, min_visible: float = 0.5) -> list[VisibleDefect]:
        """Defects with at least ``min_visible`` of their box inside the frame, clipped to it."""
        width, height = self.frame_size
        found: list[VisibleDefect] = []
        for part in self.parts:
            if not part.defective or not part.first_frame <= frame_index <= part.last_frame:
                continue
            left = self.part_left(part.index, frame_index)
            for box in part.defects:
                x1, y1, x2, y2 = box.xyxy
                x1, x2, y1, y2 = x1 + left, x2 + left, y1 + self.top_y, y2 + self.top_y
                cx1, cx2 = max(0.0, x1), min(float(width), x2)
                cy1, cy2 = max(0.0, y1), min(float(height), y2)
                full = max(x2 - x1, 1e-6) * max(y2 - y1, 1e-6)
                shown = max(0.0, cx2 - cx1) * max(0.0, cy2 - cy1)
                if shown / full >= min_visible:
                    found.append(VisibleDefect(part.index, box.class_name, self.class_names.index(box.class_name),
                                               (cx1, cy1, cx2, cy2)))
        return found

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "frames": self.frames,
            "fps": self.fps,
            "frame_size": list(self.frame_size),
            "defective_parts": sorted(self.defective_parts),
            "parts": [
                {"index": p.index, "first_frame": p.first_frame, "last_frame": p.last_frame,
                 "defects": [{"class": b.class_name, "xyxy": list(b.xyxy)} for b in p.defects]}
                for p in self.parts
            ],
        }


def _belt(rng: np.random.Generator, width: int, height: int, period: int) -> np.ndarray:
    """A belt texture one cleat period wider than the frame, so shifting it animates the belt."""
    belt = np.full((height, width + period, 3), 58, dtype=np.uint8)
    noise = rng.integers(-6, 7, size=(height, width + period, 1), dtype=np.int16)
    belt = np.clip(belt.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    for x in range(0, width + period, period):
        belt[:, x:x + 3] = 38  # cleats
    belt[: max(2, height // 20)] = 90  # rails
    belt[height - max(2, height // 20):] = 90
    return belt


def _choose_defective(parts: int, defective: Iterable[int] | float, rng: np.random.Generator) -> set[int]:
    if isinstance(defective, float):
        if not 0.0 <= defective <= 1.0:
            raise UsageError(f"defective fraction must lie in [0, 1], got {defective}")
        count = int(round(defective * parts))
        return {int(i) for i in rng.choice(parts, size=count, replace=False)} if count else set()
    chosen = {int(i) for i in defective}
    wrong = sorted(i for i in chosen if not 0 <= i < parts)
    if wrong:
        raise UsageError(f"defective part indices {wrong} are outside 0..{parts - 1}")
    return chosen


def write_conveyor_video(
    path: Path | str,
    *,
    kind: str = "steel",
    parts: int,
    defective: Iterable[int] | float = 0.3,
    seed: int = 0,
    frame_size: tuple[int, int] = (640, 360),
    part_size: tuple[int, int] = (160, 120),
    speed_px_per_frame: int = 8,
    fps: float = 30.0,
    gap_px: int = 160,
    max_defects_per_part: int = 2,
    balanced_classes: bool = False,
) -> ConveyorTruth:
    """Write a conveyor video (``.mp4`` with mp4v, or ``.avi`` with MJPG) and return its ground truth.

    Parts enter on the left one after another, ``gap_px`` apart, and move ``speed_px_per_frame``
    to the right each frame; the video ends when the last part has left. ``defective`` is a set of
    part indices or a fraction of the parts (chosen with ``seed``); each defective part gets 1 to
    ``max_defects_per_part`` defects of random classes (``balanced_classes``: dealt from shuffled
    full rounds of the classes, so a short video still shows every class).
    """
    if kind not in CLASS_NAMES:
        raise UsageError(f"unknown kind {kind!r}; expected one of {', '.join(CLASS_NAMES)}")
    width, height = (int(v) for v in frame_size)
    part_w, part_h = (int(v) for v in part_size)
    if parts < 1 or speed_px_per_frame < 1 or gap_px < 0 or max_defects_per_part < 1 or fps <= 0:
        raise UsageError("need parts >= 1, speed_px_per_frame >= 1, gap_px >= 0, max_defects_per_part >= 1, fps > 0")
    if part_h > height or part_w > width:
        raise UsageError(f"part size {part_size} does not fit in frame size {frame_size}")
    rng = np.random.default_rng([seed, 0])
    chosen = _choose_defective(parts, defective, rng)
    names = CLASS_NAMES[kind]
    pitch = part_w + gap_px
    top = (height - part_h) // 2
    frames = math.ceil((width + part_w + (parts - 1) * pitch) / speed_px_per_frame) + 1

    dealer = ClassDealer(names, np.random.default_rng([seed, 2]))
    images: list[np.ndarray] = []
    records: list[ConveyorPart] = []
    for index in range(parts):
        classes = []
        if index in chosen:
            count = int(rng.integers(1, max_defects_per_part + 1))
            classes = [str(names[int(k)]) for k in rng.integers(0, len(names), size=count)]
            if balanced_classes:
                classes = dealer.deal(count)
        gray, boxes = render_part(kind, np.random.default_rng([seed, 1, index]), (part_w, part_h), classes)
        images.append(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
        # Any pixel visible: left edge > -part_w and < width.
        first = math.floor((index * pitch) / speed_px_per_frame) + 1
        last = math.ceil((width + part_w + index * pitch) / speed_px_per_frame) - 1
        records.append(ConveyorPart(index, tuple(boxes), first, min(last, frames - 1)))

    truth = ConveyorTruth(Path(path), kind, tuple(names), (width, height), (part_w, part_h), float(fps), frames,
                          int(speed_px_per_frame), pitch, top, tuple(records))
    period = 80
    belt = _belt(rng, width, height, period)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if out.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(out), fourcc, float(fps), (width, height))
    if not writer.isOpened():
        raise YoloDefectError(f"OpenCV cannot write {out} here (no encoder for {out.suffix}); try a .avi path (MJPG)")
    try:
        for frame_index in range(frames):
            shift = (speed_px_per_frame * frame_index) % period
            frame = belt[:, period - shift: period - shift + width].copy()
            for record, image in zip(records, images):
                if not record.first_frame <= frame_index <= record.last_frame:
                    continue
                left = truth.part_left(record.index, frame_index)
                x1, x2 = max(0, left), min(width, left + part_w)
                if x2 > x1:
                    frame[top:top + part_h, x1:x2] = image[:, x1 - left:x2 - left]
            writer.write(frame)
    finally:
        writer.release()
    return truth
