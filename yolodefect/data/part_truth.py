"""The truth file of a run of master parts: which parts passed the camera, in order, and which are defective.

Lines verify a station with master parts (known good and known bad parts run through the line).
The file is a CSV with a header and one row per part, in the order the parts pass the camera::

    part,truth,classes
    1,good,
    2,defective,open;short

``truth`` is ``good`` or ``defective`` (any case; ``ok`` is good, ``ng`` and ``bad`` are defective).
``classes`` is optional (the column or the value): the part's defect classes separated by ``;``.
Blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from yolodefect.errors import FormatError

HEADER = ("part", "truth", "classes")
GOOD_WORDS = frozenset({"good", "ok"})
DEFECTIVE_WORDS = frozenset({"defective", "ng", "bad"})
CLASS_SEPARATOR = ";"


@dataclass(frozen=True)
class KnownPart:
    """One master part: its id on the truth file, whether it is defective, and its defect classes if known."""

    part_id: str
    defective: bool
    classes: tuple[str, ...] = ()


def _truth_value(text: str) -> bool | None:
    word = text.strip().lower()
    if word in GOOD_WORDS:
        return False
    if word in DEFECTIVE_WORDS:
        return True
    return None


def read_part_truth(path: Path | str) -> list[KnownPart]:
    """The parts of a truth file, in file order; a malformed file raises FormatError naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FormatError(path, "truth file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise FormatError(path, f"cannot read the truth file ({error})") from None
    rows = [(number, line) for number, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise FormatError(path, "empty truth file: expected a header 'part,truth,classes' and one row per part")
    header_number, header_line = rows[0]
    header = [cell.strip().lower() for cell in next(csv.reader([header_line]))]
    if header[:2] != list(HEADER[:2]) or len(header) > 3 or (len(header) == 3 and header[2] != HEADER[2]):
        raise FormatError(path, f"expected the header 'part,truth,classes' (classes optional), got {header_line.strip()!r}",
                          where=f"line {header_number}")
    parts: list[KnownPart] = []
    seen: dict[str, int] = {}
    for number, line in rows[1:]:
        where = f"line {number}"
        cells = [cell.strip() for cell in next(csv.reader([line]))]
        if len(cells) < 2 or len(cells) > len(header):
            raise FormatError(path, f"expected {len(header)} columns ({','.join(header)}), got {len(cells)}: "
                                    f"{line.strip()!r}", where=where)
        part_id, truth_text = cells[0], cells[1]
        if not part_id:
            raise FormatError(path, "empty part id", where=where)
        if part_id in seen:
            raise FormatError(path, f"part {part_id!r} is listed twice (first on line {seen[part_id]})", where=where)
        defective = _truth_value(truth_text)
        if defective is None:
            raise FormatError(path, f"truth must be good or defective (or ok / ng / bad), got {truth_text!r}",
                              where=where)
        classes = tuple(name.strip() for name in (cells[2] if len(cells) > 2 else "").split(CLASS_SEPARATOR)
                        if name.strip())
        if classes and not defective:
            raise FormatError(path, f"part {part_id!r} is good but lists defect classes {';'.join(classes)}",
                              where=where)
        seen[part_id] = number
        parts.append(KnownPart(part_id, defective, classes))
    if not parts:
        raise FormatError(path, "no parts: expected one row per part after the header")
    return parts


def part_truth_text(parts: Iterable[KnownPart]) -> str:
    """The CSV text of a truth file (what :func:`write_part_truth` writes)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for part in parts:
        writer.writerow([part.part_id, "defective" if part.defective else "good", CLASS_SEPARATOR.join(part.classes)])
    return buffer.getvalue()


def write_part_truth(path: Path | str, parts: Iterable[KnownPart]) -> Path:
    """Write a truth file atomically (a temporary file beside it, then moved into place) and return its path."""
    path = Path(path)
    parts = list(parts)
    for part in parts:
        bad = [name for name in part.classes if CLASS_SEPARATOR in name or name != name.strip() or not name]
        if bad or not str(part.part_id).strip() or str(part.part_id).lstrip().startswith("#"):
            raise ValueError(f"part {part.part_id!r}: ids must be non-empty and not start with '#', class names "
                             f"non-empty without '{CLASS_SEPARATOR}' or surrounding spaces (got {list(part.classes)})")
    text = part_truth_text(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp makes the file private (0600); a truth file is shared like any CSV: keep the old file's mode, else 0644.
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, mode)
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
