"""Writing a YOLO detection dataset's files (into the staging folder of :mod:`yolodefect.data.staging`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from PIL import Image, ImageOps

from yolodefect.data.records import SPLITS, Box
from yolodefect.data.tiling import TileWindow
from yolodefect.errors import DatasetError, UsageError

Transfer = Literal["link", "copy"]


@dataclass(frozen=True)
class OutputImage:
    """One image of the output dataset: where it comes from, where it goes, its boxes."""

    source_path: Path
    split: str
    file_name: str
    boxes: tuple[Box, ...]
    size_wh: tuple[int, int]  # of the written image (the tile's size for a tile)
    window: TileWindow | None = None
    needs_reorientation: bool = False
    jpeg_trailing_bytes: int = 0  # bytes after the source JPEG's end-of-image marker (padding, a trailer), left out


def yolo_label_lines(boxes: Sequence[Box], size_wh: tuple[int, int], class_ids: dict[str, int]) -> list[str]:
    """Normalised ``class cx cy w h`` lines, six decimals as Ultralytics writes them."""
    width, height = size_wh
    lines = []
    for box in boxes:
        x0, y0, x1, y1 = box.xyxy
        cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
        w, h = (x1 - x0) / width, (y1 - y0) / height
        lines.append(f"{class_ids[box.class_name]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def check_output_folder(out: Path, *, force: bool, sources: Sequence[Path] = ()) -> None:
    """Refuse to write where it would destroy data: a non-empty OUT, OUT overlapping a source, or
    OUT holding the current folder (OUT is replaced whole, and the current folder cannot be renamed)."""
    resolved = out.resolve()
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the current folder was deleted: nothing can hold it
        cwd = None
    if cwd is not None and cwd.is_relative_to(resolved):
        where = "the current folder" if cwd == resolved else "a folder holding the current folder"
        raise UsageError(f"output {out} is {where}: OUT is written as a whole (and replaced with --force), "
                         "so name a new folder for it, such as dataset-yolo")
    for source in sources:
        source = source.resolve()
        if resolved == source or resolved.is_relative_to(source) or source.is_relative_to(resolved):
            raise UsageError(f"output {out} overlaps the source {source}: choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"output {out} is not empty: choose another folder or pass --force to replace it")


def write_image(item: OutputImage, dest: Path, transfer: Transfer) -> None:
    """Link or copy the source bytes; decode only when a tile is cut or EXIF must be applied."""
    if item.window is not None or (transfer == "copy" and item.needs_reorientation):
        with Image.open(item.source_path) as image:
            image = ImageOps.exif_transpose(image)
            if item.window is not None:
                w = item.window
                image = image.crop((w.x0, w.y0, w.x1, w.y1))
            save_kwargs = {"quality": 95} if dest.suffix.lower() in (".jpg", ".jpeg") else {}
            image.save(dest, **save_kwargs)
        return
    if item.jpeg_trailing_bytes:
        # A link would keep the extra bytes, and Ultralytics, which looks only at the last two bytes,
        # would take the JPEG for truncated and re-encode it. The same bytes without it, not re-encoded.
        dest.write_bytes(item.source_path.read_bytes()[:-item.jpeg_trailing_bytes])
        return
    if transfer == "link":
        try:
            # Relative from the final location: the staging folder sits at the same depth.
            os.symlink(os.path.relpath(item.source_path.resolve(), dest.parent), dest)
            return
        except OSError:
            pass  # file systems without symlinks: fall back to a copy
    shutil.copyfile(item.source_path, dest)


def write_data_yaml(root: Path, class_names: Sequence[str], splits: Sequence[str]) -> Path:
    """data.yaml without ``path``: Ultralytics then resolves splits from the yaml's own folder."""
    data = {split: f"images/{split}" for split in SPLITS if split in splits}
    data["nc"] = len(class_names)
    data["names"] = {index: name for index, name in enumerate(class_names)}
    path = root / "data.yaml"
    path.write_text("# Written by yolodefect; loadable by ultralytics.YOLO(...).train(data=...)\n"
                    + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def prepare_split_folders(root: Path, splits: Sequence[str]) -> None:
    if "train" not in splits or "val" not in splits:
        raise DatasetError(f"a dataset needs train and val images; this one would have only {', '.join(splits)}")
    for split in splits:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)


def write_item(root: Path, item: OutputImage, class_ids: dict[str, int], transfer: Transfer) -> None:
    image_dest = root / "images" / item.split / item.file_name
    write_image(item, image_dest, transfer)
    label_dest = (root / "labels" / item.split / item.file_name).with_suffix(".txt")
    lines = yolo_label_lines(item.boxes, item.size_wh, class_ids)
    # An empty label file marks a checked defect-free image, not a forgotten one.
    label_dest.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
