"""Live sources (camera index, rtsp/http streams): the latest frame wins, and outages never end the run.

A reader thread grabs continuously into a slot of one; the consumer always gets the newest frame
and every overwritten frame is counted as dropped. A camera keeps producing whether or not we keep
up, so queueing would only add latency and memory. A failed or stalled capture is reopened with
exponential backoff, forever.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import cv2

from yolodefect.data.image_file import to_bgr
from yolodefect.stream.frames import (
    POLL_S,
    Capture,
    CaptureFactory,
    Frame,
    FrameSource,
    SourceOptions,
    default_capture_factory,
    utc_now,
)

logger = logging.getLogger(__name__)


class LatestSlot:
    """A queue of one: ``put`` replaces an unconsumed item and counts it as dropped."""

    def __init__(self, on_drop: Callable[[], None] | None = None) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._on_drop = on_drop
        self.dropped = 0

    def put(self, item: Any) -> None:
        with self._cond:
            dropped = self._full
            if dropped:
                self.dropped += 1
            self._item, self._full = item, True
            self._cond.notify()
        if dropped and self._on_drop is not None:
            self._on_drop()

    def get(self, timeout: float) -> Any:
        """The newest item, or None if nothing arrived within ``timeout``."""
        with self._cond:
            if not self._full:
                self._cond.wait(timeout)
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item


class LiveSource(FrameSource):
    """A camera or network stream, read on its own thread with the latest-frame policy.

    Never ends by itself: a failed open or read is retried with exponential backoff (with jitter),
    and a capture blocked longer than ``stall_timeout_s`` is abandoned and reopened on a new thread.
    """

    live = True

    def __init__(self, name: str, target: Any, options: SourceOptions, stop_event: threading.Event | None = None,
                 capture_factory: CaptureFactory = default_capture_factory):
        super().__init__(name, options, stop_event)
        self.kind = "camera" if isinstance(target, int) else "stream"
        self.target = target
        self._capture_factory = capture_factory
        self._slot = LatestSlot(on_drop=lambda: self.stats.add("dropped"))
        self._lock = threading.Lock()
        self._generation = 0
        self._busy_since: float | None = None  # set while the reader is inside open() or read()
        self._busy_in = ""  # which of the two: "open" or "read"
        self._delay = options.reconnect_initial_s
        self._outage_since: float | None = None
        self._index = 0
        self._random = random.Random()

    def _frames(self) -> Iterator[Frame]:
        reader = self._start_reader()
        try:
            while not self._stop.is_set():
                item = self._slot.get(POLL_S * 2)
                if item is None:
                    if self._stalled():
                        # The stuck reader is a daemon left to its driver call; it exits when that returns.
                        reader = self._start_reader()
                    continue
                yield item
        finally:
            with self._lock:
                self._generation += 1  # tells every reader to stop
            reader.join(timeout=2.0)

    def _start_reader(self) -> threading.Thread:
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._busy_since = None
        thread = threading.Thread(target=self._read_loop, args=(generation,), name=f"capture-{self.name}", daemon=True)
        thread.start()
        return thread

    def _stalled(self) -> bool:
        with self._lock:
            busy, call = self._busy_since, self._busy_in
        if busy is None or time.monotonic() - busy < self.options.stall_timeout_s:
            return False
        if call == "open":
            self.stats.add("open_failures")  # the abandoned reader does not count it when its open returns
        logger.warning(
            "%s: no frame for %.1f s (capture blocked); abandoning it and reconnecting",
            self.name, time.monotonic() - busy,
        )
        self._begin_outage()
        return True

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    def _set_busy(self, generation: int, call: str | None) -> None:
        """Mark the reader as inside ``call`` ("open" or "read"), or out of it (None), for the stall watchdog."""
        with self._lock:
            if generation == self._generation:
                self._busy_since = time.monotonic() if call else None
                self._busy_in = call or ""

    def _begin_outage(self) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()

    def _backoff(self, generation: int, reason: str) -> None:
        first = self._outage_since is None
        self._begin_outage()
        # Equal jitter: several stations reconnecting to one NVR should not retry in lockstep.
        pause = self._delay * self._random.uniform(0.5, 1.0)
        log = logger.warning if first else logger.info
        log("%s: %s; reconnecting in %.1f s", self.name, reason, pause)
        self._delay = min(self._delay * 2, self.options.reconnect_max_s)
        deadline = time.monotonic() + pause
        while self._current(generation) and time.monotonic() < deadline:
            self._stop.wait(min(POLL_S * 2, deadline - time.monotonic()))

    def _read_loop(self, generation: int) -> None:
        while self._current(generation):
            self._set_busy(generation, "open")
            self.stats.add("open_attempts")
            try:
                capture = self._capture_factory(self.target)
                opened = bool(capture.isOpened())
            except Exception as exc:  # a backend that raises instead of returning "not opened"
                capture, opened = None, False
                logger.debug("%s: open raised %s", self.name, exc)
            finally:
                self._set_busy(generation, None)
            if not self._current(generation):
                if capture is not None:  # abandoned while blocked in open (counted by the watchdog) or stopped
                    _release(capture)
                return
            if opened and capture is not None:
                fps = _safe_get(capture, cv2.CAP_PROP_FPS)
                self.nominal_fps = fps if fps and 0 < fps < 1000 else self.nominal_fps
            if not opened:
                # Counted apart from reconnects: a camera that never opens shows its failures, not "0".
                self.stats.add("open_failures")
                if capture is not None:
                    _release(capture)
                self._backoff(generation, "cannot open the capture")
                continue
            reason = self._read_frames(generation, capture)
            _release(capture)
            if reason and self._current(generation):
                self._backoff(generation, reason)

    def _read_frames(self, generation: int, capture: Capture) -> str | None:
        while self._current(generation):
            self._set_busy(generation, "read")
            try:
                ok, image = capture.read()
            except Exception as exc:
                ok, image = False, None
                logger.debug("%s: read raised %s", self.name, exc)
            finally:
                self._set_busy(generation, None)
            if not self._current(generation):
                return None  # abandoned while blocked: a newer reader owns the slot now
            if not ok or image is None:
                return "the capture returned no frame"
            if self._outage_since is not None:
                logger.warning("%s: reconnected after %.1f s outage", self.name, time.monotonic() - self._outage_since)
                self._outage_since = None
                self.stats.add("reconnects")
            self._delay = self.options.reconnect_initial_s
            frame = Frame(to_bgr(image), self._index, utc_now(), self.name, None, time.monotonic())
            self._index += 1
            self._slot.put(frame)
        return None


def _safe_get(capture: Capture, prop_id: int) -> float | None:
    try:
        return float(capture.get(prop_id))
    except Exception:  # fakes and some backends do not implement every property
        return None


def _release(capture: Capture) -> None:
    try:
        capture.release()
    except Exception as exc:  # releasing a broken capture must not kill the reader
        logger.debug("release failed: %s", exc)


# ---------------------------------------------------------------------------------------------


