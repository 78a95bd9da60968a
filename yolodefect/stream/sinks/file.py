"""Sinks that write JSON lines locally: a file (fsynced per event) and stdout."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from yolodefect.stream.sinks.base import SinkError, event_json

logger = logging.getLogger(__name__)


class JsonlFileSink:
    """Appends one JSON line per event and fsyncs it, so an acked event survives a power cut.

    The file only ever holds whole lines: a line is written with one ``write`` loop and, if that or
    the fsync fails (disk full mid-line), the file is truncated back to its size before the line, so
    the retry does not land after half a copy. A partial last line found on opening (a crash
    mid-write; that event was not acked and comes again) is cut off the same way. One sink writes a
    file: another writer appending to it meanwhile would have its lines cut.
    """

    def __init__(self, path: Path | str, *, name: str | None = None):
        self.path = Path(path)
        # Absolute, so the outbox queue keeps its name when the station is restarted from another cwd.
        self.name = name or f"file:{self.path.absolute()}"
        self._lock = threading.Lock()
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Read-write: the partial-line check reads the tail.
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _cut_partial_last_line(fd, self.path)
            except OSError:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    def send(self, event: Mapping[str, Any]) -> None:
        line = (event_json(event) + "\n").encode("utf-8")
        with self._lock:
            try:
                fd = self._open()
                size_before = os.fstat(fd).st_size
                try:
                    view = memoryview(line)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError:
                    _truncate_back(fd, size_before, self.path)
                    raise
            except OSError as exc:
                # Reopen next time: the file may have been rotated away or the disk remounted.
                self._close_locked()
                raise SinkError(f"cannot append to {self.path}: {exc}; check free space and permissions") from exc

    def _close_locked(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def close(self) -> None:
        with self._lock:
            self._close_locked()


def _truncate_back(fd: int, size: int, path: Path) -> None:
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as exc:  # the partial line stays; _cut_partial_last_line removes it on the next open
        logger.warning("cannot cut a partial line off %s: %s; it is cut when the file is opened again", path, exc)


def _cut_partial_last_line(fd: int, path: Path) -> None:
    """Truncate a last line that has no newline (a write cut short by a crash or a full disk)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    chunk = 64 * 1024
    while end > 0:
        start = max(0, end - chunk)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    else:
        keep = 0
    logger.warning("%s ended with a partial line (%d bytes, from an interrupted write); cut off",
                   path, size - keep)
    os.ftruncate(fd, keep)
    os.fsync(fd)


class StdoutSink:
    """Prints one JSON line per event to stdout (for piping into other tools)."""

    def __init__(self, stream: TextIO | None = None, *, name: str = "stdout"):
        self.name = name
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, event: Mapping[str, Any]) -> None:
        stream = self._stream or sys.stdout  # looked up late so pytest's capture and redirects apply
        with self._lock:
            try:
                stream.write(event_json(event) + "\n")
                stream.flush()
            except (OSError, ValueError) as exc:
                raise SinkError(f"cannot write event to stdout: {exc}") from exc

    def close(self) -> None:
        pass
