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
from dataclasses import dataclass

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

    def find(self, image: np.ndarray, previous_belt: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Part boxes (N, 4) xyxy in frame pixels, largest first, and the working-scale belt mask of this frame
        (pass it back as ``previous_belt`` with the next frame: the lighting gain is measured on it)."""
        wh = (int(image.shape[1]), int(image.shape[0]))
        if wh != self.frame_size_wh:
            raise UsageError(f"frame size {wh[0]}x{wh[1]} differs from the belt model's "
                             f"{self.frame_size_wh[0]}x{self.frame_size_wh[1]}; learn the belt again for this camera")
        work = _working(image, self.scale).astype(np.float32)
        grey = _grey(work)
        gain = np.float32(self._gain(grey, previous_belt))
        outside = np.abs(work - gain * self.mean) > self.limit
        # Or textured where the belt is smooth: a part of the belt's own tone still shows its surface.
        kernel = np.ones((3, 3), np.uint8)
        # Eroded by the 3x3 window it was measured over: a part's edge is contrast too, one pixel beyond the part.
        textured = cv2.erode((_texture(grey / gain) > self.texture_limit).astype(np.uint8), kernel).astype(bool)
        mask = (outside[..., 0] | outside[..., 1] | outside[..., 2] | textured).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)  # specks of noise
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)  # pinholes along a part's edge
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        boxes = []
        min_area_working = self.min_area_px / (self.scale * self.scale)
        for area, x1, y1, x2, y2 in _merge_overlapping([(int(a), int(x), int(y), int(x + w), int(y + h))
                                                        for x, y, w, h, a in stats[1:count]]):
            if (x2 - x1) * (y2 - y1) >= min_area_working and area >= min_area_working / 4:
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
        learned = self.mean_grey
        if previous_belt is not None and previous_belt.sum() > previous_belt.size // 10:
            current, learned = current[previous_belt], learned[previous_belt]
        ratio = current.ravel() / np.maximum(learned.ravel(), 1.0)
        low, high = _GAIN_RANGE
        step = (high - low) / _GAIN_BINS
        bins = ((ratio - low) / step).astype(np.int64)
        counts = np.bincount(bins[(bins >= 0) & (bins < _GAIN_BINS)], minlength=_GAIN_BINS)
        if counts.sum() == 0:
            return 1.0
        smoothed = np.convolve(counts, np.ones(5), mode="same")
        return low + (int(np.argmax(smoothed)) + 0.5) * step


_THIRDS = np.full((1, 3), 1.0 / 3.0, dtype=np.float32)


def _grey(work: np.ndarray) -> np.ndarray:
    """Mean of the channels of a float32 working-scale image: cv2.transform, 40x faster here than numpy's mean over
    a last axis of 3 (the station does this on every frame)."""
    return cv2.transform(work, _THIRDS) if work.ndim == 3 else work.astype(np.float32)


def _texture(grey: np.ndarray) -> np.ndarray:
    """Local contrast (standard deviation over 3x3 working pixels) of a working-scale grey image."""
    mean = cv2.blur(grey, (3, 3))
    return np.sqrt(np.maximum(cv2.blur(grey * grey, (3, 3)) - mean * mean, 0.0))


def _merge_overlapping(regions: list[tuple[int, int, int, int, int]]) -> list[tuple[int, int, int, int, int]]:
    """(pixel area, x1, y1, x2, y2) regions whose boxes overlap, joined: the pieces of one part whose surface
    looks like the belt in places. Two parts never overlap (a gap of belt lies between them), so none are joined."""
    merged = list(regions)
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a, b = merged[i], merged[j]
                if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]:
                    merged[i] = (a[0] + b[0], min(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]), max(a[4], b[4]))
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
