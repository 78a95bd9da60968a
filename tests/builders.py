"""The records tests build over and over, built one way: station events, detections and small videos."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from yolodefect.detections import Detections
from yolodefect.stream.events import Defect, Event, ModelIdentity, new_event

TEST_MODEL = ModelIdentity("best.pt", "0" * 64, "fp16")
DEFECT_BOX = (1, 2, 3, 4)


def make_event_record(index: int = 1, decision: str = "reject", *, classes: Sequence[str] | None = None,
                      **overrides: Any) -> Event:
    """A valid station event for frame (and part) ``index``: one 'scratch' defect when rejected, none otherwise.

    ``classes`` gives the defects' classes instead (one 0.9 box each); any other event field can be overridden.
    """
    if classes is None:
        classes = ("scratch",) if decision == "reject" else ()
    fields: dict[str, Any] = dict(
        decision=decision, source="cam0", frame_index=index, captured_at=datetime.now(timezone.utc),
        latency_ms=10.0, image_size_wh=(640, 480), model=TEST_MODEL,
        defects=[Defect(name, 0.9, DEFECT_BOX) for name in classes], part_id=index,
        message="camera lost" if decision == "error" else None,
    )
    fields.update(overrides)
    return new_event(**fields)


def make_event(index: int = 1, decision: str = "reject", *, classes: Sequence[str] | None = None,
               **overrides: Any) -> dict[str, Any]:
    """:func:`make_event_record` as the JSON-able dict the outbox and the sinks carry."""
    return make_event_record(index, decision, classes=classes, **overrides).to_dict()


def detections(boxes: Sequence[Sequence[float]] = (), conf: float | Sequence[float] = 0.9,
               classes: int | str | Sequence[int | str] = 0, *, names: Sequence[str] | None = None,
               track_ids: Sequence[int] | None = None) -> Detections:
    """Detections of xyxy ``boxes``; ``conf`` and ``classes`` are one value for every box or one per box.

    Classes may be given by name when ``names`` (the model's class names) is given. ``track_ids`` makes
    them tracked detections (also when empty, as a tracker hands back a frame without boxes).
    """
    count = len(boxes)
    if names is not None:
        classes = [names.index(c) for c in classes] if not isinstance(classes, str) else names.index(classes)
    return Detections(
        xyxy=np.array(boxes, dtype=np.float32).reshape(count, 4),
        confidence=np.broadcast_to(np.asarray(conf, dtype=np.float32), (count,)).copy(),
        class_id=np.broadcast_to(np.asarray(classes, dtype=np.int64), (count,)).copy(),
        tracker_id=None if track_ids is None else np.asarray(track_ids, dtype=np.int64),
    )


def write_video(path: Path, frames: int, *, size_wh: tuple[int, int] = (64, 48), fps: float = 30.0,
                draw: Callable[[int], np.ndarray] | None = None) -> Path:
    """A real mp4 file of ``frames`` frames; ``draw(i)`` makes frame i (default: a grey level rising by 4 per frame)."""
    width, height = size_wh
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for i in range(frames):
        writer.write(draw(i) if draw is not None else np.full((height, width, 3), (4 * i) % 256, np.uint8))
    writer.release()
    return path


def read_video(path: Path) -> list[np.ndarray]:
    """Every frame of a video file as OpenCV decodes it (BGR), in order."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def nul_padded_jpeg(png: Path, padding: int) -> Path:
    """Replace the image ``png`` by a JPEG of it with ``padding`` NUL bytes after its end marker; returns the JPEG.

    A whole image that Ultralytics' dataset check still "restores" by re-saving it in place.
    """
    from PIL import Image

    jpeg = png.with_suffix(".jpg")
    Image.open(png).convert("RGB").save(jpeg, quality=95)
    png.unlink()
    jpeg.write_bytes(jpeg.read_bytes() + b"\x00" * padding)
    return jpeg
