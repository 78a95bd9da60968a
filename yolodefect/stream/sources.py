"""Where frames come from: :func:`open_source` turns a source string into a frame source.

* camera index (``0``) and stream URLs (``rtsp://``, ``http://`` ...): live, latest frame wins,
  reconnects forever (:mod:`yolodefect.stream.live_source`);
* video file: every frame, optionally looped; image file, folder or glob: every image, one part
  each, sorted; a folder with ``follow``: a hot folder; ``-``: image paths read from stdin
  (:mod:`yolodefect.stream.file_sources`).
"""

from __future__ import annotations

import glob
import os
import threading
from pathlib import Path
from typing import Any

from yolodefect.data.image_file import UnreadableImageError, read_image, to_bgr
from yolodefect.errors import UsageError
from yolodefect.stream.file_sources import (
    IMAGE_SUFFIXES,
    ImageFilesSource,
    StdinPathsSource,
    VideoFileSource,
    WatchedFolderSource,
)
from yolodefect.stream.frames import (
    STREAM_SCHEMES,
    Capture,
    CaptureFactory,
    Frame,
    FrameSource,
    SourceOptions,
    SourceStats,
    default_capture_factory,
)
from yolodefect.stream.live_source import LatestSlot, LiveSource
from yolodefect.stream.redact import redact_urls

__all__ = [
    "IMAGE_SUFFIXES",
    "SOURCE_HELP",
    "VIDEO_SUFFIXES",
    "Capture",
    "CaptureFactory",
    "Frame",
    "FrameSource",
    "ImageFilesSource",
    "LatestSlot",
    "LiveSource",
    "SourceOptions",
    "SourceStats",
    "StdinPathsSource",
    "UnreadableImageError",
    "VideoFileSource",
    "WatchedFolderSource",
    "open_source",
    "read_image",
    "to_bgr",
]

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".wmv", ".mpg", ".mpeg", ".webm", ".ts", ".asf"})

SOURCE_HELP = (
    "a camera index (0), a stream URL (rtsp://...), a video file, an image file, folder or glob "
    "('parts/*.png'), or - to read image paths from stdin"
)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def open_source(
    spec: str | int,
    options: SourceOptions | None = None,
    *,
    stop_event: threading.Event | None = None,
    capture_factory: CaptureFactory = default_capture_factory,
    stdin: Any = None,
) -> FrameSource:
    """The source for ``spec``: see :data:`SOURCE_HELP`. Raises UsageError when it names nothing usable."""
    options = options or SourceOptions()
    text = str(spec).strip()
    if isinstance(spec, int) or text.isdigit():
        return LiveSource(f"camera:{int(text)}", int(text), options, stop_event, capture_factory)
    if text.lower().startswith(STREAM_SCHEMES):
        # The name is logged, shown and put in every event: never the camera's password.
        return LiveSource(redact_urls(text), text, options, stop_event, capture_factory)
    if text == "-":
        return StdinPathsSource(options, stop_event, stdin)
    path = Path(text).expanduser()
    if path.is_dir():
        if options.follow:
            return WatchedFolderSource(path, options, stop_event)
        files = _image_files(path)
        if not files:
            raise UsageError(f"folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                             "use --follow to wait for new files")
        return ImageFilesSource(str(path), files, options, stop_event)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            return VideoFileSource(path, options, stop_event, capture_factory)
        if suffix in IMAGE_SUFFIXES:
            return ImageFilesSource(str(path), [path], options, stop_event)
        raise UsageError(f"source {path} is neither a video ({', '.join(sorted(VIDEO_SUFFIXES))}) "
                         f"nor an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True)
                       if Path(p).suffix.lower() in IMAGE_SUFFIXES and Path(p).is_file())
        if not files:
            raise UsageError(f"no image matches {text!r}")
        return ImageFilesSource(text, files, options, stop_event)
    raise UsageError(f"source {text!r} not found; give {SOURCE_HELP}")
