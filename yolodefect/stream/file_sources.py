"""Every-frame sources: video files, image files and globs, hot folders, stdin.

Video files and image lists are decoded on the consumer's thread, one frame at a time. A read-ahead
thread would overlap decoding with inference, but the model already uses every core: on 2 cores a
decoding thread preempts ONNX Runtime's pool and the model call went from 26 to 33 ms (median), far
more than the 0.4 ms a 640x360 frame takes to decode. Sources that wait on the outside world (a hot
folder, stdin) keep a reader thread feeding a bounded queue, blocking when it is full, so nothing is
dropped and memory stays bounded; a sentinel ends the stream and the thread is joined in
``finally``.

One bad file must not stop a line, and no part may pass silently: an image file that cannot be
read or decoded (missing, empty, truncated, corrupt) still yields its frame, carrying the error
(:attr:`Frame.error`), so the station gives that part an ``error`` decision. An undecodable frame
inside a video is logged, counted as skipped and passed over; a video that ends before the frame
count its container promised (a half-written or cut file) is logged and counted as truncated.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from yolodefect.data.image_file import UnreadableImageError, read_image, to_bgr
from yolodefect.errors import UsageError
from yolodefect.stream.frames import (
    POLL_S,
    CaptureFactory,
    Frame,
    FrameSource,
    SourceOptions,
    default_capture_factory,
    utc_now,
)

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"})
# Consecutive failed reads inside a video file before treating the rest of it as unreadable.
_MAX_BAD_VIDEO_FRAMES = 25

_END = object()


@dataclass
class _Raw:
    image: np.ndarray
    index: int
    part_hint: str | None = None
    error: str | None = None


def _part_from_file(path: Path, index: int) -> _Raw:
    """One part read from ``path``; an unreadable file gives a placeholder carrying the error, never nothing."""
    try:
        return _Raw(read_image(path), index, path.name)
    except UnreadableImageError as exc:
        logger.warning("%s; the part gets an error decision", exc)
        return _Raw(Frame.placeholder(str(exc)), index, path.name, str(exc))


def _bounded_reader(produce: Iterator[_Raw], stop: threading.Event, done: threading.Event, maxsize: int,
                    name: str) -> Iterator[_Raw]:
    """Run ``produce`` on a thread feeding a bounded queue; yield its items in order, then re-raise its error.

    ``done`` is set when the consumer leaves (end, break or stop); producers watch it to quit waiting.
    """
    items: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
    failure: list[BaseException] = []

    def put(item: Any) -> bool:
        while not (stop.is_set() or done.is_set()):
            try:
                items.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in produce:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it on its own thread
            failure.append(exc)
        finally:
            put(_END)

    thread = threading.Thread(target=run, name=f"read-{name}", daemon=True)
    thread.start()
    try:
        while not stop.is_set():
            try:
                item = items.get(timeout=POLL_S)
            except queue.Empty:
                if not thread.is_alive() and items.empty():
                    break
                continue
            if item is _END:
                break
            yield item
        if failure:
            raise failure[0]
    finally:
        done.set()
        while True:  # unblock a reader waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                break
        # A reader blocked in stdin or a slow disk cannot be interrupted; it is a daemon and exits with us.
        thread.join(timeout=2.0)


class _EveryFrameSource(FrameSource):
    # False: decode on the consumer's thread (pure CPU work, see the module docstring).
    read_ahead: bool = True

    def __init__(self, name: str, options: SourceOptions, stop_event: threading.Event | None = None):
        super().__init__(name, options, stop_event)
        self._done = threading.Event()

    def _halted(self) -> bool:
        return self._stop.is_set() or self._done.is_set()

    def _frames(self) -> Iterator[Frame]:
        self._done = threading.Event()  # one per iteration
        # Inline, leaving the loop closes the generator, which releases the capture; ``_done`` only
        # matters to a reader thread.
        raws = (_bounded_reader(self._produce(), self._stop, self._done, self.options.queue_size, self.name)
                if self.read_ahead else self._produce())
        for raw in raws:
            # Stamped when the pipeline takes the frame: a file has no capture time, and stamping at
            # read-ahead would count queue wait as latency.
            yield Frame(raw.image, raw.index, utc_now(), self.name, raw.part_hint, time.monotonic(), raw.error)

    def _produce(self) -> Iterator[_Raw]:
        raise NotImplementedError


class VideoFileSource(_EveryFrameSource):
    """Every frame of a video file, in order; ``loop`` restarts it at the end."""

    kind = "video"
    read_ahead = False

    def __init__(self, path: Path, options: SourceOptions, stop_event: threading.Event | None = None,
                 capture_factory: CaptureFactory = default_capture_factory):
        super().__init__(str(path), options, stop_event)
        self.path = path
        self._capture_factory = capture_factory

    def _produce(self) -> Iterator[_Raw]:
        index = 0
        while not self._halted():
            capture = self._capture_factory(str(self.path))
            try:
                if not capture.isOpened():
                    raise UsageError(f"cannot open video {self.path}: not a video OpenCV can decode (try re-encoding to H.264 mp4)")
                total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
                self.nominal_fps = _positive(capture.get(cv2.CAP_PROP_FPS))
                attempted = 0
                bad_in_row = 0
                frames_this_pass = 0
                while not self._halted():
                    ok, image = capture.read()
                    attempted += 1
                    if ok and image is not None:
                        if bad_in_row:
                            # Bad frames with good ones after them were skipped; a bad run at the end is truncation.
                            self.stats.add("skipped", bad_in_row)
                            logger.warning("%s: frames %d to %d cannot be decoded; skipped", self.path,
                                           attempted - 1 - bad_in_row, attempted - 2)
                            bad_in_row = 0
                        frames_this_pass += 1
                        yield _Raw(to_bgr(image), index)
                        index += 1
                        continue
                    # A failed read is the end of the file unless the container says frames remain.
                    if attempted >= total or bad_in_row >= _MAX_BAD_VIDEO_FRAMES:
                        break
                    bad_in_row += 1
            finally:
                capture.release()
            self._check_complete(attempted - 1 - bad_in_row, total, first_pass=index == frames_this_pass)
            if not self.options.loop or frames_this_pass == 0:
                return
            logger.debug("%s: end of video, looping", self.path)

    def _check_complete(self, frames_read: int, total: int, *, first_pass: bool) -> None:
        """Warn when the file ended before the frame count its container promised (cut or still being written)."""
        if self._halted() or frames_read >= total:
            return
        message = f"video {self.path} ended early at frame {frames_read} of {total} (truncated file?)"
        self.stats.note_truncation(message)
        # Once per run: a looped cut file would otherwise say the same thing every pass.
        (logger.warning if first_pass else logger.debug)(message)


def _positive(value: float) -> float | None:
    return float(value) if value and value > 0 else None


class ImageFilesSource(_EveryFrameSource):
    """A fixed, sorted list of image files; each file is one part (``part_hint`` = file name)."""

    kind = "images"
    per_part = True
    read_ahead = False

    def __init__(self, name: str, paths: list[Path], options: SourceOptions, stop_event: threading.Event | None = None):
        super().__init__(name, options, stop_event)
        self.paths = paths

    def _produce(self) -> Iterator[_Raw]:
        for index, path in enumerate(self.paths):
            if self._halted():
                return
            yield _part_from_file(path, index)


class WatchedFolderSource(_EveryFrameSource):
    """A hot folder: every image file that appears is read once, after its size stops changing.

    Files already there at start are processed too (a station that was down must not lose parts),
    so a restart re-inspects them; move processed files away upstream if that matters. A file that
    has settled but cannot be decoded (empty, cut short, corrupt) yields a frame carrying the error,
    read once like any other: write parts under a temporary name and rename them into the folder.
    """

    kind = "folder"
    per_part = True

    def __init__(self, folder: Path, options: SourceOptions, stop_event: threading.Event | None = None):
        super().__init__(str(folder), options, stop_event)
        self.folder = folder

    def _produce(self) -> Iterator[_Raw]:
        done: set[str] = set()
        # name -> (size, mtime_ns, monotonic time it was first seen with that size and mtime)
        settling: dict[str, tuple[int, int, float]] = {}
        index = 0
        while not self._halted():
            ready: list[tuple[int, str, Path]] = []
            present: set[str] = set()
            try:
                entries = list(os.scandir(self.folder))
            except OSError as exc:
                logger.warning("cannot list %s: %s; retrying", self.folder, exc)
                entries = []
            now = time.monotonic()
            for entry in entries:
                if Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES or entry.name.startswith("."):
                    continue
                present.add(entry.name)
                if entry.name in done:
                    continue
                try:
                    stat = entry.stat()
                except OSError:
                    continue  # vanished between listing and stat
                seen = settling.get(entry.name)
                if seen is None or (seen[0], seen[1]) != (stat.st_size, stat.st_mtime_ns):
                    settling[entry.name] = (stat.st_size, stat.st_mtime_ns, now)
                elif now - seen[2] >= self.options.settle_s:  # an empty file too: it gets an error decision
                    ready.append((stat.st_mtime_ns, entry.name, Path(entry.path)))
            # Forget files that were removed, so memory follows the folder, not the run length.
            done &= present
            for name in list(settling):
                if name not in present:
                    del settling[name]
            for _, name, path in sorted(ready):
                settling.pop(name, None)
                done.add(name)
                yield _part_from_file(path, index)
                index += 1
            if not ready:
                self._done.wait(self.options.poll_interval_s)


class StdinPathsSource(_EveryFrameSource):
    """Image paths read from stdin, one per line, each one part (for a trigger program upstream)."""

    kind = "stdin"
    per_part = True

    def __init__(self, options: SourceOptions, stop_event: threading.Event | None = None, stream: Any = None):
        super().__init__("stdin", options, stop_event)
        self._stream = stream

    def _produce(self) -> Iterator[_Raw]:
        stream = self._stream or sys.stdin
        index = 0
        for line in stream:
            if self._halted():
                return
            text = line.strip()
            if not text:
                continue
            yield _part_from_file(Path(text).expanduser(), index)
            index += 1


