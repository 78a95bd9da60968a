"""The frame record and what every source shares: options, counters, pacing, decoding, the capture protocol.

Two reading policies build on :class:`FrameSource` (supervision's ``process_video`` shape in both):
every frame for files (:mod:`yolodefect.stream.file_sources`) and latest frame for cameras and
streams (:mod:`yolodefect.stream.live_source`). :func:`yolodefect.stream.sources.open_source`
picks one from a source string.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import cv2
import numpy as np

from yolodefect.errors import UsageError

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")

# How long a consumer waits on an empty queue or slot before re-checking the stop event.
POLL_S = 0.05
# The stand-in picture of a part whose file cannot be decoded (see Frame.placeholder).
_PLACEHOLDER_WH = (640, 360)


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

    ``error`` is set when the part's file could not be read or decoded: the part still enters the
    station (it must leave with an ``error`` decision, never silently), and ``image`` is then a
    placeholder that shows the error (see :meth:`placeholder`), not a picture of the part.
    """

    image: np.ndarray
    index: int
    captured_at: datetime
    source: str
    part_hint: str | None = None
    captured_monotonic: float = field(default_factory=time.monotonic)
    error: str | None = None

    @property
    def size_wh(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])

    @staticmethod
    def placeholder(error: str) -> np.ndarray:
        """The image an unreadable part carries: dark grey with ``error`` written on it.

        Events need an image size and evidence needs a picture; this one tells whoever opens the
        evidence what happened instead of showing a blank.
        """
        width, height = _PLACEHOLDER_WH
        image = np.full((height, width, 3), 40, dtype=np.uint8)
        lines = ["UNREADABLE PART"] + [error[i:i + 60] for i in range(0, min(len(error), 240), 60)]
        for row, text in enumerate(lines):
            cv2.putText(image, text, (12, 40 + 32 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.55 if row else 0.9,
                        (255, 255, 255), 1, cv2.LINE_AA)
        return image


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

    _COUNTERS = ("frames", "dropped", "skipped", "reconnects", "open_attempts", "open_failures", "truncated")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames = 0  # delivered to the consumer (unreadable parts included: they carry an error)
        self.dropped = 0  # live frames replaced by a newer one before they were consumed
        self.skipped = 0  # video frames that could not be decoded, inside a file that goes on after them
        self.reconnects = 0  # live: successful reopen after an outage
        self.open_attempts = 0  # live: times the capture was opened (the first time included)
        self.open_failures = 0  # live: opens that failed or raised
        self.truncated = 0  # video: passes that ended before the frame count the container promised
        self.truncation: str | None = None  # the last such ending, in words

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def note_truncation(self, message: str) -> None:
        with self._lock:
            self.truncated += 1
            self.truncation = message

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**{name: getattr(self, name) for name in self._COUNTERS}, "truncation": self.truncation}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


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


