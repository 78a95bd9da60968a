"""One decision per part on a moving line: part tracks, defects assigned to parts, a k-of-n rule, a decision line.

Per frame (:meth:`LinePartDecider.update`): the part finder gives the part boxes; :class:`PartTracker`
splits a box that holds two tracked parts (the finder bridged their gap) and gives the boxes ids across frames;
every detection is assigned to the part box holding its centre.
Detections on no part are belt, not defects: they are counted (``off_part``) and never emitted.

Part tracks are our own :class:`PartTracker`, not Ultralytics' ByteTrack: ByteTrack's Kalman filter
models a box of constant size moving at constant speed, but a part entering or leaving the picture
is a box that grows or shrinks against the frame edge while its far edge moves; measured on a
generated line (parts 90-200 px wide, 10 px/frame), ByteTrack lost most leaving parts and found
them again as new tracks at the exit edge, which would be a second decision for one part.
:class:`PartTracker` predicts each box by the speed of its edges that the frame does not clip.

For each part and frame the station keeps one number per class: the highest confidence of an
eligible detection of that class on the part (eligible: a reject class, large enough, inside the
ROI; :meth:`RejectRules.eligible_mask`). The part's verdict (:func:`part_rejected`) is the rule
``yolodefect calibrate`` tunes: a class rejects the part when it reaches its threshold on at least
``min_frames`` (k) of the part's frames. A per-image threshold applied to every one of 60 looks
multiplies the chances of a false reject; asking for k looks takes that back, and the calibration
run measures both on real parts.

The decision is made once, when the part's centre crosses the decision line (``decide_at``: the
fraction of the frame from the edge where parts enter, along the direction they move), or when it
is lost before (removed from the belt, end of the video). A part seen on fewer frames than the
rule needs gets an ``error`` decision (not inspected). A region that appears on fewer than
:data:`PART_CONFIRM_FRAMES` frames and never reaches the line is noise, counted, never an event.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.inference.names import class_name
from yolodefect.inference.rules import RejectRules
from yolodefect.stream.parts import PartDecision
from yolodefect.stream.sources import Frame

logger = logging.getLogger(__name__)

PART_CONFIRM_FRAMES = 2  # fewer sightings than this, never at the line: a flicker of the belt, not a part
LOST_AFTER_FRAMES = 5  # a part track unseen this many processed frames has left (or was taken off)
MIN_MOTION_PX = 4.0  # a part must have moved this far before its direction (and the line) is known
MAX_OPEN_PARTS = 1000

# (part boxes (N, 4) frame px, mask over the detections: True where a detection may be a defect)
PartFinder = Callable[[Frame, Detections], tuple[np.ndarray, np.ndarray]]


def part_rejected(scores: np.ndarray, thresholds: np.ndarray, reject_ids: list[int], min_frames: int) -> bool:
    """The station's verdict on one part: ``scores`` (frames, classes) per-frame maxima, ``thresholds`` (classes,).

    Rejected when some reject class reaches its threshold (and is above 0) on at least ``min_frames`` frames.
    Compared in float32, as :meth:`RejectRules.mask` compares."""
    if scores.size == 0 or not reject_ids:
        return False
    selected = scores[:, reject_ids].astype(np.float32)
    hits = (selected > 0) & (selected >= thresholds[reject_ids].astype(np.float32))
    return bool((hits.sum(axis=0) >= min_frames).any())


def class_maxima(detections: Detections, mask: np.ndarray, class_count: int) -> np.ndarray:
    """(classes,) the highest confidence of the ``mask``-ed detections of each class (0 for a class without one)."""
    scores = np.zeros(class_count, dtype=np.float32)
    if mask.any():
        np.maximum.at(scores, detections.class_id[mask], detections.confidence[mask])
    return scores


def kth_largest(scores: np.ndarray, k: int) -> np.ndarray:
    """(classes,) the k-th largest per-frame score of each class (0 when seen on fewer than k frames):
    the part reaches a threshold on k frames exactly when this reaches it."""
    if scores.shape[0] < k:
        return np.zeros(scores.shape[1], dtype=np.float32)
    return np.sort(scores, axis=0)[-k].astype(np.float32)


@dataclass
class _Part:
    track_id: int
    box: np.ndarray
    last_tick: int
    sightings: int = 0
    scores: list[np.ndarray] = field(default_factory=list)
    best_key: tuple[float, ...] = (-1, -np.inf, 0.0)  # (classes at threshold, best margin, visible part area)
    best: tuple[Frame, Detections, np.ndarray] | None = None  # frame, its counted defects on the part, part box
    # keep_peak: the frame where a reject class came closest to (or furthest over) its threshold, with all of that
    # frame's detections and the part box on it (the review queue saves it); key (score / threshold, part area)
    peak_key: tuple[float, float] = (-1.0, 0.0)
    peak: tuple[Frame, Detections, np.ndarray] | None = None
    decided: bool = False
    fragment: bool = False  # first seen beyond the decision line: a piece of a part already decided, never a part


@dataclass(frozen=True)
class LineFrame:
    """What one frame gave: the decisions made on it, the parts in view, and the defects that count."""

    decisions: list[PartDecision]
    part_boxes: np.ndarray  # (N, 4) frame px
    counted: np.ndarray  # mask over the frame's detections: counted defects on a part
    off_part: int  # counted detections outside every part (belt)


class LinePartDecider:
    """Parts found by ``finder``, tracked, judged by :func:`part_rejected`, decided once each."""

    def __init__(self, finder: PartFinder, class_names: Mapping[int, str], rules: RejectRules, *,
                 min_frames: int = 3, min_part_frames: int = 5, decide_at: float = 0.5, emit_pass: bool = False,
                 keep_scores: bool = False, keep_peak: bool = False):
        if min_frames < 1 or min_part_frames < 1:
            raise UsageError("min_frames and min_part_frames must be >= 1")
        if not 0.0 < decide_at < 1.0:
            raise UsageError(f"decide_at must lie in (0, 1) (fraction of the frame from the entry edge), got {decide_at}")
        self.finder = finder
        self.names = dict(class_names)
        self.min_frames = min_frames
        self.needed_frames = max(min_frames, min_part_frames)
        self.decide_at = decide_at
        self.emit_pass = emit_pass
        self.keep_scores = keep_scores  # calibration keeps each part's per-frame scores in its decision
        self.keep_peak = keep_peak  # the review queue: each decision carries its part's peak frame (PartDecision.peak)
        self.tracker = PartTracker()
        self.class_count = max(self.names) + 1 if self.names else 0
        self.set_rules(rules)
        self._parts: OrderedDict[int, _Part] = OrderedDict()
        self._tick = 0
        self._next_number = 1
        self.discarded_regions = 0
        # (axis, +1/-1): the way parts move, from the first part that crossed the line. From then on a region first
        # seen beyond the line is the tail of a part already decided (a leaving part can split at the exit edge).
        self.direction: tuple[int, int] | None = None

    def set_rules(self, rules: RejectRules) -> None:
        """The rules parts are judged by from now on (also between frames: watch --reload-on-change)."""
        self.rules = rules
        classes = self.class_count
        self.thresholds = np.array([rules.threshold(class_name(self.names, c)) for c in range(classes)], dtype=np.float32)
        self.reject_ids = rules.reject_ids(self.names)
        self._rejecting = np.zeros(classes, dtype=bool)
        self._rejecting[self.reject_ids] = True

    def before_line(self, boxes: np.ndarray, frame_wh: tuple[int, int]) -> np.ndarray:
        """(N,) True for boxes whose centre has not reached the decision line: parts still to be decided. All True
        until the first part has shown which way the line moves."""
        if self.direction is None:
            return np.ones(len(boxes), dtype=bool)
        return np.array([self._position(box, self.direction, frame_wh) < self.decide_at for box in boxes], dtype=bool)

    @property
    def open_parts(self) -> int:
        return sum(1 for part in self._parts.values() if not part.decided)

    def update(self, frame: Frame, detections: Detections,
               parts: tuple[np.ndarray, np.ndarray] | None = None) -> LineFrame:
        """``parts``: the finder's answer for this frame when the caller already asked it (the station scores
        the parts with the anomaly model and appends those detections before the parts are judged)."""
        self._tick += 1
        boxes, maybe_defect = parts if parts is not None else self.finder(frame, detections)
        boxes = self.tracker.split_merged(boxes, frame.size_wh)
        ids = self.tracker.update(boxes, frame.size_wh)
        owner = _owners(detections.xyxy, boxes) if len(detections) else np.zeros(0, dtype=np.int64)
        owner[~maybe_defect] = -2  # the part class itself: neither a defect nor belt
        eligible = self.rules.eligible_mask(detections) & maybe_defect
        # RejectRules.mask, from the per-class arrays built once here (it would redo eligibility and name lookups
        # on every frame); float32 on both sides, as the rules compare.
        classes = detections.class_id
        counted = eligible & self._rejecting[classes] & (detections.confidence.astype(np.float32) >= self.thresholds[classes])
        off_part = int((counted & (owner == -1)).sum())
        counted &= owner >= 0
        decisions: list[PartDecision] = []
        width, height = frame.size_wh
        for row, track_id in enumerate(ids.tolist()):
            if track_id < 0:
                continue  # a new region, not yet confirmed by the tracker
            part = self._see(int(track_id), boxes[row], frame.size_wh)
            if part.decided or part.fragment:
                continue
            on_part = owner == row
            self._record(part, frame, detections, on_part & eligible, on_part & counted, boxes[row])
            if self.keep_peak:
                self._record_peak(part, frame, detections, boxes[row])
            if self._crossed(part, width, height):
                decisions.append(self._decide(part, frame, reason="line"))
        decisions.extend(self._lost(frame))
        return LineFrame(decisions, boxes, counted, off_part)

    def finish(self, frame: Frame | None, why: str = "the source ended") -> list[PartDecision]:
        """At the end of a run: parts that already left are decided; parts still in view, seen only in part,
        get an ``error`` decision (``why`` says what stopped the run), never a guess and never nothing."""
        if frame is None:
            return []
        decisions = []
        for part in list(self._parts.values()):
            if part.decided:
                continue
            if part.last_tick < self._tick:
                decision = self._on_leaving(part, frame)
            elif part.fragment or len(part.scores) < PART_CONFIRM_FRAMES:
                self.discarded_regions += 1
                decision = None
            else:
                decision = self._decide(part, frame, reason="stopped")
                decision = replace(decision, decision="error", defects=Detections.empty(),
                                   message=f"part {decision.part_id} was still in view when {why} "
                                           f"(seen on {len(part.scores)} frame(s), before the decision line): "
                                           "not inspected")
            if decision is not None:
                decisions.append(decision)
        self._parts.clear()
        return decisions

    # -- internals ------------------------------------------------------------------------------------

    def _see(self, track_id: int, box: np.ndarray, frame_wh: tuple[int, int]) -> _Part:
        part = self._parts.pop(track_id, None)
        if part is None:
            part = _Part(track_id=track_id, box=box, last_tick=self._tick)
            if self.direction is not None and self._position(box, self.direction, frame_wh) >= self.decide_at:
                part.fragment = True
        part.box, part.last_tick = box, self._tick
        part.sightings += 1
        self._parts[track_id] = part  # most recently seen last
        return part

    def _record(self, part: _Part, frame: Frame, detections: Detections, eligible: np.ndarray, counted: np.ndarray,
                box: np.ndarray) -> None:
        part.scores.append(class_maxima(detections, eligible, self.class_count))
        if counted.any():
            mine = detections.filter(counted)
            # The evidence frame: the one showing the most classes at their thresholds (an anomaly reject scored
            # only while the part is whole in view must not lose to a detector hit on the entering part), then
            # the most confident defect, then the frame showing most of the part.
            over = mine.confidence - self.thresholds[mine.class_id]
            classes_at_threshold = len(np.unique(mine.class_id[over >= 0]))
            key = (classes_at_threshold, round(float(over.max()), 2), float((box[2] - box[0]) * (box[3] - box[1])))
            if key > part.best_key:
                part.best_key, part.best = key, (frame, mine, box.copy())

    def _record_peak(self, part: _Part, frame: Frame, detections: Detections, box: np.ndarray) -> None:
        scores = part.scores[-1][self.reject_ids]
        ratio = float((scores / np.maximum(self.thresholds[self.reject_ids], 1e-6)).max()) if len(scores) else 0.0
        key = (round(ratio, 3), float((box[2] - box[0]) * (box[3] - box[1])))
        if key > part.peak_key:
            part.peak_key, part.peak = key, (frame, detections, box.copy())

    def _crossed(self, part: _Part, width: int, height: int) -> bool:
        # The direction comes from the distance the part's edges travelled (not its centre: a part entering the
        # view grows, and its box's height still settles on the first frames), and must clearly dominate.
        moved = self.tracker.travel(part.track_id)
        if self.direction is not None:
            # The line's direction is known: a part must have moved that way. (Its own estimate is noisy while it
            # enters: a thin strip's top and bottom edges can jump further than it moved; seen on DeepPCB.)
            axis, sign = self.direction
            if sign * float(moved[axis]) < MIN_MOTION_PX:
                return False
            return self._position(part.box, self.direction, (width, height)) >= self.decide_at
        axis = int(np.argmax(np.abs(moved)))
        if (len(part.scores) < PART_CONFIRM_FRAMES + 1 or abs(float(moved[axis])) < 2 * MIN_MOTION_PX
                or abs(float(moved[axis])) < 2 * abs(float(moved[1 - axis]))):
            return False
        direction = (axis, 1 if moved[axis] > 0 else -1)
        if self._position(part.box, direction, (width, height)) < self.decide_at:
            return False
        if self.direction is None and len(part.scores) >= self.needed_frames:
            self.direction = direction
        return True

    @staticmethod
    def _position(box: np.ndarray, direction: tuple[int, int], frame_wh: tuple[int, int]) -> float:
        """Where the box's centre is along the way parts move: 0 at the entry edge, 1 at the exit edge."""
        axis, sign = direction
        position = float(_centre(box)[axis]) / frame_wh[axis]
        return position if sign > 0 else 1.0 - position

    def _decide(self, part: _Part, frame: Frame, *, reason: str) -> PartDecision:
        part.decided = True
        number = self._next_number
        self._next_number += 1
        scores = np.stack(part.scores) if part.scores else np.zeros((0, self.class_count), np.float32)
        kept = scores if self.keep_scores else None
        peak = part.peak if self.keep_peak else None
        frames = len(part.scores)
        if frames < self.needed_frames:
            where = {"line": "at the decision line", "lost": "when it left the view"}.get(reason, "")
            message = (f"part {number} was seen on only {frames} frame(s) {where}; the rule needs "
                       f"{self.needed_frames} (min_frames {self.min_frames}): not inspected")
            return PartDecision("error", number, Detections.empty(), frame, part_box=part.box.copy(), message=message,
                                scores=kept, peak=peak)
        if part_rejected(scores, self.thresholds, self.reject_ids, self.min_frames) and part.best is not None:
            best_frame, defects, box = part.best
            hits = (scores >= self.thresholds) & (scores > 0)
            rejecting = np.flatnonzero((hits.sum(axis=0) >= self.min_frames) & self._rejecting)
            defects = defects.filter(np.isin(defects.class_id, rejecting)) if len(rejecting) else defects
            return PartDecision("reject", number, defects, best_frame, part_box=box, decided_frame=frame, scores=kept,
                                peak=peak)
        return PartDecision("pass", number, Detections.empty(), frame, part_box=part.box.copy(), scores=kept,
                            emit=self.emit_pass, peak=peak)

    def _on_leaving(self, part: _Part, frame: Frame) -> PartDecision | None:
        if part.fragment or len(part.scores) < PART_CONFIRM_FRAMES or (len(part.scores) < self.needed_frames and not self._moved(part)):
            self.discarded_regions += 1
            logger.debug("region %d seen on %d frame(s) never reached the decision line: not a part",
                         part.track_id, len(part.scores))
            return None
        return self._decide(part, frame, reason="lost")

    def _moved(self, part: _Part) -> bool:
        return float(np.abs(self.tracker.travel(part.track_id)).max()) >= MIN_MOTION_PX

    def _lost(self, frame: Frame) -> list[PartDecision]:
        decisions = []
        horizon = self._tick - LOST_AFTER_FRAMES
        while self._parts:
            track_id, part = next(iter(self._parts.items()))
            if part.last_tick > horizon and len(self._parts) <= MAX_OPEN_PARTS:
                break
            self._parts.popitem(last=False)
            if not part.decided:
                decision = self._on_leaving(part, frame)
                if decision is not None:
                    decisions.append(decision)
        return decisions


@dataclass
class _Track:
    box: list[float]  # xyxy, frame pixels
    speed: list[float]  # x, y pixels per processed frame (smoothed)
    known: bool = False  # speed measured at least once
    unseen: int = 0  # processed frames since last matched
    travel: list[float] = field(default_factory=lambda: [0.0, 0.0])  # x, y distance its unclipped edges moved

    def predicted(self, frame_wh: tuple[int, int]) -> list[float]:
        """Where the box will be on the next frame, by its speed, clipped to the frame."""
        return _clip(_shifted(self.box, self.speed), frame_wh)


class PartTracker:
    """Ids for part boxes across frames of a moving line: each track's box is predicted by its speed, measured on
    the edges the frame does not clip, and matched to this frame's boxes by IoU (greedy, best first). Plain Python
    floats: a handful of parts per frame, where numpy's per-call cost would dominate."""

    MATCH_IOU = 0.3
    HELD_FRACTION = 0.8  # of a part's predicted box inside another box: the part is in it (split_merged)
    FORGET_AFTER_FRAMES = LOST_AFTER_FRAMES

    def __init__(self) -> None:
        self._tracks: dict[int, _Track] = {}
        self._next_id = 1

    def travel(self, track_id: int) -> np.ndarray:
        """How far (x, y pixels) the part moved since it was first seen, measured on edges the frame does not clip."""
        track = self._tracks.get(track_id)
        return np.array(track.travel if track is not None else (0.0, 0.0))

    def split_merged(self, boxes: np.ndarray, frame_wh: tuple[int, int]) -> np.ndarray:
        """``boxes`` with every box that holds two or more moving parts replaced by those parts' predicted boxes.

        Two parts never overlap, so one box around two tracked parts is the part finder bridging the gap between
        them (seen on NEU-DET steel on a green belt at 12 px/frame: a belt cleat in a 22 px gap, and the edge
        contrast of a dark part, joined two parts for 4 frames into one 424 px box, which took one track and lost
        the other). A part is "held" when its predicted box lies at least :attr:`HELD_FRACTION` inside the box;
        the pieces keep the merged box's outer edges along the way the parts lie apart (a part entering or
        leaving is clipped by the frame there) and its extent across."""
        if len(boxes) == 0 or not self._tracks:
            return boxes
        predicted = [t.predicted(frame_wh) for t in self._tracks.values() if t.known and t.unseen == 0]
        result: list[list[float]] = []
        for box in boxes.tolist():
            held = [p for p in predicted if _area(p) > 0 and _intersection(p, box) >= self.HELD_FRACTION * _area(p)]
            axis = _apart_axis(held) if len(held) >= 2 else None
            if axis is None:
                result.append(box)
                continue
            held.sort(key=lambda p: p[axis])
            pieces = [[p[0], box[1], p[2], box[3]] if axis == 0 else [box[0], p[1], box[2], p[3]] for p in held]
            pieces[0][axis], pieces[-1][axis + 2] = box[axis], box[axis + 2]
            result.extend(pieces)
        return np.array(result, dtype=np.float32).reshape(-1, 4)

    def update(self, boxes: np.ndarray, frame_wh: tuple[int, int]) -> np.ndarray:
        """(N,) track ids for ``boxes`` (N, 4) on a frame of size ``frame_wh``."""
        rows: list[list[float]] = boxes.tolist()
        ids = [-1] * len(rows)
        track_ids = list(self._tracks)
        predicted = [self._tracks[t].predicted(frame_wh) for t in track_ids]
        score = [[_iou(p, box) for box in rows] for p in predicted]
        for row, track_id in enumerate(track_ids):
            if not self._tracks[track_id].known:  # seen once: on a fast line its next box may not overlap it
                for col, box in enumerate(rows):
                    if score[row][col] < self.MATCH_IOU and _near(predicted[row], box):
                        score[row][col] = self.MATCH_IOU * (1.0 - _centre_distance(predicted[row], box) / 1e6)
        # Best pair first; equal scores in row-major order (sorted is stable).
        pairs = sorted(((score[row][col], row, col) for row in range(len(track_ids)) for col in range(len(rows))),
                       key=lambda pair: -pair[0])
        matched: set[int] = set()
        for value, row, col in pairs:
            if value < self.MATCH_IOU * 0.999:
                break
            if row in matched or ids[col] >= 0:
                continue
            track = self._tracks[track_ids[row]]
            step = _edge_motion(track.box, rows[col], frame_wh)
            for axis in (0, 1):
                if step[axis] is not None:
                    track.travel[axis] += step[axis]
                    track.speed[axis] = step[axis] if not track.known else 0.5 * track.speed[axis] + 0.5 * step[axis]
            track.box, track.known, track.unseen = rows[col], True, 0
            matched.add(row)
            ids[col] = track_ids[row]
        for row, track_id in enumerate(track_ids):
            if row not in matched:
                track = self._tracks[track_id]
                track.unseen += 1
                if track.unseen >= self.FORGET_AFTER_FRAMES:
                    del self._tracks[track_id]
                else:  # coast: a part missed on one frame keeps moving
                    track.box = _shifted(track.box, track.speed)
        for col, track_id in enumerate(ids):
            if track_id < 0:
                ids[col] = self._next_id
                self._tracks[self._next_id] = _Track(box=rows[col], speed=[0.0, 0.0])
                self._next_id += 1
        return np.array(ids, dtype=np.int64)


def _area(box: list[float]) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def _intersection(a: list[float], b: list[float]) -> float:
    return _area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])


def _iou(a: list[float], b: list[float]) -> float:
    """IoU as :func:`yolodefect.detections.box_iou` computes it, on plain floats (a few boxes per frame)."""
    intersection = _intersection(a, b)
    union = _area(a) + _area(b) - intersection
    return intersection / union if union > 0 else 0.0


def _apart_axis(boxes: list[list[float]]) -> int | None:
    """0 (x) or 1 (y) when the boxes, sorted along it, follow each other (overlapping by at most a tenth of the
    smaller one: predictions can be a few pixels off); None otherwise."""
    for axis in (0, 1):
        ordered = sorted(boxes, key=lambda b: b[axis])
        if all(first[axis + 2] - second[axis]
               <= 0.1 * min(first[axis + 2] - first[axis], second[axis + 2] - second[axis])
               for first, second in zip(ordered, ordered[1:])):
            return axis
    return None


def _near(predicted: list[float], box: list[float]) -> bool:
    """Whether ``box`` lies within one part size of a part seen once (parts follow each other at least a gap apart)."""
    size = max(predicted[2] - predicted[0], predicted[3] - predicted[1], box[2] - box[0], box[3] - box[1])
    return _centre_distance(predicted, box) <= size


def _centre_distance(a: list[float], b: list[float]) -> float:
    return math.hypot((a[0] + a[2] - b[0] - b[2]) / 2.0, (a[1] + a[3] - b[1] - b[3]) / 2.0)


def _shifted(box: list[float], speed: list[float]) -> list[float]:
    return [box[0] + speed[0], box[1] + speed[1], box[2] + speed[0], box[3] + speed[1]]


def _edge_motion(previous: list[float], box: list[float], frame_wh: tuple[int, int]) -> tuple[float | None, float | None]:
    """(x, y) pixels moved between two boxes of one part, from the edges neither box has on the frame border
    (None on an axis where every edge is clipped: a part wider than the view)."""
    motion: list[float | None] = [None, None]
    for axis, size in ((0, float(frame_wh[0])), (1, float(frame_wh[1]))):
        moves = [box[edge] - previous[edge] for edge, border in ((axis, 0.0), (axis + 2, size))
                 if abs(box[edge] - border) > 1.0 and abs(previous[edge] - border) > 1.0]
        if moves:
            motion[axis] = sum(moves) / len(moves)
    return motion[0], motion[1]


def _clip(box: list[float], frame_wh: tuple[int, int]) -> list[float]:
    width, height = frame_wh
    return [min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
            min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)]


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0], dtype=np.float64)


def _owners(xyxy: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """(N,) index of the smallest part box holding each detection's centre, -1 for none."""
    owner = np.full(len(xyxy), -1, dtype=np.int64)
    if len(parts) == 0:
        return owner
    centres = (xyxy[:, 0:2] + xyxy[:, 2:4]) / 2.0
    inside = ((centres[:, None, 0] >= parts[None, :, 0]) & (centres[:, None, 0] <= parts[None, :, 2])
              & (centres[:, None, 1] >= parts[None, :, 1]) & (centres[:, None, 1] <= parts[None, :, 3]))
    area = (parts[:, 2] - parts[:, 0]) * (parts[:, 3] - parts[:, 1])
    ranked = np.where(inside, area[None, :], np.inf)
    best = ranked.argmin(axis=1)
    owner[inside.any(axis=1)] = best[inside.any(axis=1)]
    return owner
