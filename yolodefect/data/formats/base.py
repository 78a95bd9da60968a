"""What every format reader shares: options, the bad-file policy, safe paths, image listing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from yolodefect.data.records import IMAGE_SUFFIXES, Note
from yolodefect.errors import FormatError


@dataclass(frozen=True)
class ReadOptions:
    """Options a reader may use; each reader ignores what does not apply to its format."""

    skip_bad: bool = False
    mask_min_area: int = 1
    mask_threshold: int = 127
    include_templates: bool = False


@dataclass
class BadFilePolicy:
    """Raise on a malformed file, or (``skip_bad``) record it and let the reader go on."""

    skip_bad: bool
    skipped: list[Note] = field(default_factory=list)
    warnings: list[Note] = field(default_factory=list)

    def bad(self, path: Path | str, detail: str, *, where: str | None = None) -> None:
        error = FormatError(path, detail, where=where)
        if not self.skip_bad:
            raise error
        self.skipped.append(Note(str(path), str(error)))

    def warn(self, path: Path | str, message: str, *, kind: str = "") -> None:
        self.warnings.append(Note(str(path), message, kind))


def safe_join(root: Path, relative: str, annotation_path: Path) -> Path:
    """Join a path taken from an annotation file to ``root``, refusing anything that escapes it."""
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise FormatError(annotation_path, f"refusing image path {relative!r}: it points outside {root}")
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise FormatError(annotation_path, f"refusing image path {relative!r}: it points outside {root}")
    return root / candidate


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path, *, recursive: bool = False) -> list[Path]:
    """Image files in ``folder``, sorted so that every run sees the same order."""
    pattern = "**/*" if recursive else "*"
    return sorted(path for path in folder.glob(pattern) if is_image(path))


def images_by_stem(folder: Path, *, recursive: bool = False) -> dict[str, Path]:
    return {path.stem: path for path in list_images(folder, recursive=recursive)}


def image_size_wh(path: Path) -> tuple[int, int]:
    """Displayed size of an image (EXIF orientation applied), read from the header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError) as error:
        raise FormatError(path, f"cannot read image: {error}") from None
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees
        return height, width
    return width, height


def open_displayed(path: Path) -> Image.Image:
    """The image as a viewer shows it (EXIF orientation applied), fully decoded."""
    with Image.open(path) as image:
        image.load()
        return ImageOps.exif_transpose(image)
