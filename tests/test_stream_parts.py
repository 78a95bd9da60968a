"""Part decisions: one per image in part mode; debounced, once per track (or part) in track mode; bounded memory."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.stream.parts import ImagePartDecider, TrackPartDecider, box_gap
from yolodefect.stream.sources import Frame
from tests.builders import detections

IMAGE = np.zeros((8, 8, 3), dtype=np.uint8)


def make_frame(index: int = 0, part_hint: str | None = None) -> Frame:
    return Frame(IMAGE, index, datetime.now(timezone.utc), "test", part_hint)


def tracked(rows: list[tuple[int, tuple[float, float, float, float]]]) -> Detections:
    """Tracked class-0 detections from (tracker id, xyxy) rows."""
    return detections([xyxy for _, xyxy in rows], track_ids=[track_id for track_id, _ in rows])


def box(x: float, y: float = 0.0, side: float = 10.0) -> tuple[float, float, float, float]:
    return (x, y, x + side, y + side)


# -- part mode ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("emit_pass", "has_defect", "expected"),
    [(False, True, ["reject"]), (False, False, []), (True, True, ["reject"]), (True, False, ["pass"])],
)
def test_image_mode_one_decision_per_frame(emit_pass: bool, has_defect: bool, expected: list[str]) -> None:
    decider = ImagePartDecider(emit_pass=emit_pass)
    defects = tracked([(-1, box(0))] if has_defect else [])
    decisions = decider.update(make_frame(5, "part_0005.png"), defects)
    assert [d.decision for d in decisions] == expected
    for decision in decisions:
        assert decision.part_id == "part_0005.png"
        assert len(decision.defects) == (1 if has_defect else 0)


def test_image_mode_part_id_falls_back_to_frame_index() -> None:
    assert ImagePartDecider().update(make_frame(12), tracked([(-1, box(0))]))[0].part_id == 12


# -- track mode ------------------------------------------------------------------------------


def run(decider: TrackPartDecider, frames: list[list[tuple[int, tuple]]]) -> list[tuple[int, int | str, list[int]]]:
    """Feed frames of (track id, box) rows; returns (frame number, part id, track ids in the event) per reject."""
    out = []
    for number, rows in enumerate(frames):
        for decision in decider.update(make_frame(number), tracked(rows)):
            assert decision.decision == "reject"
            out.append((number, decision.part_id, decision.defects.tracker_id.tolist()))
    return out


@pytest.mark.parametrize(
    ("min_frames", "seen", "expected"),
    [
        # 1 = the track counts on that frame, 0 = it does not
        (1, [1], [(0, 1, [1])]),
        (3, [1, 1], []),
        (3, [1, 1, 1], [(2, 1, [1])]),
        (3, [1, 1, 0, 1, 1], []),  # a gap restarts the streak
        (3, [1, 1, 0, 1, 1, 1], [(5, 1, [1])]),
        (2, [1, 1, 1, 1, 1, 1], [(1, 1, [1])]),  # rejects once, however long it stays
        (2, [1, 1, 0, 0, 1, 1, 1], [(1, 1, [1])]),  # re-seen after a gap: still once
    ],
)
def test_min_frames_and_once_per_track(min_frames: int, seen: list[int], expected: list) -> None:
    decider = TrackPartDecider(min_frames=min_frames)
    frames = [[(1, box(i * 5))] if flag else [] for i, flag in enumerate(seen)]
    assert run(decider, frames) == expected


def test_each_track_rejects_separately_without_merging() -> None:
    decider = TrackPartDecider(min_frames=2)
    frames = [[(1, box(0)), (2, box(20))]] * 3 + [[(3, box(200))]] * 2
    assert run(decider, frames) == [(1, 1, [1]), (1, 2, [2]), (4, 3, [3])]


def test_untracked_detections_never_reject() -> None:
    decider = TrackPartDecider(min_frames=1)
    assert run(decider, [[(-1, box(0))]] * 5) == []


def test_merge_defects_of_one_part() -> None:
    decider = TrackPartDecider(min_frames=2, part_merge_px=50)
    frames = (
        [[(1, box(0)), (2, box(30))]] * 3  # same part: confirm together -> one event with both
        + [[(1, box(0)), (2, box(30)), (3, box(70))]] * 3  # confirms later, 30 px from track 2: joins the part
        + [[(4, box(400))]] * 3  # far away: another part
    )
    assert run(decider, frames) == [(1, 1, [1, 2]), (7, 4, [4])]


def test_merge_includes_nearby_defects_not_yet_confirmed() -> None:
    decider = TrackPartDecider(min_frames=3, part_merge_px=50)
    frames = [[(1, box(0))], [(1, box(0))], [(1, box(0)), (2, box(20))], [(1, box(0)), (2, box(20))],
              [(1, box(0)), (2, box(20))], [(2, box(20))]]
    # Track 2 is in the event of track 1 and never raises its own.
    assert run(decider, frames) == [(2, 1, [1, 2])]


def test_merged_part_is_forgotten_and_a_later_part_rejects() -> None:
    decider = TrackPartDecider(min_frames=1, part_merge_px=50, forget_after_frames=5)
    frames = [[(1, box(0))]] + [[]] * 10 + [[(2, box(5))]]  # same place, long after: a new part
    assert run(decider, frames) == [(0, 1, [1]), (11, 2, [2])]


def test_a_lost_tracks_old_box_does_not_swallow_the_next_part() -> None:
    """A part's defect track is lost at x=0; the next part reaches x=0 later: it must reject on its own."""
    decider = TrackPartDecider(min_frames=1, part_merge_px=50, forget_after_frames=90, merge_stale_frames=5)
    frames = [[(1, box(0))], [(1, box(0)), (2, box(300))]] + [[(2, box(300 + 10 * i))] for i in range(10)] \
        + [[(3, box(5))]]
    assert run(decider, frames) == [(0, 1, [1]), (1, 2, [2]), (12, 3, [3])]
    # Within the stale window, a defect next to a lost track's box still belongs to that part.
    decider = TrackPartDecider(min_frames=1, part_merge_px=50, merge_stale_frames=5)
    assert run(decider, [[(1, box(0))], [], [], [(2, box(5))]]) == [(0, 1, [1])]


def test_missing_tracker_ids_is_an_error() -> None:
    plain = Detections(np.array([box(0)]), np.array([0.9]), np.array([0]))
    with pytest.raises(UsageError, match="tracker ids"):
        TrackPartDecider().update(make_frame(), plain)


def test_memory_stays_bounded_with_endless_new_tracks() -> None:
    decider = TrackPartDecider(min_frames=2, part_merge_px=5, forget_after_frames=20, max_tracks=50)
    for tick in range(5000):
        # Every frame: three brand-new tracks seen once, and one long-lived track per 10 frames.
        rows = [(100_000 + tick * 3 + k, box(k * 100)) for k in range(3)] + [(tick // 10, box(1000))]
        decider.update(make_frame(tick), tracked(rows))
        assert decider.tracked <= 50
        assert decider.open_parts <= 50


def test_forgotten_track_would_not_repeat_within_the_horizon() -> None:
    decider = TrackPartDecider(min_frames=1, forget_after_frames=100)
    frames = [[(1, box(0))]] + [[]] * 90 + [[(1, box(0))]]
    assert run(decider, frames) == [(0, 1, [1])]


@pytest.mark.parametrize(
    ("a", "b", "gap"),
    [(box(0), box(5), 0.0), (box(0), box(10), 0.0), (box(0), box(13), 3.0), (box(0, 0), box(13, 14), 5.0)],
)
def test_box_gap(a: tuple, b: tuple, gap: float) -> None:
    assert box_gap(np.array(a), np.array(b)) == pytest.approx(gap)
    assert box_gap(np.array(b), np.array(a)) == pytest.approx(gap)


@pytest.mark.parametrize("kwargs", [{"min_frames": 0}, {"part_merge_px": -1}, {"forget_after_frames": 0}])
def test_invalid_settings(kwargs: dict) -> None:
    with pytest.raises(UsageError):
        TrackPartDecider(**kwargs)
