"""The staging folder a dataset is written into before it replaces OUT, and what a stopped run leaves.

OUT appears complete or not at all: the dataset is written into ``.OUT.partial-XXXXXXXX`` beside
OUT and renamed at the end. Ctrl-C and SIGTERM (``kill``, a service manager, a container stop)
remove the staging folder. SIGKILL or a power cut cannot be caught, so each staging folder holds
a marker naming its process; the next run writing the same OUT removes the folders whose process
is provably gone (same host, that pid no longer running), and never one it cannot prove stale.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil  # an Ultralytics dependency: process start times on every platform

logger = logging.getLogger(__name__)

MARKER_NAME = ".yolodefect-staging.json"
_LEFTOVER_KINDS = ("partial", "replaced")  # unfinished new datasets, and old ones being deleted


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same cleanup runs."""

    exit_code = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM

    def __init__(self) -> None:
        super().__init__("terminated (SIGTERM)")


@dataclass(frozen=True)
class StagingOwner:
    """The process writing a staging folder, as its marker file records it."""

    pid: int
    host: str
    started_at: str  # ISO time, for people reading the marker
    process_start: float | None  # when pid started (psutil's create_time), so a reused pid is told apart

    @classmethod
    def current(cls) -> StagingOwner:
        return cls(os.getpid(), socket.gethostname(), datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   _process_start(os.getpid()))

    def is_running(self) -> bool:
        """Whether this process may still be running (True when it cannot be told: never remove then)."""
        if self.host != socket.gethostname():
            return True  # another machine's pid means nothing here
        now_start = _process_start(self.pid)
        if now_start is None:
            return psutil.pid_exists(self.pid)  # gone, or (rarely) its start time cannot be read
        return self.process_start is None or now_start == self.process_start


def _process_start(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch, as psutil reads it per platform); None if it is not running."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def write_marker(folder: Path) -> None:
    (folder / MARKER_NAME).write_text(json.dumps(asdict(StagingOwner.current())), encoding="utf-8")


def read_marker(folder: Path) -> StagingOwner | None:
    """The owner a staging folder's marker names; None when it has no readable marker."""
    try:
        data = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
        return StagingOwner(int(data["pid"]), str(data["host"]), str(data.get("started_at", "")),
                            None if data.get("process_start") is None else float(data["process_start"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def leftover_folders(out: Path) -> list[Path]:
    """Staging folders of OUT's name beside it, from this run or any other."""
    return sorted(path for kind in _LEFTOVER_KINDS
                  for path in out.parent.glob(f".{glob.escape(out.name)}.{kind}-*") if path.is_dir())


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove the staging folders of OUT left by runs that were killed; returns those removed.

    Only folders whose marker names this host and a process that no longer runs: a folder without
    a marker, or of a run still going (here or on another machine sharing the disk), is left alone.
    """
    removed = []
    for folder in leftover_folders(out):
        owner = read_marker(folder)
        if owner is None or owner.is_running():
            continue
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("removed %s, left by a stopped run (pid %d, started %s)", folder, owner.pid, owner.started_at)
        removed.append(folder)
    return removed


@contextlib.contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A staging folder beside ``out`` that replaces it only if the block completes.

    Beside, not in /tmp, so the final rename is atomic and relative symlinks stay valid.
    """
    out = Path(os.path.abspath(out))  # "a/.." has no usable name; abspath keeps symlinks as they are
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        write_marker(staging)
        yield staging
        (staging / MARKER_NAME).unlink()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = None
    if out.exists():
        previous = out.parent / f".{out.name}.replaced-{uuid.uuid4().hex[:8]}"
        out.rename(previous)
    staging.rename(out)
    if previous is not None:
        with contextlib.suppress(OSError):  # garbage from here on: if this run dies deleting it, the next one finishes
            write_marker(previous)
        shutil.rmtree(previous, ignore_errors=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` as Ctrl-C raises KeyboardInterrupt.

    Only in the main thread (Python allows handlers nowhere else) and only when SIGTERM has its
    default action: a program embedding the library with its own handler keeps it.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handle(signum, frame) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
