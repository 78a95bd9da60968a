"""The frame record and what every source shares: options, counters, pacing, decoding, the capture protocol.

Two reading policies build on :class:`FrameSource` (supervision's ``process_video`` shape in both):
every frame for files (:mod:`yolodefect.stream.file_sources`) and latest frame for cameras and
streams (:mod:`yolodefect.stream.live_source`). :func:`yolodefect.stream.sources.open_source`
picks one from a source string.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from yolodefect.errors import UsageError

logger = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")

# How long a consumer waits on an empty queue or slot before re-checking the stop event.
POLL_S = 0.05


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` the sources use; tests inject fakes with this shape."""

    def isOpened(self) -> bool: ...

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...

    def get(self, prop_id: int) -> float: ...


CaptureFactory = Callable[[Any], Capture]


@dataclass(frozen=True)
class Frame:
    """One image to inspect. ``image`` is BGR uint8 (H, W, 3); ``captured_at`` is UTC.

    ``index`` counts frames read from the source (for live sources, dropped ones included, so
    gaps show drops). ``part_hint`` is the file name when one file is one part.
    ``captured_monotonic`` is the same moment on the monotonic clock, for latency that a wall-clock
    step cannot distort.
    """

    image: np.ndarray
    index: int
    captured_at: datetime
    source: str
    part_hint: str | None = None
    captured_monotonic: float = field(default_factory=time.monotonic)

    @property
    def size_wh(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True)
class SourceOptions:
    """How a source reads; every field has a safe default for a production line."""

    fps_cap: float | None = None  # deliver at most this many frames per second (None: as fast as possible)
    loop: bool = False  # video files: start again at the end (demos, soak tests)
    follow: bool = False  # a folder: keep watching it for new files instead of reading it once
    stall_timeout_s: float = 5.0  # live: a capture blocked this long in open/read is abandoned and reopened
    reconnect_initial_s: float = 0.5  # live: first wait after a failure; doubles up to reconnect_max_s
    reconnect_max_s: float = 30.0
    poll_interval_s: float = 0.25  # hot folder: how often to list it
    settle_s: float = 0.5  # hot folder: a file must keep the same size and mtime this long before reading
    queue_size: int = 8  # hot folder and stdin: images read ahead

    def __post_init__(self) -> None:
        if self.fps_cap is not None and self.fps_cap <= 0:
            raise UsageError(f"fps cap must be > 0 (or unset for no cap), got {self.fps_cap}")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
            raise UsageError(
                f"need 0 < reconnect_initial_s ({self.reconnect_initial_s}) <= reconnect_max_s ({self.reconnect_max_s})"
            )
        if self.stall_timeout_s <= 0 or self.poll_interval_s <= 0 or self.settle_s < 0 or self.queue_size < 1:
            raise UsageError("stall_timeout_s and poll_interval_s must be > 0, settle_s >= 0, queue_size >= 1")


class SourceStats:
    """Counters shared by the reader thread and the consumer (hence the lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames = 0  # delivered to the consumer
        self.dropped = 0  # live frames replaced by a newer one before they were consumed
        self.skipped = 0  # corrupt images / undecodable frames
        self.reconnects = 0  # live: successful reopen after an outage

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"frames": self.frames, "dropped": self.dropped, "skipped": self.skipped, "reconnects": self.reconnects}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Every stage downstream expects 3-channel BGR uint8; mono cameras and PNGs with alpha are converted."""
    if image.dtype != np.uint8:
        # 16-bit machine-vision images: scale rather than clip so the full range stays visible.
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(float(image.max()), 1.0))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def read_image(path: Path) -> np.ndarray | None:
    """Decode an image file to BGR, or None when it is unreadable (corrupt, truncated, not an image)."""
    try:
        # np.fromfile + imdecode also handles non-ASCII paths, which cv2.imread does not on Windows.
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        logger.warning("cannot read %s: %s; skipped", path, exc)
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        logger.warning("cannot decode %s (corrupt, truncated or not an image); skipped", path)
        return None
    return to_bgr(image)


def default_capture_factory(target: Any) -> Capture:
    """``cv2.VideoCapture`` with open/read timeouts for network streams, so a dead camera cannot hang a read forever."""
    if isinstance(target, str) and target.startswith(STREAM_SCHEMES):
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
        return cv2.VideoCapture(target, cv2.CAP_ANY, params)
    return cv2.VideoCapture(target)


class FrameSource:
    """Iterate to get :class:`Frame` objects; :meth:`stop` ends the iteration from any thread.

    ``live`` says frames are dropped when the consumer is slow; ``per_part`` says each frame is one
    part (image files) rather than a view of a moving line (video, camera).
    """

    kind: str = "source"
    live: bool = False
    per_part: bool = False
    nominal_fps: float | None = None  # what the container or camera reports, once opened (for output videos)

    def __init__(self, name: str, options: SourceOptions, stop_event: threading.Event | None = None):
        self.name = name
        self.options = options
        self.stats = SourceStats()
        self._stop = stop_event if stop_event is not None else threading.Event()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def __iter__(self) -> Iterator[Frame]:
        pace = _Pacer(self.options.fps_cap, self._stop)
        for frame in self._frames():
            if self._stop.is_set():
                return
            self.stats.add("frames")
            yield frame
            pace.wait()

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _Pacer:
    """Sleeps between frames so the consumer sees at most ``fps`` frames per second."""

    def __init__(self, fps: float | None, stop: threading.Event):
        self._period = 1.0 / fps if fps else 0.0
        self._stop = stop
        self._next = time.monotonic()

    def wait(self) -> None:
        if not self._period:
            return
        self._next = max(self._next + self._period, time.monotonic() - self._period)
        delay = self._next - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)


