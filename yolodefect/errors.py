"""Exceptions a user can act on. The CLI prints them as one red line; the library raises them."""

from __future__ import annotations

from pathlib import Path


class YoloDefectError(Exception):
    """Base class: the message alone must tell the user what to fix."""


class UsageError(YoloDefectError):
    """The options given cannot work together (CLI exit code 2)."""


class FormatError(YoloDefectError):
    """A source file is malformed. Names the file and, when known, the line or element."""

    def __init__(self, path: Path | str, detail: str, *, where: str | None = None):
        self.path = Path(path)
        self.detail = detail
        self.where = where
        location = f"{self.path}" + (f" ({where})" if where else "")
        super().__init__(f"{location}: {detail}")


class DatasetError(YoloDefectError):
    """A dataset as a whole cannot be used (missing folders, no images, bad data.yaml)."""
