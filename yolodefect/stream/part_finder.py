"""Where the parts are on a frame of a moving line: an empty-belt model, or a ``part`` class of the model.

A defect detector answers "is there a scratch here", not "which part is this": on a belt it also
fires on belt texture, and defect tracks say nothing about where a good part begins and ends. The
station therefore finds the parts first and judges defects only on them.

* :class:`BeltModel` learns the empty belt (per-pixel mean and spread of a few frames, on a
  downscaled copy) and finds parts as the connected regions that differ from it. The belt moves,
  so its texture and cleats pass every pixel while it learns: their spread is part of the model
  and does not make a part. A global lighting gain (the most common ratio of this frame to the
  learned belt) follows flicker. A part of the belt's own tone still differs in texture (local
  contrast over 3x3 working pixels, learned the same way), and pieces of one part whose boxes
  overlap are one part (two parts never overlap: belt lies between them). The working scale keeps
  a gap of ``min_gap_px`` between two parts several working pixels wide, so the clean-up (a 3x3
  closing) cannot join two parts. A part that matches the belt in both tone and texture cannot be
  seen this way (measured: 3 of 30 NEU-DET steel images on the generator's grey belt): choose a
  belt that contrasts with the parts, or use ``parts: class`` or a trigger.
  OpenCV's MOG2/KNN background subtractors are not used: they keep learning, so a slow or stopped
  line teaches them the parts, and they have no model of a belt whose texture moves.
* :func:`class_part_boxes`: when the user labels whole parts as a class, the model's boxes of
  that class are the parts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np

from yolodefect.detections import Detections
from yolodefect.errors import UsageError

logger = logging.getLogger(__name__)

# A part differs from the belt by at least this many grey levels (in some channel) and by this many
# times the belt's own spread at that pixel; both hold, so neither a smooth belt's tiny spread nor a
# textured belt's noise makes a part.
MIN_CONTRAST = 18.0
SPREAD_FACTOR = 4.0
MIN_SPREAD = 1.5  # grey levels: a belt that never changed still has sensor noise
MIN_TEXTURE = 4.0  # grey levels of local contrast above the belt's own that make a part
# Gaps between parts stay at least this many working pixels wide, more than a 3x3 closing can bridge.
GAP_WORKING_PX = 5
# A region over this fraction of the belt's learning frames, spread above MIN_CONTRAST, means
# something moved through the picture that was not belt texture (a part at start-up).
_BUSY_BELT_FRACTION = 0.02
# Lighting gain is searched in this range, in steps of 1%: a lamp flickering or ageing, not a new light.
_GAIN_RANGE = (0.5, 2.0)
_GAIN_BINS = 150


@dataclass(frozen=True)
class BeltModel:
    """The empty belt at a working scale: ``mean`` and ``spread`` (H', W', 3) float32, 1 working px = ``scale`` frame px."""

    mean: np.ndarray
    spread: np.ndarray
    frame_size_wh: tuple[int, int]
    scale: int
    min_area_px: float
    frames: int
    limit: np.ndarray  # (H', W', 3) how far a pixel may differ from the mean and still be belt
    mean_grey: np.ndarray  # (H', W') for the lighting gain
    texture_limit: np.ndarray  # (H', W') local contrast above which a pixel is not belt
    # Derived once here, not on every frame: the gain's ratio is a product, find compares variances.
    inverse_mean_grey: np.ndarray = field(init=False, repr=False)  # 1 / mean_grey (at least 1 grey level)
    texture_limit_sq: np.ndarray = field(init=False, repr=False)  # texture_limit squared

    def __post_init__(self) -> None:
        object.__setattr__(self, "inverse_mean_grey", (1.0 / np.maximum(self.mean_grey, 1.0)).astype(np.float32))
        object.__setattr__(self, "texture_limit_sq", np.square(self.texture_limit, dtype=np.float32))

    @classmethod
    def learn(cls, images: Iterable[np.ndarray], *, min_area_px: float | None = None,
              min_gap_px: float = 20.0) -> BeltModel:
        """Learn from frames of the empty belt (all the same size). ``min_area_px``: the smallest part in
        frame pixels (default 1% of the frame); ``min_gap_px``: the smallest gap between two parts to keep."""
        if min_gap_px <= 0:
            raise UsageError(f"the smallest gap between parts must be > 0 px, got {min_gap_px}")
        scale = max(1, int(min_gap_px // GAP_WORKING_PX))
        stack: list[np.ndarray] = []
        size: tuple[int, int] | None = None
        for image in images:
            wh = (int(image.shape[1]), int(image.shape[0]))
            if size is None:
                size = wh
            elif wh != size:
                raise UsageError(f"belt frames differ in size: {size[0]}x{size[1]} and {wh[0]}x{wh[1]}")
            stack.append(_working(image, scale))
        if len(stack) < 2 or size is None:
            raise UsageError(f"learning the empty belt needs at least 2 frames, got {len(stack)}")
        frames = np.stack(stack).astype(np.float32)
        mean = frames.mean(axis=0)
        spread = np.maximum(frames.std(axis=0), MIN_SPREAD)
        area = min_area_px if min_area_px is not None else 0.01 * size[0] * size[1]
        if area <= 0:
            raise UsageError(f"the smallest part area must be > 0 px, got {area}")
        textures = np.stack([_texture(_grey(frame)) for frame in frames])
        texture_limit = textures.mean(axis=0) + np.maximum(SPREAD_FACTOR * textures.std(axis=0), MIN_TEXTURE)
        model = cls(mean, spread, size, scale, float(area), len(stack),
                    np.maximum(SPREAD_FACTOR * spread, MIN_CONTRAST).astype(np.float32), mean.mean(axis=2),
                    texture_limit.astype(np.float32))
        busy = float((spread.max(axis=2) * SPREAD_FACTOR > 4 * MIN_CONTRAST).mean())
        if busy > _BUSY_BELT_FRACTION:
            logger.warning("the %d belt frames did not all show the empty belt: %.0f%% of the picture changed "
                           "strongly while learning (a part in view?); parts may be missed where it moved. "
                           "Start with an empty belt or give the empty belt's own frames (--belt)",
                           len(stack), 100 * busy)
        return model

    def shrink(self, image: np.ndarray) -> np.ndarray:
        """The frame at the working scale (uint8 BGR), as :meth:`find` looks at it; the station makes it once per
        frame and hands it to the camera check too (one pass over the full frame instead of two: about 0.1 ms less
        per frame on bench/watch.py's video, measured after a real model call)."""
        wh = (int(image.shape[1]), int(image.shape[0]))
        if wh != self.frame_size_wh:
            raise UsageError(f"frame size {wh[0]}x{wh[1]} differs from the belt model's "
                             f"{self.frame_size_wh[0]}x{self.frame_size_wh[1]}; learn the belt again for this camera")
        return _working(image, self.scale)

    def find(self, image: np.ndarray, previous_belt: np.ndarray | None = None,
             shrunk: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Part boxes (N, 4) xyxy in frame pixels, largest first, and the working-scale belt mask of this frame
        (pass it back as ``previous_belt`` with the next frame: the lighting gain is measured on it). ``shrunk``:
        this frame's :meth:`shrink`, when the caller already made it.

        Runs on every frame beside the model: OpenCV calls on small arrays rather than numpy expressions with
        their temporaries (the station's share of a frame cycle is what bench/watch.py holds to a few percent)."""
        work = (self.shrink(image) if shrunk is None else shrunk).astype(np.float32)
        grey = _grey(work)
        gain = self._gain(grey, previous_belt)
        # Any channel further from the belt's tone (scaled by the light) than the belt itself varies there.
        outside = cv2.compare(cv2.absdiff(work, self.mean * np.float32(gain)), self.limit, cv2.CMP_GT)
        outside = cv2.transform(outside, _ANY_CHANNEL)  # uint8 saturates: 255 where any channel is outside
        # Or textured where the belt is smooth: a part of the belt's own tone still shows its surface. Local contrast
        # of grey / gain above the limit is the variance of grey above (limit * gain)^2: no division, no root.
        textured = cv2.compare(_local_variance(grey), self.texture_limit_sq * np.float32(gain * gain), cv2.CMP_GT)
        # Eroded by the 3x3 window it was measured over: a part's edge is contrast too, one pixel beyond the part.
        mask = cv2.bitwise_or(outside, cv2.erode(textured, _KERNEL))
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _KERNEL)  # specks of noise
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _KERNEL)  # pinholes along a part's edge
        # Outer contours give the connected regions' boxes (8-connected, as connectedComponentsWithStats, and 6x
        # faster here than its statistics). Pixel areas are counted after joining overlapping boxes: every region
        # with a pixel inside a joined box overlaps it and so is part of it, so the count is the sum of its regions.
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        boxes = []
        min_area_working = self.min_area_px / (self.scale * self.scale)
        for x1, y1, x2, y2 in _merge_overlapping([(x, y, x + w, y + h)
                                                  for x, y, w, h in map(cv2.boundingRect, contours)]):
            if (x2 - x1) * (y2 - y1) >= min_area_working:
                area = cv2.countNonZero(mask[y1:y2, x1:x2])
                if area >= min_area_working / 4:
                    boxes.append((area, x1, y1, x2, y2))
        boxes.sort(reverse=True)
        width, height = self.frame_size_wh
        xyxy = np.array([[x1 * self.scale, y1 * self.scale, min(x2 * self.scale, width), min(y2 * self.scale, height)]
                         for _, x1, y1, x2, y2 in boxes], dtype=np.float32).reshape(-1, 4)
        return xyxy, mask == 0

    def _gain(self, current: np.ndarray, previous_belt: np.ndarray | None) -> float:
        """Brightness of this frame relative to the learned belt: the most common ratio of this frame to the
        learned mean, over the pixels that were belt on the previous frame (all pixels when too few were).

        The mode, not the mean or median: belt pixels agree on one ratio while parts scatter, so a frame
        half covered by bright parts, or a first frame with parts in view, still measures the belt's light."""
        mask = None
        if previous_belt is not None:
            belt = previous_belt.view(np.uint8)  # bool as 0/1, no copy
            if cv2.countNonZero(belt) > belt.size // 10:
                mask = belt
        ratio = current * self.inverse_mean_grey
        low, high = _GAIN_RANGE
        counts = cv2.calcHist([ratio], [0], mask, [_GAIN_BINS], [low, high]).ravel()
        if counts.sum() == 0:
            return 1.0
        smoothed = np.convolve(counts, np.ones(5, dtype=np.float32), mode="same")
        return low + (int(np.argmax(smoothed)) + 0.5) * (high - low) / _GAIN_BINS


_THIRDS = np.full((1, 3), 1.0 / 3.0, dtype=np.float32)
_ANY_CHANNEL = np.ones((1, 3), dtype=np.float32)
_KERNEL = np.ones((3, 3), np.uint8)


def _grey(work: np.ndarray) -> np.ndarray:
    """Mean of the channels of a float32 working-scale image: cv2.transform, 40x faster here than numpy's mean over
    a last axis of 3 (the station does this on every frame)."""
    return cv2.transform(work, _THIRDS) if work.ndim == 3 else work.astype(np.float32)


def _local_variance(grey: np.ndarray) -> np.ndarray:
    """Variance over 3x3 working pixels of a working-scale grey image (float rounding can make it slightly negative)."""
    mean = cv2.blur(grey, (3, 3))
    return cv2.blur(grey * grey, (3, 3)) - mean * mean


def _texture(grey: np.ndarray) -> np.ndarray:
    """Local contrast (standard deviation over 3x3 working pixels) of a working-scale grey image."""
    return np.sqrt(np.maximum(_local_variance(grey), 0.0))


def _merge_overlapping(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """(x1, y1, x2, y2) boxes that overlap, joined: the pieces of one part whose surface looks like the belt in
    places. Two parts never overlap (a gap of belt lies between them), so none are joined."""
    merged = list(boxes)
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a, b = merged[i], merged[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    merged[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    return merged


def _working(image: np.ndarray, scale: int) -> np.ndarray:
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if scale == 1:
        return image
    height, width = image.shape[:2]
    # Bilinear, not area averaging: 7x faster here, and the belt's spread is learned at the same sampling.
    return cv2.resize(image, (max(1, width // scale), max(1, height // scale)), interpolation=cv2.INTER_LINEAR)


def class_part_boxes(detections: Detections, part_class_id: int, min_conf: float) -> tuple[np.ndarray, np.ndarray]:
    """The parts a model finds itself (``part`` class at or above ``min_conf``) and the mask of the other detections."""
    is_part = detections.class_id == part_class_id
    parts = detections.xyxy[is_part & (detections.confidence >= min_conf)]
    return parts.reshape(-1, 4), ~is_part
