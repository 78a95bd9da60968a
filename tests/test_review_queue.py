"""The review queue of ``watch --review`` on its own: what it picks, what it writes, its limits.

Its LabelMe files are read back with our own LabelMe reader; the disk errors are a real full disk (tmpfs).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from tests.builders import TEST_MODEL, detections
from tests.helpers import fill
from yolodefect.data.formats import read_source
from yolodefect.data.formats.base import ReadOptions
from yolodefect.data.formats.labelme_writer import is_reviewed
from yolodefect.data.records import SourceDataset
from yolodefect.detections import Detections
from yolodefect.stream.review import ReviewCase, ReviewQueue, review_reasons
from yolodefect.stream.sources import Frame

NAMES = {0: "scratch", 1: "pit", 2: "anomaly"}  # 2: the anomaly stage's class, not the model's
THRESHOLDS = np.array([0.5, 0.4, 0.6], dtype=np.float32)
START = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)
STEM = re.compile(r"^\d{8}T\d{6}_\d{3}_[0-9a-f]{8}$")


class Counts:
    """A camera's stats counter (StatsBoard.add), thread-safe."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.values[name] = self.values.get(name, 0) + amount


def frame(index: int = 7, *, seconds: float = 0.0) -> Frame:
    image = np.random.default_rng(index).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    return Frame(image=image, index=index, captured_at=START + timedelta(seconds=seconds), source="line1.mp4")


def case(found: Detections, *, decision: str = "pass", scores: np.ndarray | None = None, min_frames: int = 1,
         index: int = 7, seconds: float = 0.0, event_id: str | None = None, part_id: str | int | None = 3,
         part_box: np.ndarray | None = None) -> ReviewCase:
    if scores is None:  # image mode: the frame's top confidence per class
        scores = np.zeros((1, 3), dtype=np.float32)
        for c, s in zip(found.class_id, found.confidence):
            scores[0, c] = max(scores[0, c], s)
    return ReviewCase(decision=decision, part_id=part_id, event_id=event_id, frame=frame(index, seconds=seconds),
                      detections=found, part_box=part_box, scores=scores, thresholds=THRESHOLDS, reject_ids=[0, 1, 2],
                      names=NAMES, model_class_ids=[0, 1], min_frames=min_frames, model=TEST_MODEL,
                      source="line1", anomaly_id=2)


def items(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.name != "review_queue.json"]


def read_labelme(folder: Path) -> SourceDataset:
    """The queue as our LabelMe reader reads it (as ``review merge`` does): every item, and the one JSON that is not
    LabelMe, the queue's counters, skipped."""
    dataset = read_source(folder, "labelme", ReadOptions(skip_bad=True))
    assert [Path(note.path).name for note in dataset.skipped] == ["review_queue.json"]
    return dataset


def queue(folder: Path, **kwargs) -> ReviewQueue:
    kwargs.setdefault("sample", 0.0)
    return ReviewQueue(folder, **kwargs)


def test_items_load_with_our_labelme_reader_and_give_the_models_boxes_back_exactly(tmp_path: Path) -> None:
    # Boxes with float32 noise; 0.2 is below scratch's band floor (0.25) and the anomaly box is no defect's extent.
    boxes = [[10.123457, 20.5, 50.77, 60.1], [70.3, 5.25, 90.9, 40.4], [1, 1, 5, 5], [30, 30, 100, 100]]
    found = detections(boxes, conf=[0.55, 0.3, 0.2, 0.7], classes=[0, 1, 0, 2])
    event_id = "0f1e2d3c-4b5a-4968-8776-655443322110"
    review = queue(tmp_path / "review")
    reasons = review.consider(case(found, decision="reject", event_id=event_id,
                                   part_box=np.array([5.0, 2.0, 150.0, 110.0])), Counts())
    review.close()
    assert reasons == ["near_threshold", "anomaly_near_threshold"]

    dataset = read_labelme(tmp_path / "review")
    assert dataset.warnings == []
    (record,) = dataset.records
    assert record.image_path.name.endswith(".jpg") and STEM.match(record.image_path.stem)
    assert record.image_path.stem.endswith("_0f1e2d3c")
    assert record.declared_size_wh == (160, 120)
    read_back = [(box.class_name, np.float32(box.xyxy).tolist()) for box in record.boxes]
    assert read_back == [("scratch", np.float32(boxes[0]).tolist()), ("pit", np.float32(boxes[1]).tolist())]

    (document,) = items(tmp_path / "review")
    provenance = document["yolodefect"]
    assert document["flags"] == {"reviewed": False} and document["imageData"] is None
    assert [s["description"] for s in document["shapes"]] == ["model confidence 0.55", "model confidence 0.30"]
    assert provenance["predictions_sha256"] == hashlib.sha256(
        json.dumps(document["shapes"], sort_keys=True).encode()).hexdigest()
    assert not is_reviewed(document, provenance["predictions_sha256"])
    saved_at = datetime.fromisoformat(provenance.pop("saved_at").replace("Z", "+00:00"))
    assert abs((datetime.now(timezone.utc) - saved_at).total_seconds()) < 60
    assert provenance == {
        "version": 1, "event_id": event_id, "part_id": 3, "captured_at": "2024-05-01T12:00:00.123Z",
        "source": "line1", "frame_index": 7, "model": TEST_MODEL.to_dict(), "class_names": ["scratch", "pit"],
        "thresholds": {"scratch": 0.5, "pit": 0.4, "anomaly": 0.6},
        "reasons": ["near_threshold", "anomaly_near_threshold"],
        "detail": provenance["detail"], "decision": "reject", "part_bbox_xyxy": [5.0, 2.0, 150.0, 110.0],
        "predictions_sha256": provenance["predictions_sha256"],
    }
    assert "scratch: top confidence 0.550, threshold 0.500" in provenance["detail"]
    assert list(tmp_path.joinpath("review").glob("*.part")) == []


def test_near_threshold_parts_on_both_sides_are_queued_and_confident_ones_are_not(tmp_path: Path) -> None:
    review = queue(tmp_path / "review")
    counts = Counts()
    box = [[10, 10, 40, 40]]
    picked = {conf: review.consider(case(detections(box, conf=conf), decision="reject" if conf >= 0.5 else "pass",
                                         index=i), counts)
              for i, conf in enumerate([0.95, 0.76, 0.74, 0.55, 0.5, 0.45, 0.26, 0.24, 0.05])}
    review.close()
    # scratch threshold 0.5, band 0.5: [0.25, 0.75]
    assert {conf for conf, reasons in picked.items() if reasons} == {0.74, 0.55, 0.5, 0.45, 0.26}
    assert all(reasons == ["near_threshold"] for reasons in picked.values() if reasons)
    assert sorted(d["yolodefect"]["frame_index"] for d in items(tmp_path / "review")) == [2, 3, 4, 5, 6]
    assert counts.values == {"review_saved": 5}
    # A clean pass: no detection at all, nothing to look at.
    assert queue(tmp_path / "other").consider(case(Detections.empty()), counts) == []


def test_on_a_line_the_kth_best_frame_decides_and_a_defect_seen_lost_for_k_frames_seen_is_a_flicker() -> None:
    def reasons(column: list[float]) -> list[str]:
        scores = np.zeros((len(column), 3), dtype=np.float32)
        scores[:, 0] = column
        return review_reasons(scores, THRESHOLDS, [0, 1, 2], NAMES, min_frames=3, band_fraction=0.5)[0]

    assert reasons([0.9, 0.92, 0.95, 0.9, 0.91]) == []  # a confident reject
    assert reasons([0.0, 0.1, 0.0, 0.05, 0.0]) == []  # a confident pass
    assert reasons([0.9, 0.9, 0.1, 0.0, 0.0]) == ["near_threshold"]  # at the threshold twice, k = 3
    assert reasons([0.6, 0.55, 0.45, 0.1, 0.0]) == ["near_threshold"]  # its 3rd best frame: 0.45
    assert reasons([0.9, 0.9, 0.0, 0.0, 0.0, 0.9, 0.9, 0.9]) == ["flicker"]  # rejected, but seen, lost 3, seen
    assert reasons([0.9, 0.9, 0.0, 0.0, 0.9, 0.9, 0.9]) == []  # lost for 2 frames: k = 3 frames make a flicker
    assert reasons([0.9, 0.0, 0.9, 0.0, 0.9, 0.0, 0.9]) == []  # a missed frame now and then is no flicker
    assert reasons([0.8, 0.0, 0.0, 0.0, 0.8, 0.1, 0.1]) == ["near_threshold", "flicker"]


def test_rate_limit_counts_what_it_refuses_and_the_window_slides(tmp_path: Path) -> None:
    now = [0.0]
    review = queue(tmp_path / "review", max_per_min=3, clock=lambda: now[0])
    counts = Counts()
    near = detections([[10, 10, 40, 40]], conf=0.45)
    for i in range(5):
        review.consider(case(near, index=i, seconds=i), counts)
    now[0] = 59.0
    review.consider(case(near, index=5, seconds=5), counts)  # still the same minute
    now[0] = 60.5
    review.consider(case(near, index=6, seconds=6), counts)  # the first ones left the window
    review.close()
    assert counts.values == {"review_saved": 4, "review_rate_limited": 3}
    assert sorted(d["yolodefect"]["frame_index"] for d in items(tmp_path / "review")) == [0, 1, 2, 6]
    state = json.loads((tmp_path / "review" / "review_queue.json").read_text())
    assert state["saved"] == 4 and state["rate_limited"] == 3 and state["by_reason"] == {"near_threshold": 4}


def test_cap_removes_the_oldest_unreviewed_item_first_counts_it_and_keeps_reviewed_ones(tmp_path: Path) -> None:
    folder = tmp_path / "review"
    near = detections([[10, 10, 40, 40]], conf=0.45)
    counts = Counts()
    review = queue(folder, max_items=3)
    for i in range(5):
        review.consider(case(near, index=i, seconds=i), counts)
    review.close()
    assert [d["yolodefect"]["frame_index"] for d in items(folder)] == [2, 3, 4]
    assert sorted(p.suffix for p in folder.iterdir()) == [".jpg"] * 3 + [".json"] * 4
    state = json.loads((folder / "review_queue.json").read_text())
    assert (state["saved"], state["removed_oldest"], state["items"], state["max_items"]) == (5, 2, 3, 3)
    assert counts.values == {"review_saved": 5, "review_removed": 2}

    # A person reviewed the oldest (frame 2) and edited the next (frame 3): a new run keeps both, removes frame 4.
    oldest, edited, _ = sorted(p for p in folder.glob("*.json") if p.name != "review_queue.json")
    document = json.loads(oldest.read_text())
    document["flags"]["reviewed"] = True
    oldest.write_text(json.dumps(document))
    document = json.loads(edited.read_text())
    document["shapes"][0]["label"] = "pit"
    edited.write_text(json.dumps(document))
    review = queue(folder, max_items=3)
    review.consider(case(near, index=5, seconds=5), counts)
    review.close()
    assert [d["yolodefect"]["frame_index"] for d in items(folder)] == [2, 3, 5]
    state = json.loads((folder / "review_queue.json").read_text())
    assert (state["saved"], state["removed_oldest"]) == (6, 3)  # carried over from the first run

    # Only reviewed items left and the folder full: the new item is dropped (counted), the person's work stays.
    review = queue(folder, max_items=2)
    review.consider(case(near, index=6, seconds=6), counts)
    review.close()
    assert [d["yolodefect"]["frame_index"] for d in items(folder)] == [2, 3]
    assert json.loads((folder / "review_queue.json").read_text())["dropped"] == 1


def test_random_sample_of_passes_is_seeded_and_takes_only_passes(tmp_path: Path) -> None:
    clean = detections([[10, 10, 40, 40]], conf=0.05)
    confident = detections([[10, 10, 40, 40]], conf=0.95)

    def sampled(folder: Path, seed: int) -> list[int]:
        review = ReviewQueue(folder, sample=0.3, seed=seed, max_per_min=1000)
        for i in range(40):
            review.consider(case(clean, index=i, seconds=i), Counts())
            review.consider(case(confident, decision="reject", index=100 + i, seconds=i), Counts())
        review.close()
        documents = items(folder)
        assert all(d["yolodefect"]["reasons"] == ["random_pass"] for d in documents)
        return [d["yolodefect"]["frame_index"] for d in documents]

    first = sampled(tmp_path / "a", seed=1)
    assert 4 <= len(first) <= 20 and all(i < 100 for i in first)  # 0.3 of 40 passes; no confident reject
    assert sampled(tmp_path / "b", seed=1) == first
    assert sampled(tmp_path / "c", seed=2) != first


def test_a_full_writer_drops_and_counts_instead_of_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    review = queue(tmp_path / "review", backlog=1)
    release = threading.Event()
    original = review._save
    monkeypatch.setattr(review, "_save", lambda item: (release.wait(10), original(item)))
    counts = Counts()
    near = detections([[10, 10, 40, 40]], conf=0.45)
    for i in range(4):  # one being written (blocked), one waiting, two dropped
        review.consider(case(near, index=i, seconds=i), counts)
        if i == 0:
            while review._queue.qsize():  # the writer took the first one
                threading.Event().wait(0.01)
    release.set()
    review.close()
    assert counts.values == {"review_saved": 2, "review_dropped": 2}
    assert json.loads((tmp_path / "review" / "review_queue.json").read_text())["dropped"] == 2


def test_a_full_disk_is_counted_and_leaves_no_half_item(small_disk: Path) -> None:
    folder = small_disk / "review"
    counts = Counts()
    near = detections([[10, 10, 40, 40]], conf=0.45)
    review = queue(folder)
    review.consider(case(near, index=0), counts)
    review.close()
    filler = fill(small_disk)
    review = queue(folder)
    for i in range(1, 4):
        review.consider(case(near, index=i, seconds=i), counts)
    review.close()
    assert counts.values == {"review_saved": 1, "review_failures": 3}
    assert sorted(p.suffix for p in folder.iterdir()) == [".jpg", ".json", ".json"]  # item 0 and the counters
    filler.unlink()
    review = queue(folder)
    review.consider(case(near, index=4, seconds=4), counts)
    review.close()
    assert counts.values["review_saved"] == 2
    assert len(read_labelme(folder).records) == 2
