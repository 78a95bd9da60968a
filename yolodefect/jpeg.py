"""Where a JPEG's image data ends: the one rule ``convert``, ``check`` and the station share.

A JPEG is whole when its end-of-image marker (``FF D9``) follows its first scan. Bytes after the
marker (NUL padding from copy tools, trailers some cameras append) do not make it less whole, but
Ultralytics looks only at the last two bytes and re-saves such a file, so ``convert`` writes it
without them. Written by hand because neither OpenCV nor PIL says where the data ends: OpenCV 4.x
decodes a cut file into a half-grey picture, PIL's ``verify`` accepts it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

JPEG_START = b"\xff\xd8"
JPEG_END = b"\xff\xd9"


def _end_of_image(content: bytes) -> int | None:
    """Offset just past the end-of-image marker; None when the file ends first; -1 when the header is malformed.

    The header segments are walked by their lengths to the first scan, so an EXIF thumbnail's own
    marker (inside APP1) is not taken for the image's; the marker is then looked for after that
    scan: inside scan data a 0xFF byte is always followed by 0x00 or a restart code, so it can only
    be the real one.
    """
    position = 2
    while position + 4 <= len(content):
        if content[position] != 0xFF:
            return -1
        marker = content[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
        elif marker == 0xDA:  # start of scan
            end = content.find(JPEG_END, position)
            return None if end < 0 else end + len(JPEG_END)
        elif marker == 0xD9:  # an end before any scan: malformed, not cut
            return -1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
        else:
            position += 2 + int.from_bytes(content[position + 2:position + 4], "big")
    return None  # the file ends inside the header


def jpeg_cut_short(content: bytes) -> bool:
    """A JPEG that ends before its end-of-image marker. Not a JPEG, or a malformed header: False (the decoder decides)."""
    return content.startswith(JPEG_START) and _end_of_image(content) is None


def jpeg_bytes_after_end(content: bytes) -> int:
    """How many bytes follow a whole JPEG's end-of-image marker (padding or a trailer); 0 otherwise."""
    if not content.startswith(JPEG_START):
        return 0
    end = _end_of_image(content)
    return 0 if end is None or end < 0 else len(content) - end


def files_ultralytics_would_resave(images: Iterable[Path | str]) -> list[Path]:
    """JPEGs whose last two bytes are not the end-of-image marker.

    Ultralytics' dataset check (training and ``yolo val``) "restores" such a file by re-saving it in place,
    even a whole image with NUL padding or a trailer: our commands must not hand it one of a user's files.
    """
    found = []
    for image in images:
        if Path(image).suffix.lower() not in (".jpg", ".jpeg"):
            continue
        try:
            with open(image, "rb") as handle:
                handle.seek(-len(JPEG_END), os.SEEK_END)
                tail = handle.read()
        except OSError:
            continue  # unreadable: Ultralytics reports it, and skips it, without writing
        if tail != JPEG_END:
            found.append(Path(image))
    return found
