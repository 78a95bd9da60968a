"""Parts on a moving line: found on the belt, tracked, decided once each by the k-of-n rule.

Videos come from the conveyor generator (parts of several widths, gaps down to 20 px, a textured
belt, lighting flicker); the detector is a fake that returns the defects the generator placed (and
belt false positives where a test needs them), so what is tested is the station's part logic.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from yolodefect.data.conveyor import ConveyorTruth, write_conveyor_video
from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.inference.rules import RejectRules
from yolodefect.stream.line import LinePartDecider, PartTracker, kth_largest, part_rejected
from yolodefect.stream.options import WatchOptions, load_station_config
from yolodefect.stream.part_finder import BeltModel
from yolodefect.stream.parts import ImagePartDecider
from yolodefect.stream.sources import Frame
from yolodefect.stream.watch import watch
from tests.builders import detections

BELT_FRAMES = 30
WIDTHS = [60, 200, 120, 90, 150, 60, 200, 120, 90, 150, 100, 80]
DEFECTIVE = {1, 4, 5, 9}


def line_video(path: Path, **overrides: Any) -> ConveyorTruth:
    values: dict[str, Any] = dict(parts=len(WIDTHS), defective=DEFECTIVE, seed=5, frame_size=(480, 200),
                                  part_size=(120, 110), part_widths=WIDTHS, gap_px=(20, 60),
                                  lead_in_frames=BELT_FRAMES + 5, flicker=0.1, textured_belt=True, speed_px_per_frame=12)
    values.update(overrides)
    return write_conveyor_video(path, **values)


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> ConveyorTruth:
    return line_video(tmp_path_factory.mktemp("line") / "line.avi")


class TruthDetector:
    """The defects the generator placed, frame by frame (the station skips the belt-learning frames), plus
    ``belt_boxes`` (false positives on the belt) and ``flicker``: (part index, frame) pairs seen on one frame only."""

    def __init__(self, truth: ConveyorTruth, *, start: int = BELT_FRAMES, belt_boxes: list | None = None,
                 confidence: float = 0.9, good_part_blips: dict[int, set[int]] | None = None):
        self.truth = truth
        self.frame = start
        self.class_names = list(truth.class_names)
        self.belt_boxes = belt_boxes or []
        self.confidence = confidence
        self.blips = good_part_blips or {}

    def __call__(self, image: np.ndarray) -> Detections:
        visible = self.truth.visible_defects(self.frame)
        rows = [(v.xyxy, self.confidence, v.class_id) for v in visible]
        for part, frames in self.blips.items():
            box = self.truth.part_box(part, self.frame)
            if self.frame in frames and box is not None:
                x1, y1, x2, y2 = box
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                rows.append(((cx - 5, cy - 5, cx + 5, cy + 5), 0.95, 0))
        rows += [(box, 0.95, 0) for box in self.belt_boxes]
        self.frame += 1
        if not rows:
            return Detections.empty()
        return Detections(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))


def run_watch(tmp_path: Path, truth: ConveyorTruth, detector: TruthDetector, **overrides: Any) -> tuple[Any, list[dict]]:
    values: dict[str, Any] = dict(source=str(truth.path), sinks=(str(tmp_path / "events.jsonl"),),
                                  outbox=tmp_path / "outbox.sqlite", evidence_dir=tmp_path / "evidence",
                                  belt_frames=BELT_FRAMES, emit_pass=True)
    values.update(overrides)
    summary = watch(WatchOptions(**values), detector=detector)
    events_file = tmp_path / "events.jsonl"
    events = [json.loads(row) for row in events_file.read_text().splitlines()] if events_file.exists() else []
    return summary, events


def truth_part(truth: ConveyorTruth, event: dict) -> int | None:
    """The generator's part under the event's part box on its frame (None: no part there)."""
    x1, _, x2, _ = event["part_bbox_xyxy"]
    centre = (x1 + x2) / 2
    for part in truth.parts:
        box = truth.part_box(part.index, event["frame_index"])
        if box is not None and box[0] <= centre <= box[2]:
            return part.index
    return None


# -- finding parts ----------------------------------------------------------------------------------


def test_every_part_found_once_with_small_gaps_flicker_and_texture(line: ConveyorTruth, tmp_path: Path) -> None:
    gaps = [b.offset_px - a.offset_px - a.size[0] for a, b in zip(line.parts, line.parts[1:])]
    assert min(gaps) == 20 and len({p.size[0] for p in line.parts}) == 7  # the hard case is in the video
    summary, events = run_watch(tmp_path, line, TruthDetector(line))
    assert [e["part_id"] for e in events] == list(range(1, len(WIDTHS) + 1))  # one decision per part, in order
    assert [truth_part(line, e) for e in events] == list(range(len(WIDTHS)))  # none merged, none split
    rejected = {truth_part(line, e) for e in events if e["decision"] == "reject"}
    assert rejected == DEFECTIVE
    assert summary.stats.rejects == len(DEFECTIVE) and summary.stats.passes == len(WIDTHS) - len(DEFECTIVE)
    assert summary.stats.errors == 0 and summary.stats.belt_frames == BELT_FRAMES
    for event in events:
        if event["decision"] == "reject":
            part = truth_part(line, event)
            assert {d["class"] for d in event["defects"]} == set(line.parts[part].classes)
            assert Path(event["snapshot_paths"]["annotated"]).is_file()


def test_the_belt_alone_gives_no_event(tmp_path: Path) -> None:
    # Texture, flicker and a model that sees a "defect" on the belt on every frame: nothing is emitted.
    belt_only = line_video(tmp_path / "belt.avi", parts=1, defective=set(), part_widths=[60], lead_in_frames=150,
                           flicker=0.15)
    detector = TruthDetector(belt_only, belt_boxes=[(3, 3, 30, 30), (200, 160, 240, 196)])
    summary, events = run_watch(tmp_path, belt_only, detector, max_frames=BELT_FRAMES + 110)
    assert events == []
    assert summary.stats.off_part_detections == 2 * 110
    assert summary.stats.parts == 0 and summary.stats.discarded_regions == 0


def test_belt_detections_between_parts_are_never_defects(line: ConveyorTruth, tmp_path: Path) -> None:
    detector = TruthDetector(line, belt_boxes=[(2, 2, 20, 20)])  # above every part: the top rail
    summary, events = run_watch(tmp_path, line, detector)
    assert {truth_part(line, e) for e in events if e["decision"] == "reject"} == DEFECTIVE
    assert summary.stats.off_part_detections > 100


def test_a_defect_on_one_frame_of_sixty_does_not_reject_at_k_above_one(line: ConveyorTruth, tmp_path: Path) -> None:
    blip = {0: {50}, 2: {70, 71}}  # good part 0 on one frame; good part 2 on two frames
    for k, rejected_good in ((1, {0, 2}), (2, {2}), (3, set())):
        folder = tmp_path / f"k{k}"
        folder.mkdir()
        _, events = run_watch(folder, line, TruthDetector(line, good_part_blips=blip), min_frames=k)
        rejected = {truth_part(line, e) for e in events if e["decision"] == "reject"}
        assert rejected == DEFECTIVE | rejected_good, k


def test_a_part_seen_on_too_few_frames_is_an_error_not_a_pass(tmp_path: Path) -> None:
    # 80 px per frame: a 60 px part crosses a 480 px view in ~7 frames; k = 10 cannot be judged.
    fast = line_video(tmp_path / "fast.avi", parts=3, defective=set(), part_widths=[100, 100, 100], gap_px=60,
                      speed_px_per_frame=80, flicker=0.0)
    summary, events = run_watch(tmp_path, fast, TruthDetector(fast), min_frames=10, min_part_frames=2)
    assert [e["decision"] for e in events] == ["error"] * 3
    assert all("seen on only" in e["message"] for e in events)


def test_fail_safe_off_stops_on_a_part_that_cannot_be_inspected(tmp_path: Path) -> None:
    from yolodefect.stream.parts import PartNotInspectedError

    fast = line_video(tmp_path / "fast.avi", parts=3, defective=set(), part_widths=[100, 100, 100], gap_px=60,
                      speed_px_per_frame=80, flicker=0.0)
    with pytest.raises(PartNotInspectedError, match="part 1 was seen on only .* fail_safe=off stops the run"):
        run_watch(tmp_path, fast, TruthDetector(fast), min_frames=10, min_part_frames=2, fail_safe="off")


def test_a_part_in_view_when_the_station_stops_gets_an_error(line: ConveyorTruth, tmp_path: Path) -> None:
    summary, events = run_watch(tmp_path, line, TruthDetector(line), max_frames=BELT_FRAMES + 30)
    assert events and events[-1]["decision"] == "error"
    assert "still in view when the station stopped" in events[-1]["message"]
    assert summary.stats.parts + summary.stats.errors == len(events)


def test_belt_learned_from_a_separate_recording(line: ConveyorTruth, tmp_path: Path) -> None:
    empty = line_video(tmp_path / "empty.avi", parts=1, defective=set(), part_widths=[60], lead_in_frames=60, seed=9)
    # The line video's own lead-in is then inspected like any frame: the detector sees every frame from 0.
    summary, events = run_watch(tmp_path, line, TruthDetector(line, start=0), belt=empty.path)
    assert summary.stats.belt_frames == 0
    assert {truth_part(line, e) for e in events if e["decision"] == "reject"} == DEFECTIVE
    assert len(events) == len(WIDTHS)


def test_part_class_finds_parts_from_the_model(tmp_path: Path) -> None:
    truth = line_video(tmp_path / "line.avi", parts=4, defective={2}, part_widths=[120, 120, 120, 120], flicker=0.0)

    class WithParts(TruthDetector):
        def __init__(self) -> None:
            super().__init__(truth, start=0)
            self.class_names = [*truth.class_names, "part"]

        def __call__(self, image: np.ndarray) -> Detections:
            frame = self.frame
            found = super().__call__(image)
            parts = [truth.part_box(p.index, frame) for p in truth.parts]
            parts = [b for b in parts if b is not None and b[2] - b[0] > 30]
            return Detections(np.concatenate([found.xyxy.reshape(-1, 4), np.array(parts, np.float32).reshape(-1, 4)]),
                              np.concatenate([found.confidence, np.full(len(parts), 0.9)]),
                              np.concatenate([found.class_id, np.full(len(parts), len(truth.class_names))]))

    summary, events = run_watch(tmp_path, truth, WithParts(), parts="class")
    assert [truth_part(truth, e) for e in events] == [0, 1, 2, 3]
    assert [e["decision"] for e in events] == ["pass", "pass", "reject", "pass"]
    assert summary.stats.belt_frames == 0


def test_part_class_missing_from_the_model_is_a_usage_error(line: ConveyorTruth, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="class 'part'"):
        run_watch(tmp_path, line, TruthDetector(line), parts="class")


# -- the pieces -------------------------------------------------------------------------------------


def test_the_rule_and_its_search_form_agree() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        scores = rng.choice([0.0, 0.2, 0.4, 0.6, 0.8], size=(int(rng.integers(0, 12)), 3)).astype(np.float32)
        thresholds = rng.choice([0.2, 0.4, 0.6], size=3).astype(np.float32)
        k = int(rng.integers(1, 6))
        fast = bool(((kth_largest(scores, k) >= thresholds) & (kth_largest(scores, k) > 0))[[0, 2]].any())
        assert part_rejected(scores, thresholds, [0, 2], k) == fast


def test_part_tracker_keeps_ids_while_parts_enter_and_leave() -> None:
    tracker = PartTracker()
    ids = []
    for step in range(40):  # a 100 px part at 25 px/frame through a 400 px view, then the next one
        boxes = []
        for offset in (0, 160):
            right = 25 * step - offset
            x1, x2 = max(0, right - 100), min(400, right)
            if x2 - x1 > 5:
                boxes.append((x1, 10, x2, 90))
        ids.append(tracker.update(np.array(boxes, np.float32).reshape(-1, 4), (400, 100)).tolist())
    assert sorted({i for row in ids for i in row}) == [1, 2]


def test_belt_model_refuses_frames_of_another_size() -> None:
    belt = BeltModel.learn([np.full((60, 80, 3), 60, np.uint8)] * 3)
    with pytest.raises(UsageError, match="differs from the belt model"):
        belt.find(np.full((60, 90, 3), 60, np.uint8))


def test_image_mode_one_decision_per_frame() -> None:
    frame = Frame(np.zeros((8, 8, 3), np.uint8), 5, datetime.now(timezone.utc), "test", "part_0005.png")
    assert ImagePartDecider().update(frame, detections([(0, 0, 4, 4)]))[0].part_id == "part_0005.png"
    unasked = ImagePartDecider().update(frame, Detections.empty())  # a pass still, counted but not emitted
    assert [(d.decision, d.emit) for d in unasked] == [("pass", False)]
    assert ImagePartDecider(emit_pass=True).update(frame, Detections.empty())[0].decision == "pass"


def test_decider_options_are_checked() -> None:
    rules = RejectRules()
    with pytest.raises(UsageError, match="decide_at"):
        LinePartDecider(lambda f, d: (np.zeros((0, 4)), np.zeros(0, bool)), {0: "x"}, rules, decide_at=1.0)


def test_removed_part_merge_px_is_explained(tmp_path: Path) -> None:
    config = tmp_path / "station.yaml"
    config.write_text("source: 0\npart_merge_px: 150\n")
    with pytest.raises(UsageError, match="part_merge_px.*was removed"):
        load_station_config(config)


def test_a_leaving_part_that_splits_at_the_exit_edge_is_still_one_decision() -> None:
    # Seen on DeepPCB at 12 px/frame: with 32 px of a part left in view, the belt model found its lower half as a
    # region of its own. It is the tail of a part already decided, not a new part with too few frames.
    width, speed, part_w = 480, 12, 120

    def finder(frame: Frame, found: Detections) -> tuple[np.ndarray, np.ndarray]:
        boxes = []
        for offset in (0, 200, 400):
            right = speed * frame.index - offset
            x1, x2 = max(0, right - part_w), min(width, right)
            if x2 - x1 <= 4:
                continue
            if x1 >= width - 40:  # the last strip comes apart in two
                boxes += [(x1, 40, x2, 100), (x1 + 2, 104, x2, 160)]
            else:
                boxes.append((x1, 40, x2, 160))
        return np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(found), bool)

    decider = LinePartDecider(finder, {0: "scratch"}, RejectRules(), emit_pass=True)
    image = np.zeros((200, width, 3), np.uint8)
    decisions = []
    for index in range(1, 100):
        frame = Frame(image, index, datetime.now(timezone.utc), "test")
        decisions += decider.update(frame, Detections.empty()).decisions
    decisions += decider.finish(frame)
    assert [(d.decision, d.part_id) for d in decisions] == [("pass", 1), ("pass", 2), ("pass", 3)]
    assert decider.direction == (0, 1) and decider.discarded_regions >= 1


def test_two_parts_the_finder_joins_for_a_few_frames_stay_two_decisions() -> None:
    # Seen on NEU-DET steel on a green belt at 12 px/frame: a belt cleat in a 22 px gap bridged two parts into one
    # box for 4 frames; one track took it and the other was lost ("1 part without a decision"). A defect on the
    # second part, seen only while they were joined, must reject the second part and not the first.
    width, speed, part_w, gap = 640, 12, 200, 22
    starts = (0, part_w + gap, 2 * (part_w + gap))

    def part_box(part: int, index: int) -> tuple[float, float, float, float] | None:
        right = speed * index - starts[part]
        x1, x2 = max(0, right - part_w), min(width, right)
        return (x1, 60, x2, 260) if x2 - x1 > 4 else None

    joined = set(range(30, 34)) | {38}

    def finder(frame: Frame, found: Detections) -> tuple[np.ndarray, np.ndarray]:
        boxes = [box for part in range(3) if (box := part_box(part, frame.index)) is not None]
        if frame.index in joined:  # parts 0 and 1 as one box, from the left edge of 1 to the right edge of 0
            first, second = part_box(0, frame.index), part_box(1, frame.index)
            boxes = [(second[0], 55, first[2], 262)] + [b for b in boxes if b not in (first, second)]
        return np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(found), bool)

    decider = LinePartDecider(finder, {0: "scratch"}, RejectRules(default_conf=0.5), min_frames=3,
                              emit_pass=True)
    image = np.zeros((320, width, 3), np.uint8)
    decisions, split_frames = [], []
    for index in range(1, 120):
        frame = Frame(image, index, datetime.now(timezone.utc), "test")
        found = Detections.empty()
        if index in joined:
            x1, y1, x2, y2 = part_box(1, index)
            cx = (x1 + x2) / 2
            found = detections([(cx - 8, 150, cx + 8, 170)], conf=0.9)
        result = decider.update(frame, found)
        if index in joined:
            split_frames.append(len(result.part_boxes))
        decisions += result.decisions
    decisions += decider.finish(frame)
    assert [(d.part_id, d.decision) for d in decisions] == [(1, "pass"), (2, "reject"), (3, "pass")]
    assert split_frames == [2, 2, 2, 2, 3]  # the third part comes into view at frame 38


def test_a_thin_entering_part_whose_box_jumps_vertically_is_not_decided_early() -> None:
    # Seen on DeepPCB at 24 px/frame: a part 36 px into the view, its box's top edge jumping 20 px between frames,
    # was taken as moving up, "crossed" the middle and got an error with 2 frames. Parts move the line's way.
    width, speed, part_w = 480, 24, 150

    def finder(frame: Frame, found: Detections) -> tuple[np.ndarray, np.ndarray]:
        boxes = []
        for offset in (0, 200):
            right = speed * frame.index - offset
            x1, x2 = max(0, right - part_w), min(width, right)
            if x2 - x1 > 4:  # a thin strip is found in part: only its lower end, the first time
                boxes.append((x1, 130 if x2 - x1 < 30 else 10, x2, 190))
        return np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(found), bool)

    decider = LinePartDecider(finder, {0: "scratch"}, RejectRules(), emit_pass=True)
    image = np.zeros((200, width, 3), np.uint8)
    decisions = []
    for index in range(1, 60):
        frame = Frame(image, index, datetime.now(timezone.utc), "test")
        decisions += decider.update(frame, Detections.empty()).decisions
    assert [(d.decision, d.part_id) for d in decisions] == [("pass", 1), ("pass", 2)]


def test_parts_the_belt_model_would_miss_or_split() -> None:
    # NEU-DET steel on a grey belt: a part of the belt's own tone shows only its texture, and a part whose surface
    # matches the belt in places falls apart into pieces. One box each, and none on the belt.
    rng = np.random.default_rng(0)
    belt = [np.clip(58 + rng.normal(0, 2, (200, 480, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2) for _ in range(10)]
    model = BeltModel.learn(belt)
    frame = belt[0].copy()
    checker = np.where((np.indices((120, 100)).sum(axis=0) // 4) % 2 == 0, 44, 72).astype(np.uint8)  # mean 58
    frame[40:160, 40:140] = checker[..., None]
    frame[40:160, 260:380] = 160  # a bright ring around a belt-toned middle holding a bright spot
    frame[60:140, 280:360] = 58
    frame[85:115, 305:335] = 160
    boxes, _ = model.find(frame)
    found = np.array(sorted(box.tolist() for box in boxes))
    assert found.shape == (2, 4)  # within one working pixel (4 px here) of each part
    assert np.abs(found - np.array([[40, 40, 140, 160], [260, 40, 380, 160]])).max() <= 4
    assert len(model.find(belt[5])[0]) == 0


def test_the_evidence_frame_shows_every_class_that_rejected_the_part() -> None:
    # Seen in the demo: the detector saw "patch" at 0.9 while a contaminated part was entering, the anomaly stage
    # (which scores a part only when it is whole in view) at 0.6 later; the event must name both, not only the
    # class whose single hit was the most confident.
    width, speed, part_w = 480, 12, 120

    def finder(frame: Frame, found: Detections) -> tuple[np.ndarray, np.ndarray]:
        right = speed * frame.index
        x1, x2 = max(0, right - part_w), min(width, right)
        boxes = [(x1, 40, x2, 160)] if x2 - x1 > 4 else []
        return np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(found), bool)

    decider = LinePartDecider(finder, {0: "patch", 1: "anomaly"}, RejectRules(default_conf=0.5), min_frames=2)
    image = np.zeros((200, width, 3), np.uint8)
    decisions = []
    for index in range(1, 40):
        right = speed * index
        if index <= 9:  # entering: the detector's most confident hits
            found = detections([(right - 30, 60, right - 10, 80)], conf=0.9, classes=0)
        else:  # whole in view: both models, the detector less sure
            found = detections([(right - 30, 60, right - 10, 80), (right - 100, 90, right - 60, 130)],
                               conf=[0.55, 0.6], classes=[0, 1])
        decisions += decider.update(Frame(image, index, datetime.now(timezone.utc), "test"), found).decisions
    (decision,) = decisions
    assert decision.decision == "reject"
    assert sorted(decider.names[int(c)] for c in decision.defects.class_id) == ["anomaly", "patch"]


def test_a_coloured_belt_shows_parts_of_the_grey_belts_own_tone(tmp_path: Path) -> None:
    """Grey parts of every tone, the grey belt's own among them: on a green belt each is found once (on the grey
    belt the belt-toned ones are not: bench/line.py's NEU-DET half), so a line can pick a belt for its parts."""
    tones = [58, 30, 58, 120, 200, 58, 240, 90]
    rng = np.random.default_rng(3)
    images = [(np.clip(tone + rng.integers(-3, 4, size=(100, 110, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2), [])
              for tone in tones]
    truth = write_conveyor_video(tmp_path / "green.avi", part_images=images, class_names=["scratch"], seed=2,
                                 frame_size=(480, 200), gap_px=(20, 40), lead_in_frames=BELT_FRAMES + 5,
                                 flicker=0.05, textured_belt=True, speed_px_per_frame=12, belt_bgr=(60, 140, 60))
    summary, events = run_watch(tmp_path, truth, TruthDetector(truth))
    assert [truth_part(truth, e) for e in events] == list(range(len(tones)))
    assert [e["decision"] for e in events] == ["pass"] * len(tones) and summary.stats.errors == 0
    with pytest.raises(UsageError, match="belt_bgr"):
        write_conveyor_video(tmp_path / "bad.avi", part_images=images, class_names=["scratch"], belt_bgr=(0, 300, 0))
