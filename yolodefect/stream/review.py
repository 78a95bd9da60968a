"""The review queue of ``watch --review DIR``: the frames a person should look at, saved for relabelling.

Which parts (:func:`review_reasons`, judged on each decided part's per-frame class maxima, the numbers the
reject rule judged, for the classes that reject):

* ``near_threshold``: the part's decisive confidence for a class lies within the band around that class's
  threshold T, ``[T*(1-band), min(1, T*(1+band))]`` (``review_band``, default 0.5: T/2 .. 1.5 T), on either
  side: near-miss passes and marginal rejects. The decisive confidence is the one the rule compares: in image
  mode the top confidence; on a line (k-of-n rule, k = ``min_frames``) the k-th best frame's. A line part whose
  class reached T on some frames but fewer than k is near too (it was k minus a few looks from a reject).
* ``flicker``: on a line, a class that was at its threshold, lost for at least max(2, k) frames in a row, and
  at its threshold again: the model was unsure of the part while it passed by. A shorter loss is not a flicker:
  a model misses a defect on a single frame now and then (bench/review_queue.py: with 10% of frames missed,
  counting every loss flagged a quarter of all parts, nearly all of them decided right).
* ``anomaly_near_threshold``: as ``near_threshold``, for the anomaly stage's class (``watch --anomaly``).
* ``random_pass``: a passed part none of the above picked, at random with probability ``review_sample``.

An item is the frame (JPEG; on a line the part's peak frame, where a reject class came closest to or furthest
over its threshold) and its LabelMe JSON with the same stem: every detection of the model's classes at or above
its class's band floor T*(1-band) as a rectangle (pre-annotations, near-misses included; the anomaly stage's
boxes are not, they mark where a part is unusual, not a defect's extent) and the provenance under
``"yolodefect"``. The folder format is fixed (see the README's review-queue section); ``yolodefect review
merge`` reads it.

Limits: ``review_max_per_min`` items per minute (sliding 60 s window; more are counted ``rate_limited``) and
``review_max_items`` in the folder: past it the oldest item that no person has reviewed yet (see
:func:`~yolodefect.data.formats.labelme_writer.is_reviewed`) is removed, counted ``removed_oldest``; reviewed
items are never removed by the queue (they are a person's work), and when every item is reviewed a new one is
not saved (counted ``dropped``). ``DIR/review_queue.json`` holds the counters, carried over across runs.

Saving never slows or stops the line: the station only decides (a few numpy operations per part) and hands the
item to one writer thread through a bounded queue (:data:`WRITER_BACKLOG` items; when it is full the item is
dropped and counted). The writer encodes the JPEG, writes JPEG then JSON under temporary names and moves
them into place with ``os.replace``, JSON last, so a reader never finds half an item. A disk error is logged
(at most once a minute, with the count) and counted (``review_failures``), never raised.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from yolodefect.data.formats.labelme_writer import is_reviewed, labelme_document, rectangle_shape, shapes_sha256
from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.stream.events import ModelIdentity, to_utc_iso, utc_now_iso
from yolodefect.stream.line import kth_largest
from yolodefect.stream.sources import Frame

logger = logging.getLogger(__name__)

REASONS = ("near_threshold", "flicker", "anomaly_near_threshold", "random_pass")
STATE_FILE = "review_queue.json"
PROVENANCE_VERSION = 1
WRITER_BACKLOG = 16  # items waiting for the writer; a burst beyond it is dropped (counted), the line never waits
RATE_WINDOW_S = 60.0
FAILURE_LOG_PERIOD_S = 60.0
JPEG_QUALITY = 95  # a frame for labelling: keep small defects sharp

Counter = Callable[[str], None]  # the camera's stats counter (StatsBoard.add)


def band(threshold: float, fraction: float) -> tuple[float, float]:
    """The confidences near ``threshold``: [T*(1-fraction), min(1, T*(1+fraction))]."""
    return threshold * (1.0 - fraction), min(1.0, threshold * (1.0 + fraction))


@dataclass(frozen=True)
class ReviewCase:
    """One decided part as the station saw it.

    ``frame`` is the frame to save and ``detections`` all of its detections (frame pixels, the anomaly stage's
    included); ``scores`` (frames, classes) the part's per-frame class maxima (one row in image mode);
    ``thresholds`` (classes,) the confidence thresholds it was decided with; ``reject_ids`` the classes that
    reject; ``names`` every class of the station (the anomaly stage's, ``anomaly_id``, included);
    ``model_class_ids`` the detection model's own classes; ``min_frames`` k of the line's rule (1: image mode).
    """

    decision: str
    part_id: str | int | None
    event_id: str | None
    frame: Frame
    detections: Detections
    part_box: np.ndarray | None
    scores: np.ndarray
    thresholds: np.ndarray
    reject_ids: Sequence[int]
    names: Mapping[int, str]
    model_class_ids: Sequence[int]
    min_frames: int
    model: ModelIdentity
    source: str
    anomaly_id: int | None = None


def review_reasons(scores: np.ndarray, thresholds: np.ndarray, reject_ids: Sequence[int], names: Mapping[int, str],
                   *, min_frames: int, band_fraction: float, anomaly_id: int | None = None) -> tuple[list[str], list[str]]:
    """Why a part with per-frame class maxima ``scores`` (frames, classes) deserves a look: (reasons, details).

    Compared in float32, as the reject rule compares."""
    reasons: list[str] = []
    details: list[str] = []
    if scores.size == 0:
        return reasons, details
    scores = scores.astype(np.float32)
    decisive = kth_largest(scores, min_frames) if scores.shape[0] >= min_frames else np.zeros(scores.shape[1], np.float32)
    for class_id in reject_ids:
        threshold = np.float32(thresholds[class_id])
        column = scores[:, class_id]
        hits = (column > 0) & (column >= threshold)
        low, high = band(float(threshold), band_fraction)
        value = float(decisive[class_id])
        name = names.get(class_id, str(class_id))
        near_reason = "anomaly_near_threshold" if class_id == anomaly_id else "near_threshold"
        where = "top confidence" if min_frames == 1 else f"confidence on its {_ordinal(min_frames)} best frame"
        if value > 0 and np.float32(low) <= value <= np.float32(high):
            reasons.append(near_reason)
            details.append(f"{name}: {where} {value:.3f}, threshold {float(threshold):.3f} "
                           f"(band {low:.3f}-{high:.3f})")
        elif 0 < int(hits.sum()) < min_frames:
            reasons.append(near_reason)
            details.append(f"{name}: at its threshold {float(threshold):.3f} on {int(hits.sum())} frame(s), "
                           f"the rule needs {min_frames}")
        gap = longest_loss(hits)
        if gap >= max(2, min_frames):
            reasons.append("flicker")
            details.append(f"{name}: at its threshold, lost for {gap} frames, and at it again "
                           f"({int(hits.sum())} of {len(column)} frames at it)")
    return list(dict.fromkeys(reasons)), details


def longest_loss(hits: np.ndarray) -> int:
    """The longest run of False between two True in ``hits`` (frames), 0 when the True frames are one run."""
    frames = np.flatnonzero(hits)
    return int((np.diff(frames) - 1).max()) if len(frames) >= 2 else 0


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


@dataclass(frozen=True)
class _Item:
    stem: str
    image: np.ndarray
    document: dict[str, Any]
    reasons: tuple[str, ...]
    count: Counter


class ReviewQueue:
    """The review folder of one station (thread-safe: the cameras of a station share it) and its writer thread.

    ``seed`` makes the random sample of passes reproducible; ``clock`` (seconds, monotonic) drives the rate limit.
    Call :meth:`close` at the end of the run: it writes what is waiting and the counters."""

    def __init__(self, directory: Path | str, *, band_fraction: float = 0.5, sample: float = 0.01,
                 max_per_min: int = 30, max_items: int = 2000, seed: int | None = None,
                 clock: Callable[[], float] = time.monotonic, backlog: int = WRITER_BACKLOG):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the review folder {self.directory}: {exc}") from None
        self.band_fraction = band_fraction
        self.sample = sample
        self.max_per_min = max_per_min
        self.max_items = max_items
        self._clock = clock
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._admitted: deque[float] = deque()
        self._state = self._load_state()
        self._items: deque[str] = deque(sorted(p.stem for p in self.directory.glob("*.json") if p.name != STATE_FILE))
        self._reviewed: set[str] = set()  # stems known to be a person's work: never removed
        self._last_failure_log = -float("inf")
        self._unlogged_failures = 0
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=backlog)
        self._thread = threading.Thread(target=self._run, name="review-writer", daemon=True)
        self._thread.start()

    # -- deciding (the camera's thread) ----------------------------------------------------------------

    def floor(self, threshold: float) -> float:
        """The lowest confidence of a class with ``threshold`` that the queue shows (its band's floor)."""
        return band(threshold, self.band_fraction)[0]

    def consider(self, case: ReviewCase, count: Counter) -> list[str]:
        """Queue ``case`` for saving when it deserves a look and the rate allows; returns its reasons ([] when
        it was not picked). Never raises for a full writer: the item is dropped and counted."""
        reasons, details = review_reasons(case.scores, case.thresholds, case.reject_ids, case.names,
                                          min_frames=case.min_frames, band_fraction=self.band_fraction,
                                          anomaly_id=case.anomaly_id)
        if not reasons and case.decision == "pass":
            with self._lock:
                picked = self.sample > 0 and self._random.random() < self.sample
            if picked:
                reasons, details = ["random_pass"], [f"a random sample of passed parts ({self.sample:g})"]
        if not reasons:
            return []
        if not self._admit(count):
            return reasons
        item = _Item(self._stem(case), case.frame.image, self._document(case, reasons, details), tuple(reasons), count)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            count("review_dropped")
            with self._lock:
                self._state["dropped"] += 1
            self._log_failure("the review writer is behind (%d items waiting): item dropped", self._queue.maxsize)
        return reasons

    def _admit(self, count: Counter) -> bool:
        now = self._clock()
        with self._lock:
            while self._admitted and now - self._admitted[0] >= RATE_WINDOW_S:
                self._admitted.popleft()
            if len(self._admitted) >= self.max_per_min:
                self._state["rate_limited"] += 1
                admitted = False
            else:
                self._admitted.append(now)
                admitted = True
        if not admitted:
            count("review_rate_limited")
        return admitted

    def _stem(self, case: ReviewCase) -> str:
        moment = case.frame.captured_at
        utc = to_utc_iso(moment)  # ...THH:MM:SS.fffZ; refuses a naive time
        stamp = utc[:19].replace("-", "").replace(":", "") + "_" + utc[20:23]
        ident = case.event_id.replace("-", "")[:8] if case.event_id else uuid.uuid4().hex[:8]
        return f"{stamp}_{ident}"

    def _document(self, case: ReviewCase, reasons: list[str], details: list[str]) -> dict[str, Any]:
        names = case.names
        model_ids = set(case.model_class_ids)
        shapes = []
        for box, confidence, class_id in zip(case.detections.xyxy, case.detections.confidence, case.detections.class_id):
            class_id = int(class_id)
            if class_id not in model_ids or class_id >= len(case.thresholds):
                continue  # the anomaly stage's box marks where a part is unusual, not a defect's extent
            if np.float32(confidence) < np.float32(self.floor(float(case.thresholds[class_id]))):
                continue
            shapes.append(rectangle_shape(names[class_id], box.tolist(), float(confidence)))
        part_box = None if case.part_box is None else [round(float(v), 1) for v in case.part_box]
        provenance = {
            "version": PROVENANCE_VERSION, "event_id": case.event_id, "part_id": case.part_id,
            "saved_at": None, "captured_at": to_utc_iso(case.frame.captured_at), "source": case.source,
            "frame_index": int(case.frame.index), "model": case.model.to_dict(),
            "class_names": [names[i] for i in sorted(model_ids)],
            "thresholds": {names[i]: round(float(case.thresholds[i]), 6) for i in sorted(names) if i < len(case.thresholds)},
            "reasons": reasons, "detail": "; ".join(details), "decision": case.decision,
            "part_bbox_xyxy": part_box, "predictions_sha256": shapes_sha256(shapes),
        }
        return labelme_document(shapes, "", case.frame.size_wh, extra={"yolodefect": provenance})

    # -- writing (the writer thread) ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._save(item)
            except Exception as exc:  # a bug here must not kill the writer: the next item still gets its chance
                item.count("review_failures")
                self._log_failure("saving review item %s failed: %s: %s", item.stem, type(exc).__name__, exc)

    def _save(self, item: _Item) -> None:
        if not self._make_room(item.count):
            item.count("review_dropped")
            with self._lock:
                self._state["dropped"] += 1
            self._log_failure("the review folder %s holds %d reviewed item(s), its limit (review_max_items): merge "
                              "them ('yolodefect review merge') or raise the limit; new items are not saved",
                              self.directory, len(self._items))
            return
        image_path = self.directory / f"{item.stem}.jpg"
        json_path = self.directory / f"{item.stem}.json"
        document = dict(item.document)
        document["imagePath"] = image_path.name
        document["yolodefect"] = {**document["yolodefect"], "saved_at": utc_now_iso()}
        try:
            ok, data = cv2.imencode(".jpg", item.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise OSError("JPEG encoding failed")
            _write_atomically(image_path, data.tobytes())
            _write_atomically(json_path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
        except OSError as exc:
            with contextlib.suppress(OSError):
                image_path.unlink(missing_ok=True)  # no image without its JSON (a reader would take it as background)
            item.count("review_failures")
            with self._lock:
                self._state["failed"] += 1
            self._log_failure("cannot save review item %s in %s: %s (check free space)", item.stem, self.directory, exc)
            self._write_state()
            return
        item.count("review_saved")
        with self._lock:
            self._items.append(item.stem)
            self._state["saved"] += 1
            for reason in item.reasons:
                self._state["by_reason"][reason] = self._state["by_reason"].get(reason, 0) + 1
        self._write_state()

    def _make_room(self, count: Counter) -> bool:
        """Remove the oldest unreviewed items until one more fits; False when only reviewed items are left."""
        while len(self._items) >= self.max_items:
            stem = next((s for s in self._items if s not in self._reviewed), None)
            if stem is None:
                return False
            json_path = self.directory / f"{stem}.json"
            if self._reviewed_on_disk(json_path):
                self._reviewed.add(stem)
                continue
            try:
                json_path.unlink(missing_ok=True)  # the JSON first: without it the item is gone for every reader
                for image in self.directory.glob(f"{stem}.*"):
                    image.unlink(missing_ok=True)
            except OSError as exc:
                self._log_failure("cannot remove the oldest review item %s: %s", stem, exc)
                return False
            with self._lock:
                self._items.remove(stem)
                self._state["removed_oldest"] += 1
            count("review_removed")  # in the stats of the camera whose item made room
        return True

    def _reviewed_on_disk(self, json_path: Path) -> bool:
        try:
            document = json.loads(json_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return True  # unreadable: maybe a person is saving it right now; never delete what we cannot judge
        provenance = document.get("yolodefect") if isinstance(document, dict) else None
        sha = provenance.get("predictions_sha256") if isinstance(provenance, dict) else None
        return not isinstance(document, dict) or is_reviewed(document, sha)

    # -- state ----------------------------------------------------------------------------------------

    def _load_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"version": 1, "saved": 0, "removed_oldest": 0, "rate_limited": 0, "dropped": 0,
                                 "failed": 0, "by_reason": {}, "max_items": self.max_items}
        path = self.directory / STATE_FILE
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return state
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            logger.warning("the review queue's counters in %s are unreadable (%s); counting from 0", path, exc)
            return state
        if isinstance(old, dict):  # carried over: the counters are the folder's, across runs
            for key in ("saved", "removed_oldest", "rate_limited", "dropped", "failed"):
                if isinstance(old.get(key), int):
                    state[key] = old[key]
            if isinstance(old.get("by_reason"), dict):
                state["by_reason"] = {str(k): int(v) for k, v in old["by_reason"].items() if isinstance(v, int)}
        return state

    def state(self) -> dict[str, Any]:
        """The counters as ``review_queue.json`` holds them, with the number of items now in the folder."""
        with self._lock:
            return {**self._state, "by_reason": dict(self._state["by_reason"]), "items": len(self._items),
                    "max_items": self.max_items}

    def _write_state(self) -> None:
        try:
            _write_atomically(self.directory / STATE_FILE, (json.dumps(self.state(), indent=2) + "\n").encode("utf-8"))
        except OSError as exc:
            self._log_failure("cannot write %s: %s", self.directory / STATE_FILE, exc)

    def _log_failure(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_failure_log < FAILURE_LOG_PERIOD_S:
                self._unlogged_failures += 1
                return
            suppressed, self._unlogged_failures, self._last_failure_log = self._unlogged_failures, 0, now
        logger.error("review queue: " + message + (f" (and {suppressed} more since the last report)" if suppressed else ""),
                     *args)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write the items still waiting, then the counters; stop the writer."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            logger.warning("review queue: the writer did not catch up within %.0f s; %d item(s) not saved",
                           timeout_s, self._queue.qsize())
        self._thread.join(timeout=timeout_s)
        self._write_state()


def _write_atomically(path: Path, data: bytes) -> None:
    """``data`` under a temporary name beside ``path``, then moved into place: a reader never sees half a file."""
    partial = path.with_name(path.name + ".part")
    try:
        with open(partial, "wb") as handle:
            handle.write(data)
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise
