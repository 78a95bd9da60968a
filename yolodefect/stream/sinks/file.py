"""Sinks that write JSON lines locally: a file (fsynced per event) and stdout."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from yolodefect.stream.sinks.base import SinkError, event_json


class JsonlFileSink:
    """Appends one JSON line per event and fsyncs it, so an acked event survives a power cut."""

    def __init__(self, path: Path | str, *, name: str | None = None):
        self.path = Path(path)
        # Absolute, so the outbox queue keeps its name when the station is restarted from another cwd.
        self.name = name or f"file:{self.path.absolute()}"
        self._lock = threading.Lock()
        self._fh: TextIO | None = None

    def _open(self) -> TextIO:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8", newline="\n")
        return self._fh

    def send(self, event: Mapping[str, Any]) -> None:
        line = event_json(event) + "\n"
        with self._lock:
            try:
                fh = self._open()
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                # Reopen next time: the file may have been rotated away or the disk remounted.
                self._close_locked()
                raise SinkError(f"cannot append to {self.path}: {exc}; check free space and permissions") from exc

    def _close_locked(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None

    def close(self) -> None:
        with self._lock:
            self._close_locked()


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
