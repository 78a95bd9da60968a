"""Evidence for each reject: the raw and the annotated frame as JPEGs, and an optional annotated video.

Layout: ``<evidence_dir>/<YYYY-MM-DD>/<event_id>_raw.jpg`` and ``..._annotated.jpg`` (and, for a reject
under ``watch --evidence-cam``, ``..._cam.jpg``: see :mod:`yolodefect.inference.eigencam`), the date
being the UTC capture date, so a day's rejects can be archived or purged as one folder. Writing
evidence never stops the line: a failure is logged and the event goes out without the paths.
"""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from yolodefect.errors import UsageError

logger = logging.getLogger(__name__)


def _write_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"JPEG encoding failed for {path.name}")
    # Write then rename: a reader (or a crash) never sees half a JPEG under the final name.
    partial = path.with_name(path.name + ".part")
    try:
        with open(partial, "wb") as handle:
            handle.write(data.tobytes())
        os.replace(partial, path)
    except OSError:
        # A full disk must not also fill the folder with empty .part files, one per reject.
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise


class EvidenceWriter:
    """Saves the snapshots of one event and returns their paths by kind (``raw``, ``annotated``, ``cam``)."""

    def __init__(self, directory: Path | str, *, jpeg_quality: int = 90):
        if not 1 <= jpeg_quality <= 100:
            raise UsageError(f"JPEG quality must lie in [1, 100], got {jpeg_quality}")
        self.directory = Path(directory)
        self.jpeg_quality = jpeg_quality
        self.failures = 0  # snapshots (images) not saved

    def save(self, event_id: str, captured_at: datetime, images: dict[str, np.ndarray]) -> dict[str, str]:
        """Write each image as ``<event_id>_<kind>.jpg``; returns the paths written (missing ones on failure)."""
        day = captured_at.astimezone(timezone.utc).strftime("%Y-%m-%d")
        folder = self.directory / day
        written: dict[str, str] = {}
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.failures += len(images)
            logger.error("cannot create evidence folder %s: %s; event %s goes out without snapshots", folder, exc, event_id)
            return written
        for kind, image in images.items():
            path = folder / f"{event_id}_{kind}.jpg"
            try:
                _write_jpeg(path, image, self.jpeg_quality)
            except OSError as exc:
                self.failures += 1
                logger.error("cannot save evidence %s: %s; check free space", path, exc)
                continue
            written[kind] = str(path)
        return written


class VideoSink:
    """Writes annotated frames to a video file; opened on the first frame, whose size it keeps."""

    def __init__(self, path: Path | str, fps: float = 30.0):
        self.path = Path(path)
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None

    def write(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                self._writer = None
                raise UsageError(f"cannot write video {self.path}: OpenCV has no encoder for it; use .mp4 or .avi")
            self._size = (width, height)
        if (width, height) != self._size:
            # A camera that changes resolution mid-run: keep one video size rather than corrupt the file.
            image = cv2.resize(image, self._size)
        self._writer.write(image)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
