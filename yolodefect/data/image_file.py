"""Whether an image file is whole, and its displayed size: the one verdict ``convert`` and ``check`` share.

A JPEG cut before its end-of-image marker is truncated (Ultralytics would re-save it, grey where
data is missing); where the data ends is :mod:`yolodefect.jpeg`'s rule, which the station uses too.
Bytes after the marker (NUL padding some cameras and copy tools add, or a trailer) leave the image
complete: both commands accept it, saying how many bytes follow the marker.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from yolodefect.errors import FormatError, YoloDefectError
from yolodefect.jpeg import jpeg_bytes_after_end, jpeg_cut_short

JPEG_FORMATS = ("JPEG", "MPO")  # MPO: the multi-picture JPEG some cameras write
TRUNCATED_JPEG = "truncated JPEG (no end-of-image marker)"
_ORIENTATION_TAG = 0x0112
_ROTATED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations displayed rotated by 90 degrees


@dataclass(frozen=True)
class ImageFileFacts:
    """What the header and the end of one image file say."""

    format: str
    size_wh: tuple[int, int]  # as displayed: EXIF orientation applied
    orientation: int  # EXIF orientation, 1 when absent
    jpeg_trailing_bytes: int  # bytes after a JPEG's end-of-image marker (padding, a trailer); 0 otherwise
    jpeg_trailer_is_padding: bool = True  # those bytes are all NUL

    @property
    def jpeg_trailer_words(self) -> str:
        """The bytes after the end-of-image marker, in words: "300 NUL bytes" or "12 bytes of trailing data"."""
        kind = "NUL bytes" if self.jpeg_trailer_is_padding else "bytes of trailing data"
        return f"{self.jpeg_trailing_bytes} {kind}"

    @property
    def needs_reorientation(self) -> bool:
        return self.orientation != 1


def verify_image_bytes(path: Path | str, content: bytes) -> ImageFileFacts:
    """Decode-check ``content`` (the bytes of ``path``); FormatError naming ``path`` when it is not whole."""
    if not content:
        raise FormatError(path, "empty image file")
    try:
        with Image.open(io.BytesIO(content)) as image:
            image.verify()  # must come first: PIL refuses verify() after other reads
        with Image.open(io.BytesIO(content)) as image:  # reopened: verify() leaves the image unusable
            image_format = image.format or ""
            width, height = image.size
            orientation = image.getexif().get(_ORIENTATION_TAG, 1) or 1
    except Exception as error:  # noqa: BLE001 - PIL raises many types for broken files (OSError, SyntaxError...)
        raise FormatError(path, f"unreadable image (corrupt or unsupported): {error}") from None
    trailing = 0
    if image_format in JPEG_FORMATS:
        if jpeg_cut_short(content):
            raise FormatError(path, TRUNCATED_JPEG)
        trailing = jpeg_bytes_after_end(content)
    if orientation in _ROTATED_ORIENTATIONS:
        width, height = height, width
    padding = not content[len(content) - trailing:].strip(b"\x00")
    return ImageFileFacts(image_format, (width, height), orientation, trailing, padding)


class UnreadableImageError(YoloDefectError):
    """An image file that cannot be read or decoded; the message names the file and why."""


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


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to BGR; raises UnreadableImageError naming the file and why (missing, empty, truncated...)."""
    try:
        # np.fromfile + imdecode also handles non-ASCII paths, which cv2.imread does not on Windows.
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise UnreadableImageError(f"cannot read {path}: {exc.strerror or exc}") from None
    content = data.tobytes()
    # Older OpenCV builds fill the missing rows of a cut JPEG with grey and return it: a part
    # inspected on half a picture, so the end marker is checked whatever imdecode says.
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size and not jpeg_cut_short(content) else None
    if image is None:
        raise UnreadableImageError(f"cannot decode {path}: {_why_undecodable(content)}")
    return to_bgr(image)


def _why_undecodable(content: bytes) -> str:
    size = len(content)
    amount = f"{size} bytes" if size < 1024 else f"{size / 1024:.0f} KB"
    if not size:
        return "empty file (0 bytes)"
    if jpeg_cut_short(content):
        return f"truncated JPEG ({amount}, no end-of-image marker)"
    if content.startswith(b"\x89PNG") and b"IEND" not in content[-64:]:
        return f"truncated PNG ({amount}, no end chunk)"
    return f"corrupt or not an image OpenCV can decode ({amount})"
