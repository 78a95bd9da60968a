"""``watch --review``: the whole station writes the review queue, on a folder of part images and on a moving line.

Fake models answer by frame content with confidences chosen per part, so the test knows which parts are near a
threshold, which flicker and which are confidently right; the queue is read back with our LabelMe reader.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.builders import TEST_MODEL
from tests.test_review_queue import read_labelme
from tests.test_watch_cameras import parts_of, read_events
from yolodefect.data.conveyor import ConveyorTruth, write_conveyor_video
from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.stream.options import WatchOptions, check_outputs_outside_source, load_station_config
from yolodefect.stream.watch import watch

NAMES = ["scratch", "pit"]
# Part image -> (class, confidence) of its one detection, or None; scratch's threshold 0.5 (band 0.25-0.75), pit's 0.4.
PART_IMAGES = {"p0": ("scratch", 0.9), "p1": ("scratch", 0.55), "p2": ("scratch", 0.45), "p3": None,
               "p4": ("pit", 0.3), "p5": ("scratch", 0.1)}
PART_BOX = [12.25, 8.5, 40.75, 30.125]


class ImageDetector:
    """One detection per part image, recognised by its grey level."""

    class_names = NAMES
    model_info = TEST_MODEL

    def __init__(self) -> None:
        self.by_level = {10 + 20 * i: found for i, found in enumerate(PART_IMAGES.values())}

    def __call__(self, image: np.ndarray) -> Detections:
        found = self.by_level[int(image[0, 0, 0])]
        if found is None:
            return Detections.empty()
        return Detections(np.array([PART_BOX], dtype=np.float32), np.array([found[1]], dtype=np.float32),
                          np.array([NAMES.index(found[0])]))


@pytest.fixture
def part_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, name in enumerate(PART_IMAGES):
        cv2.imwrite(str(folder / f"{name}.png"), np.full((48, 64, 3), 10 + 20 * i, np.uint8))
    return folder


def run_parts(folder: Path, out: Path, **options) -> tuple[list[dict], list[dict], object]:
    summary = watch(WatchOptions(source=str(folder), sinks=(str(out / "events.jsonl"),), outbox=out / "outbox.sqlite",
                                 conf=0.5, class_conf={"pit": 0.4}, review=out / "review", **options),
                    detector=ImageDetector())
    documents = [json.loads(p.read_text()) for p in sorted((out / "review").glob("*.json"))
                 if p.name != "review_queue.json"]
    return documents, read_events(out / "events.jsonl"), summary


def test_part_images_near_a_threshold_are_queued_with_their_event_and_boxes(part_folder: Path, tmp_path: Path) -> None:
    documents, events, summary = run_parts(part_folder, tmp_path, review_sample=0.0)

    by_part = {d["yolodefect"]["part_id"]: d for d in documents}
    assert sorted(by_part) == ["p1.png", "p2.png", "p4.png"]  # 0.55 and 0.45 around 0.5, pit 0.3 under 0.4
    assert {p: d["yolodefect"]["decision"] for p, d in by_part.items()} == {
        "p1.png": "reject", "p2.png": "pass", "p4.png": "pass"}
    assert all(d["yolodefect"]["reasons"] == ["near_threshold"] for d in documents)
    rejects = {e["part_id"]: e for e in events if e["decision"] == "reject"}
    assert sorted(rejects) == ["p0.png", "p1.png"]
    assert by_part["p1.png"]["yolodefect"]["event_id"] == rejects["p1.png"]["event_id"]
    assert by_part["p2.png"]["yolodefect"]["event_id"] is None  # a pass nobody asked an event for
    assert by_part["p1.png"]["yolodefect"]["source"] == rejects["p1.png"]["source"]
    assert by_part["p1.png"]["yolodefect"]["thresholds"] == {"scratch": 0.5, "pit": 0.4}

    records = {r.image_path.stem: r for r in read_labelme(tmp_path / "review").records}
    assert len(records) == 3
    for record in records.values():
        assert [np.float32(b.xyxy).tolist() for b in record.boxes] == [np.float32(PART_BOX).tolist()]
        assert cv2.imread(str(record.image_path)).shape == (48, 64, 3)
    stats = summary.stats
    assert (stats.review_saved, stats.review_rate_limited, stats.review_dropped, stats.review_failures) == (3, 0, 0, 0)


def test_a_sample_of_one_saves_every_other_pass_as_random_pass(part_folder: Path, tmp_path: Path) -> None:
    documents, _, summary = run_parts(part_folder, tmp_path, review_sample=1.0)
    reasons = {d["yolodefect"]["part_id"]: d["yolodefect"]["reasons"] for d in documents}
    assert reasons == {"p1.png": ["near_threshold"], "p2.png": ["near_threshold"], "p3.png": ["random_pass"],
                       "p4.png": ["near_threshold"], "p5.png": ["random_pass"]}  # never the confident reject p0
    assert summary.stats.review_saved == 5
    assert json.loads((tmp_path / "review" / "review_queue.json").read_text())["by_reason"] == {
        "near_threshold": 3, "random_pass": 2}


# -- a moving line -----------------------------------------------------------------------------------------

BELT_FRAMES = WatchOptions().belt_frames


def line_confidence(part: int, nth_visible: int) -> float:
    """The model's confidence in part ``part``'s defect on the ``nth_visible`` frame that shows it."""
    if part == 1:
        return 0.45  # a near miss on every frame: passed
    if part == 2:
        return 0.0 if 6 <= nth_visible <= 8 else 0.9  # seen, lost, seen: rejected, but flickering
    if part == 3:
        return 0.9 if nth_visible < 2 else 0.0  # at the threshold on 2 frames, the rule needs 3: passed
    return 0.9  # part 0: a confident reject


class LineDetector:
    """The generated frames' defects with :func:`line_confidence`, recognised by the decoded frame's content."""

    model_info = TEST_MODEL

    def __init__(self, truth: ConveyorTruth):
        self.class_names = list(truth.class_names)
        self.by_frame: dict[str, Detections] = {}
        self.by_index: list[Detections] = []
        seen: dict[int, int] = {}
        capture = cv2.VideoCapture(str(truth.path))
        index = 0
        while True:
            ok, image = capture.read()
            if not ok:
                break
            boxes, confidences, classes = [], [], []
            for defect in truth.visible_defects(index):
                nth = seen.get(defect.part_index, 0)
                seen[defect.part_index] = nth + 1
                confidence = line_confidence(defect.part_index, nth)
                if confidence > 0:
                    boxes.append(defect.xyxy)
                    confidences.append(confidence)
                    classes.append(defect.class_id)
            found = (Detections(np.array(boxes, dtype=np.float32), np.array(confidences, dtype=np.float32),
                                np.array(classes)) if boxes else Detections.empty())
            self.by_frame[hashlib.sha1(image.tobytes()).hexdigest()] = found
            self.by_index.append(found)
            index += 1
        capture.release()

    def __call__(self, image: np.ndarray) -> Detections:
        return self.by_frame[hashlib.sha1(image.tobytes()).hexdigest()]


def test_a_line_queues_near_misses_short_runs_and_flickers_with_their_peak_frame(tmp_path: Path) -> None:
    truth = write_conveyor_video(tmp_path / "line.mp4", parts=6, defective={0, 1, 2, 3}, seed=4,
                                 max_defects_per_part=1, lead_in_frames=BELT_FRAMES + 5)
    detector = LineDetector(truth)
    out = tmp_path / "out"
    summary = watch(WatchOptions(source=str(truth.path), sinks=(str(out / "events.jsonl"),), outbox=out / "outbox.sqlite",
                                 review=out / "review", review_sample=0.0, conf=0.5), detector=detector)

    events = read_events(out / "events.jsonl")
    assert sorted(parts_of(truth, events)) == [0, 2]  # the rejects, as without --review
    records = read_labelme(out / "review").records
    documents = [json.loads(r.annotation_path.read_text()) for r in records]
    provenance = [d["yolodefect"] for d in documents]
    queued = parts_of(truth, provenance)
    assert sorted(zip(queued, (p["reasons"] for p in provenance), (p["decision"] for p in provenance))) == [
        (1, ["near_threshold"], "pass"), (2, ["flicker"], "reject"), (3, ["near_threshold"], "pass")]
    reject_event = next(e for e, part in zip(events, parts_of(truth, events)) if part == 2)
    assert next(p for p, part in zip(provenance, queued) if part == 2)["event_id"] == reject_event["event_id"]

    capture = cv2.VideoCapture(str(truth.path))
    for record, prov in zip(records, provenance):
        # The part's peak frame, with exactly the model's boxes on it (frame pixels, every part's).
        expected = detector.by_index[prov["frame_index"]]
        assert [(b.class_name, np.float32(b.xyxy).tolist()) for b in record.boxes] == [
            (detector.class_names[c], box.tolist()) for box, c in zip(expected.xyxy, expected.class_id)]
        assert len(record.boxes) >= 1
        capture.set(cv2.CAP_PROP_POS_FRAMES, prov["frame_index"])
        ok, image = capture.read()
        saved = cv2.imread(str(record.image_path))
        assert ok and np.abs(saved.astype(int) - image.astype(int)).mean() < 2.0  # that very frame, as a JPEG
    capture.release()
    assert summary.stats.review_saved == 3


def test_review_options_from_a_station_file_and_never_inside_the_source(tmp_path: Path, part_folder: Path) -> None:
    station = tmp_path / "station" / "station.yaml"
    station.parent.mkdir()
    station.write_text("source: parts\nreview: queue\nreview_band: 0.3\nreview_max_per_min: 10\n")
    options = load_station_config(station)
    assert (options.review, options.review_band, options.review_max_per_min) == (
        station.parent.resolve() / "queue", 0.3, 10)
    with pytest.raises(UsageError, match="review_band"):
        WatchOptions(review_band=0.0)
    with pytest.raises(UsageError, match="whole station shares"):
        WatchOptions(cameras=({"source": "a.mp4", "review": "q"},))
    with pytest.raises(UsageError, match="--review .* lies inside the source folder"):
        check_outputs_outside_source(WatchOptions(source=str(part_folder), review=part_folder / "review"))
