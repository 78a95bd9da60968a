"""The model stage: tiled inference, model cards and hashes, the tracker stage, and a real (untrained) YOLO."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.inference.identity import card_path, file_sha256, guess_precision, load_model_card
from yolodefect.inference.model_file import read_model_file
from yolodefect.stream.detector import (
    TiledDetector,
    UltralyticsDetector,
    merge_tiles,
    tile_origins,
)
from yolodefect.stream.options import WatchOptions
from yolodefect.stream.tracking import UNTRACKED, DefectTracker, grow_boxes
from yolodefect.stream.watch import watch


def bright_squares(image: np.ndarray) -> Detections:
    """A 'model' that finds white blobs by thresholding: its answer depends only on the pixels it gets."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    count, _, stats, _ = cv2.connectedComponentsWithStats((gray > 127).astype(np.uint8))
    boxes = [(x, y, x + w, y + h) for x, y, w, h, _ in stats[1:count]]
    if not boxes:
        return Detections.empty()
    return Detections(np.array(boxes, dtype=np.float32), np.full(len(boxes), 0.9), np.zeros(len(boxes)))


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "expected"),
    [
        ((100, 80), (128, 128), 0.2, [(0, 0)]),
        ((256, 128), (128, 128), 0.0, [(0, 0), (128, 0)]),
        ((300, 128), (128, 128), 0.25, [(0, 0), (96, 0), (172, 0)]),  # the last tile is flush with the edge
    ],
)
def test_tile_origins(size: tuple, tile: tuple, overlap: float, expected: list) -> None:
    assert tile_origins(size, tile, overlap) == expected


def test_tiled_detection_finds_every_defect_once_in_frame_pixels() -> None:
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    # One square inside a tile, one cut by the tile edge at x=128, one in the bottom-right corner
    # tile, one in the overlap of four tiles.
    squares = [(10, 10, 30, 30), (118, 40, 138, 60), (250, 150, 270, 170), (80, 80, 100, 100)]
    for x1, y1, x2, y2 in squares:
        image[y1:y2, x1:x2] = 255
    tiled = TiledDetector(bright_squares, (128, 128), overlap=0.3)
    found = tiled(image)
    assert sorted(tuple(map(int, box)) for box in found.xyxy) == sorted(squares)
    assert len(bright_squares(image)) == len(squares)


def test_tiling_passes_small_frames_through_and_keeps_names() -> None:
    calls = []

    def detector(image: np.ndarray) -> Detections:
        calls.append(image.shape)
        return Detections.empty()

    detector.class_names = ["a"]  # type: ignore[attr-defined]
    tiled = TiledDetector(detector, (640, 640))
    tiled(np.zeros((100, 100, 3), np.uint8))
    assert calls == [(100, 100, 3)] and tiled.class_names == ["a"]
    with pytest.raises(UsageError):
        TiledDetector(detector, (16, 16))


def test_merge_tiles_is_class_aware_and_joins_pieces() -> None:
    tile_a = Detections(np.array([[0, 0, 10, 10], [1, 1, 11, 11], [30, 0, 38, 10]]), np.array([0.9, 0.8, 0.6]),
                        np.array([0, 0, 0]))
    tile_b = Detections(np.array([[0, 0, 10, 10], [34, 0, 50, 10], [60, 0, 70, 10]]), np.array([0.7, 0.5, 0.4]),
                        np.array([1, 0, 0]))
    merged = merge_tiles([tile_a, tile_b], 0.5)
    rows = sorted((int(c), round(float(s), 2), [int(v) for v in box])
                  for c, s, box in zip(merged.class_id, merged.confidence, merged.xyxy))
    assert rows == [
        (0, 0.4, [60, 0, 70, 10]),  # apart from the rest: its own defect
        (0, 0.6, [30, 0, 50, 10]),  # pieces overlapping by half the smaller one: one defect, the union box
        (0, 0.9, [0, 0, 11, 11]),  # duplicates: the best score, the union box
        (1, 0.7, [0, 0, 10, 10]),  # another class at the same place stays
    ]
    assert len(merge_tiles([], 0.5)) == 0


def test_model_card_and_info(tmp_path: Path) -> None:
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"weights")
    assert file_sha256(weights) == hashlib.sha256(b"weights").hexdigest()
    assert guess_precision(weights, load_model_card(weights)) == "fp32"
    card_path(weights).write_text(json.dumps({"precision": "fp16", "classes": ["scratch"]}))
    assert load_model_card(weights) == {"precision": "fp16", "classes": ["scratch"]}
    assert guess_precision(weights, load_model_card(weights)) == "fp16"
    card_path(weights).write_text("{not json")
    assert load_model_card(weights) is None  # shown for information only: a broken card is ignored
    int8 = tmp_path / "best_int8.onnx"
    int8.write_bytes(b"q")
    assert guess_precision(int8, load_model_card(int8)) == "int8"
    folder = tmp_path / "best_openvino_model"
    folder.mkdir()
    (folder / "best.xml").write_text("<xml/>")
    assert card_path(folder).name == "best_openvino_model.card.json"
    assert len(file_sha256(folder)) == 64
    with pytest.raises(UsageError, match="does not exist"):
        read_model_file(tmp_path / "missing.pt")


def moving(x: float, side: float = 8.0, y: float = 50.0) -> np.ndarray:
    return np.array([[x, y, x + side, y + side]], dtype=np.float32)


@pytest.mark.parametrize(("min_box_px", "keeps_one_id"), [(32.0, True), (0.0, False)])
def test_tracker_follows_a_small_fast_defect(min_box_px: float, keeps_one_id: bool) -> None:
    """An 8 px defect moving 10 px a frame never overlaps itself: only grown boxes let ByteTrack follow it."""
    tracker = DefectTracker("bytetrack.yaml", min_box_px=min_box_px)
    ids = []
    for frame in range(12):
        detections = Detections(moving(10.0 * frame), np.array([0.9]), np.array([0]))
        tracked = tracker.update(detections)
        np.testing.assert_array_equal(tracked.xyxy, detections.xyxy)  # the detector's box, not the grown one
        ids.append(int(tracked.tracker_id[0]))
    confirmed = {i for i in ids if i != UNTRACKED}
    assert (len(confirmed) == 1 and ids[-1] != UNTRACKED) is keeps_one_id


@pytest.mark.parametrize(("frames_elapsed", "keeps_one_id"), [(2, True), (1, False)])
def test_tracker_follows_a_defect_across_dropped_frames(frames_elapsed: int, keeps_one_id: bool) -> None:
    """The camera outpaces the station and every other frame is dropped: the 8 px defect (16 px a frame) jumps 32 px per update."""
    tracker = DefectTracker("bytetrack.yaml", min_box_px=32.0)
    tracker.update(Detections.empty(), frame_index=0)  # the belt before the defect arrives
    ids = []
    for update in range(12):
        detections = Detections(moving(32.0 * update), np.array([0.9]), np.array([0]))
        tracked = tracker.update(detections, frame_index=(update + 1) * frames_elapsed)
        np.testing.assert_array_equal(tracked.xyxy, detections.xyxy)
        ids.append(int(tracked.tracker_id[0]))
    confirmed = {i for i in ids if i != UNTRACKED}
    assert (len(confirmed) == 1 and ids[-1] != UNTRACKED) is keeps_one_id


@pytest.mark.parametrize(("reject_conf", "tracked"), [(None, False), (0.3, False), (0.12, True)])
def test_a_defect_above_its_reject_threshold_can_start_a_track(reject_conf, tracked: bool) -> None:
    """ByteTrack starts no track under 0.25; a 0.15 defect must still be tracked when 0.12 rejects."""
    tracker = DefectTracker("bytetrack.yaml", reject_conf=reject_conf)
    ids = [int(tracker.update(Detections(moving(4.0 * f, side=40.0), np.array([0.15]), np.array([0]))).tracker_id[0])
           for f in range(6)]
    assert (ids[-1] != UNTRACKED) is tracked


def test_tracker_keeps_every_detection_and_handles_empty_frames() -> None:
    tracker = DefectTracker()
    empty = tracker.update(Detections.empty())
    assert len(empty) == 0 and empty.tracker_id is not None
    low = Detections(np.array([[0, 0, 40, 40], [100, 100, 140, 140]]), np.array([0.9, 0.05]), np.array([0, 1]))
    out = tracker.update(low)
    assert len(out) == 2 and out.class_id.tolist() == [0, 1] and out.tracker_id[1] == UNTRACKED


def test_grow_boxes() -> None:
    grown = grow_boxes(np.array([[10, 10, 14, 20], [0, 0, 50, 50]], dtype=np.float32), 16)
    np.testing.assert_allclose(grown, [[4, 7, 20, 23], [0, 0, 50, 50]])


@pytest.mark.parametrize("config", ["bytetrack.yaml", "botsort.yaml"])
def test_skipping_idle_frames_gives_the_same_tracks_as_ultralytics_update(config: str, monkeypatch) -> None:
    """Frames with nothing detected and nothing tracked skip Ultralytics' update: ids, track ages and
    the frame counter must be what the full update gives, across tracks appearing, being lost and expiring."""
    frames: list[Detections] = []
    for part, start in enumerate((0, 70)):  # two defects, 70 empty frames apart: the first track expires (30)
        frames += [Detections.empty()] * 5
        frames += [Detections(moving(8.0 * f + 40 * part, side=20.0), np.array([0.9]), np.array([part]))
                   for f in range(10)]
        frames += [Detections.empty()] * 55

    def run(skip_idle: bool) -> tuple[list[list[int]], int, int, int]:
        tracker = DefectTracker(config)
        if not skip_idle:
            monkeypatch.setattr(tracker, "_is_idle", lambda: False)
        calls = []
        ultralytics_update = tracker._tracker.update
        monkeypatch.setattr(tracker._tracker, "update", lambda *a, **k: calls.append(1) or ultralytics_update(*a, **k))
        ids = [tracker.update(d, frame_index=i).tracker_id.tolist() for i, d in enumerate(frames)]
        state = tracker._tracker
        return ids, state.frame_id, len(state.tracked_stracks) + len(state.lost_stracks), len(calls)

    skipped, full = run(skip_idle=True), run(skip_idle=False)
    assert skipped[:3] == full[:3]
    assert len({i for ids in skipped[0] for i in ids if i != UNTRACKED}) == 2  # both defects were tracked
    assert skipped[1] == len(frames) and skipped[2] == 0  # every frame counted, both tracks expired
    assert full[3] == len(frames)
    if config == "bytetrack.yaml":
        # Skipped: the 5 empty frames before each defect, and the empty frames once its lost track is
        # dropped from the pool (Ultralytics drops it 32 frames after its last detection: 55 - 32 = 23).
        assert skipped[3] == len(frames) - 2 * (5 + 23)
    else:  # BoT-SORT's camera-motion model must see every frame
        assert skipped[3] == len(frames)


def test_tracker_config_errors() -> None:
    with pytest.raises(UsageError, match="not found"):
        DefectTracker("no_such_tracker.yaml")


# -- a real Ultralytics model (untrained, built from yaml: nothing downloaded) --------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    YOLO("yolo11n.yaml", task="detect").save(str(path))
    return path


def test_ultralytics_detector_predicts_and_tracks(tiny_model: Path) -> None:
    detector = UltralyticsDetector(tiny_model, imgsz=64, conf_floor=0.0)
    assert len(detector.class_names) == 80 and detector.model_info.sha256 == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    found = detector(image)
    assert isinstance(found, Detections) and found.tracker_id is None
    if len(found):
        assert found.xyxy[:, 2].max() <= 120.5 and found.xyxy[:, 3].max() <= 90.5  # original-image pixels
    tracking = UltralyticsDetector(tiny_model, imgsz=64, conf_floor=0.0, tracking=True)
    for _ in range(2):
        tracked = tracking(image)
        assert tracked.tracker_id is not None and len(tracked.tracker_id) == len(tracked)


def test_watch_with_a_model_path(tiny_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"p{i}.png"), np.random.default_rng(i).integers(0, 255, (96, 128), dtype=np.uint8))
    card_path(tiny_model).write_text(json.dumps({"precision": "fp32", "trained_on": "nothing"}))
    options = WatchOptions(source=str(folder), model=tiny_model, imgsz=64, conf=0.0, emit_pass=True, tile=64,
                           sinks=(str(tmp_path / "events.jsonl"),), outbox=tmp_path / "outbox.sqlite")
    summary = watch(options)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["part_id"] for e in events] == ["p0.png", "p1.png"]
    assert {e["model"]["sha256"] for e in events} == {hashlib.sha256(tiny_model.read_bytes()).hexdigest()}
    assert summary.stats.model_card == {"precision": "fp32", "trained_on": "nothing"}


def test_watch_tracks_with_a_model_path_on_video(tiny_model: Path, tmp_path: Path) -> None:
    from yolodefect.data.conveyor import write_conveyor_video

    # 4 frames of empty belt to learn, then the model on every frame while a part enters.
    video = write_conveyor_video(tmp_path / "line.mp4", parts=2, defective={0}, frame_size=(160, 96),
                                 part_size=(64, 48), gap_px=16, speed_px_per_frame=16, lead_in_frames=5).path
    options = WatchOptions(source=str(video), model=tiny_model, imgsz=64, conf=0.0, max_frames=10, min_frames=2,
                           belt_frames=4, sinks=(str(tmp_path / "events.jsonl"),), outbox=tmp_path / "outbox.sqlite",
                           save=tmp_path / "annotated.mp4")
    summary = watch(options)
    assert summary.stats.mode == "track" and summary.stats.frames == 10 and summary.flushed
    assert summary.stats.belt_frames == 4
    assert (tmp_path / "annotated.mp4").stat().st_size > 0
