"""The conveyor generator: every part is exactly where ConveyorTruth says, on the decoded video.

Videos are written as MJPG .avi (lossy), so pixel checks keep a couple of pixels away from edges and
compare grey levels with margins far wider than JPEG error and far narrower than part-vs-belt contrast.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolodefect.data.conveyor import ConveyorTruth, write_conveyor_video
from yolodefect.data.part_truth import KnownPart
from yolodefect.data.records import Box
from yolodefect.errors import UsageError
from tests.builders import read_video

BRIGHT = 220  # the flat parts' grey: the belt (58 +- 12 texture +- 6 noise, rails 90) never comes near it
EDGE = 2  # pixels of JPEG ringing kept clear of at every edge


def decode(path: Path) -> list[np.ndarray]:
    return [cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.int16) for frame in read_video(path)]


def flat_part(width: int, height: int) -> np.ndarray:
    return np.full((height, width, 3), BRIGHT, dtype=np.uint8)


@pytest.fixture(scope="module")
def flat_line(tmp_path_factory: pytest.TempPathFactory):
    """Flat bright parts of several widths and heights, gaps of 20 to 26 px, a textured flickering belt."""
    sizes = [(90, 60), (140, 100), (60, 120), (200, 80), (75, 75), (120, 50)]
    images = [(flat_part(w, h), [Box("scratch", (5.0, 5.0, 20.0, 15.0))] if i % 2 else []) for i, (w, h) in
              enumerate(sizes)]
    truth = write_conveyor_video(tmp_path_factory.mktemp("flat") / "line.avi", part_images=images,
                                 class_names=("scratch", "pit"), frame_size=(320, 160), speed_px_per_frame=7,
                                 gap_px=(20, 26), lead_in_frames=12, flicker=0.15, textured_belt=True, seed=4)
    return truth, decode(truth.path)


def test_every_part_box_holds_the_part_and_nothing_else_does(flat_line) -> None:
    truth, frames = flat_line
    assert len(frames) == truth.frames
    checked_gaps = 0
    for index, frame in enumerate(frames):
        covered = np.zeros(frame.shape, dtype=bool)
        boxes = [box for part in truth.parts if (box := truth.part_box(part.index, index)) is not None]
        assert len(boxes) == len(truth.parts_in_view(index))
        for x1, y1, x2, y2 in boxes:
            covered[y1:y2, x1:x2] = True
            inside = frame[y1 + EDGE:y2 - EDGE, x1 + EDGE:x2 - EDGE]
            if inside.size:
                assert inside.min() > 150, (index, (x1, y1, x2, y2))
        # Everything farther than EDGE from every part box is belt, the 20-26 px gaps included.
        grown = cv2.dilate(covered.astype(np.uint8), np.ones((2 * EDGE + 1, 2 * EDGE + 1), np.uint8)).astype(bool)
        assert frame[~grown].max() < 130, index
        for (ax1, _, ax2, _), (bx1, _, bx2, _) in zip(sorted(boxes), sorted(boxes)[1:]):
            assert 20 <= bx1 - ax2 <= 26  # the gap is kept on the frame, so two parts never touch
            checked_gaps += 1
    assert checked_gaps > 20


def test_part_positions_follow_widths_gaps_and_lead_in(flat_line) -> None:
    truth, _ = flat_line
    speed, lead_in = truth.speed_px_per_frame, truth.lead_in_frames
    for part in truth.parts:
        # right edge = speed * (f - lead_in) - (widths and gaps of the parts before)
        assert truth.part_left(part.index, 50) + part.size[0] == speed * (50 - lead_in) - part.offset_px
        assert truth.part_box(part.index, part.first_frame - 1) is None
        assert truth.part_box(part.index, part.first_frame) is not None
        assert truth.part_box(part.index, part.last_frame) is not None
        assert truth.part_box(part.index, part.last_frame + 1) is None
    for before, after in zip(truth.parts, truth.parts[1:]):
        gap = after.offset_px - before.offset_px - before.size[0]
        assert 20 <= gap <= 26
    assert [p.size for p in truth.parts] == [(90, 60), (140, 100), (60, 120), (200, 80), (75, 75), (120, 50)]
    assert all(p.top == (160 - p.size[1]) // 2 for p in truth.parts)
    assert truth.parts[0].first_frame == lead_in + 1
    assert truth.parts[-1].last_frame == truth.frames - 2  # the last frame shows the empty belt again


def test_truth_reads_back_from_its_json(flat_line) -> None:
    truth, _ = flat_line
    again = ConveyorTruth.from_dict(json.loads(json.dumps(truth.to_dict())))
    assert again == truth
    assert again.part_box(3, 60) == truth.part_box(3, 60)


def test_lead_in_frames_show_only_the_belt(flat_line) -> None:
    truth, frames = flat_line
    for index in range(truth.lead_in_frames + 1):
        assert truth.parts_in_view(index) == []
        assert frames[index].max() < 130, index
    assert frames[truth.lead_in_frames + 3].max() > 150  # the first part is in from then on


def test_flicker_changes_the_brightness_of_whole_frames(tmp_path: Path) -> None:
    common = {"parts": 2, "defective": set(), "frame_size": (160, 96), "part_size": (48, 40), "speed_px_per_frame": 8,
                  "lead_in_frames": 20, "textured_belt": True, "seed": 9}
    steady = decode(write_conveyor_video(tmp_path / "steady.avi", **common).path)
    flickering = decode(write_conveyor_video(tmp_path / "flicker.avi", flicker=0.2, **common).path)
    assert len(steady) == len(flickering)
    gains = np.array([f.mean() / s.mean() for f, s in zip(flickering, steady)])
    assert gains.min() >= 0.78 and gains.max() <= 1.22
    assert gains.max() - gains.min() > 0.2  # drawn per frame over the whole range, not one constant gain
    steady_means = np.array([frame.mean() for frame in steady[:20]])
    assert np.abs(np.diff(steady_means)).max() < 1.0  # without flicker the moving belt changes brightness slowly
    # the gain applies to the belt as well as the parts
    belt_gain = flickering[3][20:70].mean() / steady[3][20:70].mean()
    assert abs(belt_gain - gains[3]) < 0.03


def test_textured_belt_has_low_frequency_blotches(tmp_path: Path) -> None:
    plain = decode(write_conveyor_video(tmp_path / "plain.avi", parts=1, defective=set(), frame_size=(320, 160),
                                        lead_in_frames=2, seed=1).path)[0]
    textured = decode(write_conveyor_video(tmp_path / "textured.avi", parts=1, defective=set(),
                                           frame_size=(320, 160), lead_in_frames=2, textured_belt=True,
                                           seed=1).path)[0]
    def blotch_range(frame: np.ndarray) -> float:  # grey range after a 15 px blur: only low frequencies left
        belt = frame[20:140].astype(np.float32)
        smooth = cv2.blur(belt, (15, 15))[10:-10, 10:-10]
        return float(smooth.max() - smooth.min())
    assert blotch_range(plain) < 8
    assert 12 < blotch_range(textured) < 40


def test_part_images_are_placed_exactly_with_their_defects(tmp_path: Path) -> None:
    cells = (np.indices((64, 96)) // 8).sum(axis=0) % 2  # an 8 px checkerboard: a 1 px shift either way shows
    stripes = np.repeat(np.where(cells == 1, 230, 40).astype(np.uint8)[:, :, None], 3, axis=2)
    boxes = [Box("open", (10.0, 12.0, 30.0, 40.0)), Box("short", (50.0, 5.0, 60.0, 15.0))]
    truth = write_conveyor_video(tmp_path / "images.avi", part_images=[(stripes, boxes), (stripes, [])],
                                 class_names=("open", "short", "spur"), frame_size=(200, 100),
                                 speed_px_per_frame=5, gap_px=20, lead_in_frames=4)
    capture = cv2.VideoCapture(str(truth.path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame.astype(np.int16))
    frame_index = next(f for f in range(truth.frames)
                       if (box := truth.part_box(0, f)) and box[2] - box[0] == 96 and box[0] >= 2)
    x1, y1, x2, y2 = truth.part_box(0, frame_index)
    assert (y1, y2) == ((100 - 64) // 2, (100 - 64) // 2 + 64)

    def error(dx: int, dy: int) -> float:
        shown = frames[frame_index][y1 + dy + 1:y2 + dy - 1, x1 + dx + 1:x2 + dx - 1]
        return float(np.abs(shown - stripes[1:-1, 1:-1].astype(np.int16)).mean())

    assert error(0, 0) < 8
    assert min(error(-1, 0), error(1, 0), error(0, -1), error(0, 1)) > error(0, 0) + 6
    defects = [d for d in truth.visible_defects(frame_index) if d.part_index == 0]
    assert [(d.class_name, d.class_id, d.xyxy) for d in defects] == [
        ("open", 0, (x1 + 10.0, y1 + 12.0, x1 + 30.0, y1 + 40.0)),
        ("short", 1, (x1 + 50.0, y1 + 5.0, x1 + 60.0, y1 + 15.0))]
    assert truth.kind == "images" and truth.class_names == ("open", "short", "spur")
    assert truth.known_parts() == [KnownPart("0", True, ("open", "short")), KnownPart("1", False)]


def test_rendered_parts_of_random_widths_and_small_gaps(tmp_path: Path) -> None:
    truth = write_conveyor_video(tmp_path / "rendered.avi", parts=5, defective={0, 3}, part_size=(0, 90),
                                 part_width_range=(70, 150), gap_px=(20, 40), frame_size=(480, 160),
                                 speed_px_per_frame=9, lead_in_frames=5, seed=2)
    widths = [p.size[0] for p in truth.parts]
    assert all(70 <= w <= 150 for w in widths) and len(set(widths)) > 1
    assert truth.known_parts() == [KnownPart(str(p.index), p.index in {0, 3}, p.classes) for p in truth.parts]
    assert all(p.classes for p in truth.parts if p.defective)
    frames = decode(truth.path)
    belt_level = np.median(frames[0][30:130])
    compared = 0
    for index in range(0, truth.frames, 3):
        for part in truth.parts:
            box = truth.part_box(part.index, index)
            if box is None or box[2] - box[0] <= 2 * EDGE:
                continue
            x1, y1, x2, y2 = box
            columns = frames[index][y1 + EDGE:y2 - EDGE, x1 + EDGE:x2 - EDGE].mean(axis=0)
            assert np.all(np.abs(columns - belt_level) > 15), (index, part.index)  # every column is part, not belt
            compared += 1
    assert compared > 50


def test_contamination_is_drawn_on_the_chosen_parts_only_and_marks_them_defective(tmp_path: Path) -> None:
    """A defect of no generator class, for the anomaly stage: on the parts asked for, where its box says, and the
    rest of the video is the video without it (same parts, same defects, same belt)."""
    common = {"kind": "steel", "parts": 4, "defective": {2}, "part_size": (160, 120), "frame_size": (480, 200),
              "speed_px_per_frame": 12, "gap_px": 30, "lead_in_frames": 3, "seed": 5}
    plain = write_conveyor_video(tmp_path / "plain.avi", **common)
    dirty = write_conveyor_video(tmp_path / "dirty.avi", contaminated={0, 2}, **common)

    assert plain.unseen_parts == set() and "unseen_parts" not in plain.to_dict()
    assert dirty.unseen_parts == {0, 2} and dirty.defective_parts == {0, 2}
    assert dirty.class_names == plain.class_names and "contamination" not in dirty.class_names
    assert dirty.parts[0].classes == ("contamination",)
    assert dirty.parts[2].classes == (*plain.parts[2].classes, "contamination")  # added after the part's own
    assert dirty.parts[2].defects[:-1] == plain.parts[2].defects
    assert [p.defects for p in dirty.parts[1::2]] == [p.defects for p in plain.parts[1::2]]
    assert ConveyorTruth.from_dict(json.loads(json.dumps(dirty.to_dict()))) == dirty
    assert dirty.to_dict()["unseen_parts"] == [0, 2]
    assert dirty.known_parts()[0] == KnownPart("0", True, ("contamination",))

    frame_index = 36  # parts 0 and 1 wholly in view
    assert {0, 1} <= {p for p in dirty.parts_in_view(frame_index)
                      if (b := dirty.part_box(p, frame_index)) and b[2] - b[0] == 160}
    (seen,) = [d for d in dirty.visible_defects(frame_index) if d.part_index == 0]
    assert (seen.class_name, seen.class_id) == ("contamination", -1)  # no detector class stands for it
    before, after = decode(plain.path)[frame_index], decode(dirty.path)[frame_index]
    changed = np.abs(after - before) > 25
    x1, y1, x2, y2 = (int(v) for v in seen.xyxy)
    assert changed[y1:y2, x1:x2].mean() > 0.3  # a label or a smear: a large share of its box is repainted
    outside = changed.copy()
    outside[max(0, y1 - 8):y2 + 8, max(0, x1 - 8):x2 + 8] = False  # JPEG blocks around the box may move a little
    assert not outside.any()  # part 1, the belt and the rest of part 0 are untouched


def test_a_contaminated_fraction_is_drawn_from_the_parts_without_other_defects(tmp_path: Path) -> None:
    truth = write_conveyor_video(tmp_path / "line.avi", kind="steel", parts=8, defective=0.375, contaminated=0.25,
                                 part_size=(100, 80), frame_size=(320, 160), speed_px_per_frame=20, seed=3)
    assert len(truth.unseen_parts) == 2 and len(truth.defective_parts) == 5
    assert all(truth.parts[p].classes == ("contamination",) for p in truth.unseen_parts)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"parts": 4, "defective": 0.5, "contaminated": 0.75}, "only 2 parts have no other defect"),
    ({"parts": 4, "contaminated": {4}}, "outside 0..3"),
    ({"parts": 4, "contaminated": 1.5}, "contaminated fraction"),
    ({"part_images": [(np.zeros((40, 40, 3), np.uint8), [])], "class_names": ("y",), "contaminated": {0}},
     "draw on the images yourself"),
])
def test_bad_contamination_options_are_refused(tmp_path: Path, kwargs: dict, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        write_conveyor_video(tmp_path / "bad.avi", **kwargs)
    assert not (tmp_path / "bad.avi").exists()


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"part_images": [(np.zeros((10, 10, 3), np.uint8), [])]}, "class_names"),
    ({"part_images": [(np.zeros((10, 10, 3), np.uint8), [Box("x", (0.0, 0.0, 5.0, 5.0))])], "class_names": ("y",)},
     "not in class_names"),
    ({"part_images": [(np.zeros((10, 10, 3), np.uint8), [Box("y", (0.0, 0.0, 12.0, 5.0))])], "class_names": ("y",)},
     "not inside"),
    ({"part_images": [(np.zeros((400, 10, 3), np.uint8), [])], "class_names": ("y",)}, "does not fit"),
    ({"parts": 3, "part_widths": [10, 20]}, "3 parts"),
    ({"parts": 3, "gap_px": (30, 20)}, "gap_px range"),
    ({"parts": 3, "flicker": 1.5}, "flicker"),
    ({}, "give parts"),
])
def test_bad_options_are_refused(tmp_path: Path, kwargs: dict, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        write_conveyor_video(tmp_path / "bad.avi", **kwargs)
    assert not (tmp_path / "bad.avi").exists()
