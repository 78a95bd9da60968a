"""One reader module per source format, all returning a :class:`SourceDataset`.

Each module exposes ``NAME``, ``DESCRIPTION``, ``looks_like(src) -> bool`` (for ``auto``) and
``read(src, options) -> SourceDataset``. The order of ``READERS`` is the order ``auto`` tries.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from yolodefect.data.formats import coco, deeppcb, labelme, mask, voc, yolo, yolo_seg
from yolodefect.data.formats.base import ReadOptions
from yolodefect.data.records import SourceDataset
from yolodefect.errors import DatasetError, UsageError

READERS: dict[str, ModuleType] = {
    module.NAME: module for module in (deeppcb, coco, labelme, voc, mask, yolo_seg, yolo)
}
FORMAT_NAMES = (*READERS, "auto")


def detect_format(src: Path) -> str:
    """The first format whose layout ``src`` matches; an error listing the formats otherwise."""
    for name, module in READERS.items():
        if module.looks_like(src):
            return name
    raise DatasetError(
        f"cannot tell the format of {src}: pass --format, one of {', '.join(READERS)}"
    )


def read_source(src: Path, fmt: str, options: ReadOptions) -> SourceDataset:
    if not src.exists():
        raise DatasetError(f"source {src} does not exist")
    if fmt == "auto":
        fmt = detect_format(src)
    if fmt not in READERS:
        raise UsageError(f"unknown format {fmt!r}: choose one of {', '.join(FORMAT_NAMES)}")
    return READERS[fmt].read(src, options)
