"""A synthetic conveyor video with exact ground truth: parts moving left to right on a belt.

The demo, the station tests and the line benchmark need a video where it is known which parts are
defective, where every part and defect is on every frame, and where nothing is downloaded. Parts are
rendered by :func:`yolodefect.data.synth.render_part` (or given as real images with their boxes),
placed one after another with a gap on a belt, and moved a whole number of pixels per frame so
boxes stay exact. Options make the line harder the way real lines are: parts of several widths,
small or random gaps, an empty belt before the first part (the station learns the belt from it),
a belt with a blotchy texture that moves with it, and a lighting gain that flickers per frame.
Some parts may carry a defect of no class the generator's datasets teach (``contamination``: a label
or a smear), for the anomaly stage, which learns only what good parts look like.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from yolodefect.data.part_truth import KnownPart
from yolodefect.data.records import Box
from yolodefect.data.synth import CLASS_NAMES, ClassDealer, draw_contamination, render_part
from yolodefect.errors import UsageError, YoloDefectError

BELT_GREY = 58
CLEAT_PERIOD_PX = 80
TEXTURE_AMPLITUDE = 12.0  # grey levels of the textured belt's blotches (on top of the pixel noise)
IMAGES_KIND = "images"  # ConveyorTruth.kind when the parts are real images

PartImage = tuple[np.ndarray, Sequence[Box]]  # (BGR uint8 image, defect boxes in its pixels)


@dataclass(frozen=True)
class ConveyorPart:
    """One part on the belt; ``defects`` are in part pixels (add the part's position for frame pixels)."""

    index: int
    defects: tuple[Box, ...]
    first_frame: int  # first frame showing any of the part
    last_frame: int  # last frame showing any of the part
    size: tuple[int, int]  # (width, height) in pixels
    offset_px: int  # belt length between the first part's right edge and this one's: earlier widths + gaps
    top: int  # y of the part's top edge, frame pixels

    @property
    def defective(self) -> bool:
        return bool(self.defects)

    @property
    def classes(self) -> tuple[str, ...]:
        """The part's defect classes, each once, in the order of its boxes."""
        return tuple(dict.fromkeys(box.class_name for box in self.defects))


@dataclass(frozen=True)
class VisibleDefect:
    part_index: int
    class_name: str
    class_id: int  # index in ConveyorTruth.class_names; -1 for a class no detector learns (contamination)
    xyxy: tuple[float, float, float, float]  # frame pixels, clipped to the frame


@dataclass(frozen=True)
class ConveyorTruth:
    """What is in the video: where each part is on each frame, and its defects."""

    path: Path
    kind: str
    class_names: tuple[str, ...]
    frame_size: tuple[int, int]
    part_size: tuple[int, int]  # the largest part's (width, height); each part's own is ConveyorPart.size
    fps: float
    frames: int
    speed_px_per_frame: int
    pitch_px: int  # part width + gap when all parts and gaps are alike, else 0 (use part_left)
    top_y: int  # top edge of a part of height part_size[1]
    parts: tuple[ConveyorPart, ...]
    lead_in_frames: int = 0  # frames of empty belt before the first part's first pixel enters

    @property
    def defective_parts(self) -> set[int]:
        return {part.index for part in self.parts if part.defective}

    @property
    def unseen_parts(self) -> set[int]:
        """Parts with a defect of a class outside ``class_names`` (one no detector of these classes learns)."""
        return {part.index for part in self.parts if any(c not in self.class_names for c in part.classes)}

    def part_left(self, part_index: int, frame_index: int) -> int:
        """x of the part's left edge on a frame (negative while it enters), exact for every width and gap."""
        part = self.parts[part_index]
        right = self.speed_px_per_frame * (frame_index - self.lead_in_frames) - part.offset_px
        return right - part.size[0]

    def part_box(self, part_index: int, frame_index: int) -> tuple[int, int, int, int] | None:
        """The visible part of the part on a frame as (x1, y1, x2, y2) frame pixels clipped to the frame (x2, y2
        exclusive), or None when none of it is in view."""
        part = self.parts[part_index]
        left = self.part_left(part_index, frame_index)
        x1, x2 = max(0, left), min(self.frame_size[0], left + part.size[0])
        if x2 <= x1:
            return None
        return x1, part.top, x2, part.top + part.size[1]

    def parts_in_view(self, frame_index: int) -> list[int]:
        """Indices of the parts with at least one pixel on a frame."""
        return [part.index for part in self.parts if part.first_frame <= frame_index <= part.last_frame]

    def known_parts(self) -> list[KnownPart]:
        """The video's parts as a master-parts truth list (part_id = str(index)), in the order they pass the camera."""
        return [KnownPart(str(part.index), part.defective, part.classes) for part in self.parts]

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
                x1, x2, y1, y2 = x1 + left, x2 + left, y1 + part.top, y2 + part.top
                cx1, cx2 = max(0.0, x1), min(float(width), x2)
                cy1, cy2 = max(0.0, y1), min(float(height), y2)
                full = max(x2 - x1, 1e-6) * max(y2 - y1, 1e-6)
                shown = max(0.0, cx2 - cx1) * max(0.0, cy2 - cy1)
                if shown / full >= min_visible:
                    class_id = self.class_names.index(box.class_name) if box.class_name in self.class_names else -1
                    found.append(VisibleDefect(part.index, box.class_name, class_id, (cx1, cy1, cx2, cy2)))
        return found

    def to_dict(self) -> dict:
        """JSON-able; :meth:`from_dict` reads it back (a video's truth kept beside it)."""
        unseen = {"unseen_parts": sorted(self.unseen_parts)} if self.unseen_parts else {}  # as before when none
        return {
            "path": str(self.path),
            "kind": self.kind,
            "class_names": list(self.class_names),
            "frames": self.frames,
            "fps": self.fps,
            "frame_size": list(self.frame_size),
            "part_size": list(self.part_size),
            "speed_px_per_frame": self.speed_px_per_frame,
            "pitch_px": self.pitch_px,
            "top_y": self.top_y,
            "lead_in_frames": self.lead_in_frames,
            "defective_parts": sorted(self.defective_parts),
            **unseen,
            "parts": [
                {"index": p.index, "first_frame": p.first_frame, "last_frame": p.last_frame,
                 "size": list(p.size), "offset_px": p.offset_px, "top": p.top,
                 "defects": [{"class": b.class_name, "xyxy": list(b.xyxy)} for b in p.defects]}
                for p in self.parts
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> ConveyorTruth:
        parts = tuple(
            ConveyorPart(int(p["index"]), tuple(Box(d["class"], tuple(float(v) for v in d["xyxy"])) for d in p["defects"]),
                         int(p["first_frame"]), int(p["last_frame"]), (int(p["size"][0]), int(p["size"][1])),
                         int(p["offset_px"]), int(p["top"]))
            for p in data["parts"])
        return cls(Path(data["path"]), str(data["kind"]), tuple(data["class_names"]),
                   (int(data["frame_size"][0]), int(data["frame_size"][1])),
                   (int(data["part_size"][0]), int(data["part_size"][1])), float(data["fps"]), int(data["frames"]),
                   int(data["speed_px_per_frame"]), int(data["pitch_px"]), int(data["top_y"]), parts,
                   int(data["lead_in_frames"]))


def _belt(rng: np.random.Generator, width: int, height: int, period: int) -> np.ndarray:
    """A belt texture one cleat period wider than the frame, so shifting it animates the belt."""
    belt = np.full((height, width + period, 3), BELT_GREY, dtype=np.uint8)
    noise = rng.integers(-6, 7, size=(height, width + period, 1), dtype=np.int16)
    belt = np.clip(belt.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    for x in range(0, width + period, period):
        belt[:, x:x + 3] = 38  # cleats
    belt[: max(2, height // 20)] = 90  # rails
    belt[height - max(2, height // 20):] = 90
    return belt


def _textured_belt(rng: np.random.Generator, width: int, height: int, period: int) -> tuple[np.ndarray, int]:
    """A belt loop with low-frequency blotches that move with it, and the loop length.

    The loop (a whole number of cleat periods, at least twice the frame) repeats exactly, so the texture
    never jumps when the shift wraps; the returned array is the loop plus one frame width.
    """
    loop = period * max(1, math.ceil(2 * width / period))
    x = np.arange(loop, dtype=np.float64)[None, :]
    y = np.arange(height, dtype=np.float64)[:, None]
    blotches = np.zeros((height, loop))
    for _ in range(8):  # a few smooth waves, periodic along the loop: blotches tens of pixels wide
        cycles_x = int(rng.integers(1, max(2, loop // 60)))
        cycles_y = float(rng.uniform(0.2, max(0.5, height / 90)))
        blotches += np.cos(2 * np.pi * (cycles_x * x / loop + cycles_y * y / height) + rng.uniform(0, 2 * np.pi))
    blotches *= TEXTURE_AMPLITUDE / max(float(np.abs(blotches).max()), 1e-6)
    noise = rng.integers(-6, 7, size=(height, loop), dtype=np.int16)
    base = np.clip(BELT_GREY + blotches + noise, 0, 255).astype(np.uint8)
    for x0 in range(0, loop, period):
        base[:, x0:x0 + 3] = 38  # cleats
    base[: max(2, height // 20)] = 90  # rails
    base[height - max(2, height // 20):] = 90
    belt = np.concatenate([base, base[:, :width]], axis=1)
    return np.repeat(belt[:, :, None], 3, axis=2), loop


def _choose_defective(parts: int, defective: Iterable[int] | float, rng: np.random.Generator) -> set[int]:
    if isinstance(defective, float):
        if not 0.0 <= defective <= 1.0:
            raise UsageError(f"defective fraction must lie in [0, 1], got {defective}")
        count = round(defective * parts)
        return {int(i) for i in rng.choice(parts, size=count, replace=False)} if count else set()
    chosen = {int(i) for i in defective}
    wrong = sorted(i for i in chosen if not 0 <= i < parts)
    if wrong:
        raise UsageError(f"defective part indices {wrong} are outside 0..{parts - 1}")
    return chosen


def _choose_contaminated(parts: int, good: Sequence[int], contaminated: Iterable[int] | float,
                         rng: np.random.Generator) -> list[int]:
    """The parts that get contamination: given indices, or a fraction of all parts drawn from the good ones."""
    if isinstance(contaminated, float):
        if not 0.0 <= contaminated <= 1.0:
            raise UsageError(f"contaminated fraction must lie in [0, 1], got {contaminated}")
        count = round(contaminated * parts)
        if count > len(good):
            raise UsageError(f"contaminated={contaminated} asks for {count} contaminated parts but only {len(good)} "
                             "parts have no other defect; lower it or the defective fraction")
        return sorted(int(good[i]) for i in rng.choice(len(good), size=count, replace=False)) if count else []
    chosen = sorted({int(i) for i in contaminated})
    wrong = [i for i in chosen if not 0 <= i < parts]
    if wrong:
        raise UsageError(f"contaminated part indices {wrong} are outside 0..{parts - 1}")
    return chosen


def _part_widths(parts: int, part_w: int, part_widths: Sequence[int] | None,
                 part_width_range: tuple[int, int] | None, seed: int) -> list[int]:
    if part_widths is not None and part_width_range is not None:
        raise UsageError("give part_widths or part_width_range, not both")
    if part_widths is not None:
        widths = [int(w) for w in part_widths]
        if len(widths) != parts:
            raise UsageError(f"part_widths has {len(widths)} widths for {parts} parts")
        return widths
    if part_width_range is not None:
        low, high = (int(v) for v in part_width_range)
        if not 1 <= low <= high:
            raise UsageError(f"part_width_range must be (min, max) with 1 <= min <= max, got {part_width_range}")
        return [int(w) for w in np.random.default_rng([seed, 3]).integers(low, high + 1, size=parts)]
    return [part_w] * parts


def _gaps(parts: int, gap_px: int | tuple[int, int], seed: int) -> list[int]:
    """The gap after each part but the last (belt pixels between it and the next part)."""
    if isinstance(gap_px, (tuple, list)):
        low, high = (int(v) for v in gap_px)
        if not 0 <= low <= high:
            raise UsageError(f"gap_px range must be (min, max) with 0 <= min <= max, got {tuple(gap_px)}")
        return [int(g) for g in np.random.default_rng([seed, 4]).integers(low, high + 1, size=max(0, parts - 1))]
    if int(gap_px) < 0:
        raise UsageError(f"gap_px must be >= 0, got {gap_px}")
    return [int(gap_px)] * max(0, parts - 1)


def _checked_part_images(part_images: Sequence[PartImage], class_names: Sequence[str] | None
                         ) -> list[tuple[np.ndarray, tuple[Box, ...]]]:
    if not class_names:
        raise UsageError("part_images need class_names (the class of every box, in class-id order)")
    checked = []
    for index, (image, boxes) in enumerate(part_images):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise UsageError(f"part image {index}: expected a BGR (or grey) uint8 image, got {image.dtype} "
                             f"{image.shape}")
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        height, width = image.shape[:2]
        for box in boxes:
            x1, y1, x2, y2 = box.xyxy
            if box.class_name not in class_names:
                raise UsageError(f"part image {index}: box class {box.class_name!r} is not in class_names")
            if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
                raise UsageError(f"part image {index}: box {box.xyxy} is not inside the {width}x{height} image")
        checked.append((image, tuple(boxes)))
    return checked


def write_conveyor_video(
    path: Path | str,
    *,
    kind: str = "steel",
    parts: int | None = None,
    defective: Iterable[int] | float = 0.3,
    seed: int = 0,
    frame_size: tuple[int, int] = (640, 360),
    part_size: tuple[int, int] = (160, 120),
    speed_px_per_frame: int = 8,
    fps: float = 30.0,
    gap_px: int | tuple[int, int] = 160,
    max_defects_per_part: int = 2,
    balanced_classes: bool = False,
    part_widths: Sequence[int] | None = None,
    part_width_range: tuple[int, int] | None = None,
    lead_in_frames: int = 0,
    flicker: float = 0.0,
    textured_belt: bool = False,
    belt_bgr: tuple[int, int, int] | None = None,
    part_images: Sequence[PartImage] | None = None,
    class_names: Sequence[str] | None = None,
    contaminated: Iterable[int] | float = (),
) -> ConveyorTruth:
    """Write a conveyor video (``.mp4`` with mp4v, or ``.avi`` with MJPG) and return its ground truth.

    After ``lead_in_frames`` frames of empty belt, parts enter on the left one after another and move
    ``speed_px_per_frame`` to the right each frame; the video ends when the last part has left.

    * Rendered parts (``kind``): ``parts`` of them, ``part_size`` (width, height), or per-part widths from
      ``part_widths`` or seeded from ``part_width_range`` (min, max) with the height of ``part_size``.
      ``defective`` is a set of part indices or a fraction of the parts (chosen with ``seed``); each
      defective part gets 1 to ``max_defects_per_part`` defects of random classes (``balanced_classes``:
      dealt from shuffled full rounds of the classes, so a short video still shows every class).
    * Real parts (``part_images``): (BGR uint8 image, defect boxes in its pixels) per part, in order; a part
      with boxes is defective. ``class_names`` lists every box class; sizes come from the images.
    * ``gap_px``: belt pixels between consecutive parts, or a (min, max) range drawn per gap with ``seed``.
    * ``contaminated``: rendered parts that also carry a defect of class ``contamination`` (a glued-on label
      or a dark smear, :func:`yolodefect.data.synth.draw_contamination`), which is in no class list: part
      indices, or a fraction of the parts that have no other defect (chosen with ``seed``). The truth marks
      them defective (:attr:`ConveyorTruth.unseen_parts`); the rest of the video is the same as without them.
    * ``textured_belt``: blotches of about +-12 grey levels that move with the belt; ``flicker``: a lighting
      gain drawn per frame in [1 - flicker, 1 + flicker] (with ``seed``) applied to the whole frame.
    * ``belt_bgr``: the belt's mean colour (default grey); texture, cleats and rails move by the same offset per
      channel. A coloured belt contrasts with grey parts of any tone (a line picks its belt so).
    """
    width, height = (int(v) for v in frame_size)
    if not isinstance(contaminated, float):
        contaminated = tuple(contaminated)
    if part_images is not None:
        images_given = _checked_part_images(part_images, class_names)
        if parts is not None and parts != len(images_given):
            raise UsageError(f"parts={parts} but {len(images_given)} part images were given")
        if part_widths is not None or part_width_range is not None:
            raise UsageError("part widths come from part_images; do not give part_widths or part_width_range")
        parts = len(images_given)
        if contaminated not in ((), 0.0):
            raise UsageError("contaminated draws on rendered parts; with part_images, draw on the images yourself")
    else:
        if kind not in CLASS_NAMES:
            raise UsageError(f"unknown kind {kind!r}; expected one of {', '.join(CLASS_NAMES)}")
        if parts is None:
            raise UsageError("give parts (how many parts to render) or part_images")
    if (parts < 1 or speed_px_per_frame < 1 or max_defects_per_part < 1 or fps <= 0 or lead_in_frames < 0
            or not 0.0 <= flicker < 1.0):
        raise UsageError("need parts >= 1, speed_px_per_frame >= 1, max_defects_per_part >= 1, fps > 0, "
                         "lead_in_frames >= 0 and 0 <= flicker < 1")
    gaps = _gaps(parts, gap_px, seed)
    if part_images is not None:
        sizes = [(image.shape[1], image.shape[0]) for image, _ in images_given]
    else:
        part_h = int(part_size[1])
        sizes = [(w, part_h) for w in _part_widths(parts, int(part_size[0]), part_widths, part_width_range, seed)]
    too_big = [i for i, (w, h) in enumerate(sizes) if not (1 <= w <= width and 1 <= h <= height)]
    if too_big:
        first = too_big[0]
        raise UsageError(f"part {first} of size {sizes[first]} does not fit in frame size {frame_size}")
    offsets = [0]
    for (w, _), gap in zip(sizes, gaps):
        offsets.append(offsets[-1] + w + gap)
    last_w = sizes[-1][0]
    frames = lead_in_frames + math.ceil((width + last_w + offsets[-1]) / speed_px_per_frame) + 1

    rng = np.random.default_rng([seed, 0])
    images: list[np.ndarray] = []
    records: list[ConveyorPart] = []
    if part_images is not None:
        names = tuple(str(name) for name in class_names)
        truth_kind = IMAGES_KIND
        part_boxes = []
        for image, boxes in images_given:
            images.append(image)
            part_boxes.append(boxes)
    else:
        chosen = _choose_defective(parts, defective, rng)
        names = tuple(CLASS_NAMES[kind])
        truth_kind = kind
        dealer = ClassDealer(names, np.random.default_rng([seed, 2]))
        part_boxes = []
        for index in range(parts):
            classes = []
            if index in chosen:
                count = int(rng.integers(1, max_defects_per_part + 1))
                classes = [str(names[int(k)]) for k in rng.integers(0, len(names), size=count)]
                if balanced_classes:
                    classes = dealer.deal(count)
            gray, boxes = render_part(kind, np.random.default_rng([seed, 1, index]), sizes[index], classes)
            images.append(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
            part_boxes.append(tuple(boxes))
        # Own random streams: without contamination every pixel and box is what it was before the option existed.
        good = [index for index in range(parts) if not part_boxes[index]]
        for index in _choose_contaminated(parts, good, contaminated, np.random.default_rng([seed, 7])):
            gray, box = draw_contamination(cv2.cvtColor(images[index], cv2.COLOR_BGR2GRAY),
                                           np.random.default_rng([seed, 8, index]), part_boxes[index])
            images[index] = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
            part_boxes[index] = (*part_boxes[index], box)
    for index in range(parts):
        part_w, part_h = sizes[index]
        # Any pixel visible: right edge > 0 and left edge < width.
        first = lead_in_frames + math.floor(offsets[index] / speed_px_per_frame) + 1
        last = lead_in_frames + math.ceil((width + part_w + offsets[index]) / speed_px_per_frame) - 1
        records.append(ConveyorPart(index, tuple(part_boxes[index]), first, min(last, frames - 1), (part_w, part_h),
                                    offsets[index], (height - part_h) // 2))

    largest = (max(w for w, _ in sizes), max(h for _, h in sizes))
    pitch = 0  # no single pitch when widths or gaps vary
    if len(set(sizes)) == 1 and len(set(gaps)) <= 1:
        pitch = sizes[0][0] + (gaps[0] if gaps else gap_px if isinstance(gap_px, int) else 0)
    truth = ConveyorTruth(Path(path), truth_kind, names, (width, height), largest, float(fps), frames,
                          int(speed_px_per_frame), pitch, (height - largest[1]) // 2, tuple(records),
                          int(lead_in_frames))
    if textured_belt:
        belt, loop = _textured_belt(np.random.default_rng([seed, 6]), width, height, CLEAT_PERIOD_PX)
    else:
        loop = CLEAT_PERIOD_PX
        belt = _belt(rng, width, height, loop)
    if belt_bgr is not None:
        if len(belt_bgr) != 3 or not all(0 <= int(v) <= 255 for v in belt_bgr):
            raise UsageError(f"belt_bgr={belt_bgr!r} must be three values 0-255 (blue, green, red)")
        # An offset per channel, not a gain: the texture keeps its +-12 grey levels in every channel.
        offset = np.asarray(belt_bgr, dtype=np.int16) - BELT_GREY
        belt = np.clip(belt.astype(np.int16) + offset, 0, 255).astype(np.uint8)
    gains = np.random.default_rng([seed, 5]).uniform(1.0 - flicker, 1.0 + flicker, size=frames) if flicker else None
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if out.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(out), fourcc, float(fps), (width, height))
    if not writer.isOpened():
        raise YoloDefectError(f"OpenCV cannot write {out} here (no encoder for {out.suffix}); try a .avi path (MJPG)")
    try:
        for frame_index in range(frames):
            # The belt moves from the first frame on (also during the lead-in), like a running line.
            shift = (speed_px_per_frame * frame_index) % loop
            frame = belt[:, loop - shift: loop - shift + width].copy()
            for record, image in zip(records, images):
                if not record.first_frame <= frame_index <= record.last_frame:
                    continue
                left = truth.part_left(record.index, frame_index)
                x1, x2 = max(0, left), min(width, left + record.size[0])
                if x2 > x1:
                    frame[record.top:record.top + record.size[1], x1:x2] = image[:, x1 - left:x2 - left]
            if gains is not None:
                frame = np.clip(frame.astype(np.float32) * gains[frame_index] + 0.5, 0, 255).astype(np.uint8)
            writer.write(frame)
    finally:
        writer.release()
    return truth
