"""From per-frame defects to one decision per part.

* **Image mode** (one image is one part, e.g. a triggered camera or a folder of part photos):
  each frame is decided on its own: reject when any defect counts, else pass.
* **Track mode** (a video of a moving line): a defect track must count for ``min_frames``
  consecutive processed frames before it rejects (one-frame false positives never do), and every
  track rejects at most once. Several defect tracks on one part are one reject when
  ``part_merge_px`` is set: a track that confirms within that distance of a part already rejected
  (and still in view) joins that part instead of raising a new event.

  There is no "part" in track mode without a defect track (nothing says where a good part begins
  and ends), so track mode never emits pass events; ``emit_pass`` applies to image mode only.

Memory is bounded in track mode: a track unseen for ``forget_after_frames`` frames is forgotten
(keep it above the tracker's own ``track_buffer`` so a briefly lost track cannot reject twice),
and ``max_tracks`` caps the state even if a tracker floods new ids.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.stream.sources import Frame

PartOutcome = Literal["reject", "pass"]


@dataclass(frozen=True)
class PartDecision:
    """One part's verdict. ``defects`` are the detections that count, in frame pixels."""

    decision: PartOutcome
    part_id: str | int
    defects: Detections
    frame: Frame


@dataclass
class ImagePartDecider:
    """One frame, one part."""

    emit_pass: bool = False

    def update(self, frame: Frame, defects: Detections) -> list[PartDecision]:
        part_id: str | int = frame.part_hint if frame.part_hint is not None else frame.index
        if len(defects):
            return [PartDecision("reject", part_id, defects, frame)]
        if self.emit_pass:
            return [PartDecision("pass", part_id, defects, frame)]
        return []


@dataclass
class _TrackState:
    streak: int  # consecutive processed frames in which the track counted
    last_tick: int
    part: int | None = None  # the rejected part it belongs to, once decided


@dataclass
class _Part:
    part_id: int
    last_tick: int
    boxes: dict[int, np.ndarray] = field(default_factory=dict)  # track id -> last box
    seen: dict[int, int] = field(default_factory=dict)  # track id -> tick of that box


def box_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between two xyxy boxes: 0 when they touch or overlap, else the shortest gap."""
    dx = max(0.0, float(b[0] - a[2]), float(a[0] - b[2]))
    dy = max(0.0, float(b[1] - a[3]), float(a[1] - b[3]))
    return math.hypot(dx, dy)


class TrackPartDecider:
    """Debounced, once-per-track (or once-per-part) rejects on tracked detections.

    ``update`` takes the defects that count on this frame (tracker ids set; ids < 0 are ignored)
    and returns the rejects decided on it. Frames are counted as they are processed, so a live
    source that drops frames still needs ``min_frames`` processed frames to confirm.
    """

    def __init__(self, min_frames: int = 3, *, part_merge_px: float | None = None, forget_after_frames: int = 90,
                 max_tracks: int = 10_000, merge_stale_frames: int = 5):
        if min_frames < 1:
            raise UsageError(f"min_frames must be >= 1, got {min_frames}")
        if part_merge_px is not None and part_merge_px < 0:
            raise UsageError(f"part_merge_px must be >= 0 pixels (or unset), got {part_merge_px}")
        if forget_after_frames < 1 or max_tracks < 1:
            raise UsageError("forget_after_frames and max_tracks must be >= 1")
        self.min_frames = min_frames
        self.part_merge_px = part_merge_px
        # A lost track's last box says where its part *was*: on a moving line, another part may be
        # there a second later. Only boxes seen this recently can pull a new defect into a part.
        self.merge_stale_frames = merge_stale_frames
        self.forget_after_frames = forget_after_frames
        self.max_tracks = max_tracks
        self._tick = 0
        # Ordered by last sighting, oldest first, so forgetting pops from the front.
        self._tracks: OrderedDict[int, _TrackState] = OrderedDict()
        self._parts: OrderedDict[int, _Part] = OrderedDict()

    @property
    def tracked(self) -> int:
        """Tracks currently remembered (for tests and the stats panel)."""
        return len(self._tracks)

    @property
    def open_parts(self) -> int:
        return len(self._parts)

    def update(self, frame: Frame, defects: Detections) -> list[PartDecision]:
        self._tick += 1
        tick = self._tick
        if defects.tracker_id is None:
            raise UsageError("track mode needs tracker ids on the detections; run a tracker before deciding parts")
        rows = [i for i, tid in enumerate(defects.tracker_id.tolist()) if tid >= 0]
        confirmed: list[int] = []
        for i in rows:
            tid = int(defects.tracker_id[i])
            state = self._tracks.pop(tid, None)
            if state is None:
                state = _TrackState(streak=1, last_tick=tick)
            else:
                state.streak = state.streak + 1 if state.last_tick == tick - 1 else 1
                state.last_tick = tick
            self._tracks[tid] = state  # re-insert at the end: most recently seen
            if state.part is not None:
                part = self._parts.get(state.part)
                if part is not None:
                    part.boxes[tid] = defects.xyxy[i]
                    part.seen[tid] = tick
                    part.last_tick = tick
                    self._parts.move_to_end(part.part_id)
            elif state.streak >= self.min_frames:
                confirmed.append(i)

        decisions: list[PartDecision] = []
        for i in confirmed:
            tid = int(defects.tracker_id[i])
            if self._tracks[tid].part is not None:
                continue  # joined a part created earlier in this loop
            part = self._part_near(defects.xyxy[i], tick)
            if part is not None:
                self._join(part, tid, defects.xyxy[i], tick)
                continue
            part = _Part(part_id=tid, last_tick=tick)
            self._parts[part.part_id] = part
            self._join(part, tid, defects.xyxy[i], tick)
            members = [i]
            if self.part_merge_px is not None:
                # Other counting defects on the same part go into this event and cannot reject it again.
                for j in rows:
                    other = int(defects.tracker_id[j])
                    if j != i and box_gap(defects.xyxy[i], defects.xyxy[j]) <= self.part_merge_px:
                        members.append(j)
                        if self._tracks[other].part is None:
                            self._join(part, other, defects.xyxy[j], tick)
            decisions.append(PartDecision("reject", part.part_id, defects[sorted(members)], frame))
        self._forget(tick)
        return decisions

    def _join(self, part: _Part, tid: int, box: np.ndarray, tick: int) -> None:
        self._tracks[tid].part = part.part_id
        part.boxes[tid] = box
        part.seen[tid] = tick
        part.last_tick = tick

    def _part_near(self, box: np.ndarray, tick: int) -> _Part | None:
        if self.part_merge_px is None:
            return None
        for part in reversed(self._parts.values()):  # most recent first: the part now in view
            if any(box_gap(box, other) <= self.part_merge_px for tid, other in part.boxes.items()
                   if part.seen.get(tid, tick) >= tick - self.merge_stale_frames):
                return part
        return None

    def _forget(self, tick: int) -> None:
        horizon = tick - self.forget_after_frames
        while self._tracks:
            tid, state = next(iter(self._tracks.items()))
            if state.last_tick > horizon and len(self._tracks) <= self.max_tracks:
                break
            self._tracks.popitem(last=False)
            part = self._parts.get(state.part) if state.part is not None else None
            if part is not None:
                part.boxes.pop(tid, None)
                part.seen.pop(tid, None)
        while self._parts:
            part = next(iter(self._parts.values()))
            if part.last_tick > horizon and part.boxes and len(self._parts) <= self.max_tracks:
                break
            self._parts.popitem(last=False)
