"""Reading an Ultralytics YOLO detection dataset: data.yaml (or its folder), splits, label files.

Used by ``check``, ``train``, ``eval``, ``export`` and the ``yolo`` readers, so that every command
agrees on where a split's images and labels are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from yolodefect.data.records import IMAGE_SUFFIXES, SPLITS
from yolodefect.errors import DatasetError, FormatError


@dataclass(frozen=True)
class DataConfig:
    """A resolved data.yaml: dataset root, class names in id order, image folder per split."""

    yaml_path: Path | None
    root: Path
    class_names: list[str]
    split_dirs: dict[str, Path]

    def images(self, split: str) -> list[Path]:
        """Image files of one split, sorted; an error naming the split when it is absent."""
        if split not in self.split_dirs:
            raise DatasetError(
                f"dataset {self.root} has no {split!r} split (it has: {', '.join(self.split_dirs)})"
            )
        folder = self.split_dirs[split]
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def label_path_for(image_path: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder becomes ``labels``, the suffix ``.txt``."""
    parts = list(image_path.parts)
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == "images":
            parts[index] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image_path.with_suffix(".txt")


def load_data_config(path: Path | str) -> DataConfig:
    """Resolve a data.yaml, or a dataset folder holding one or holding ``images/<split>``."""
    path = Path(path)
    if path.is_dir():
        yaml_path = path / "data.yaml"
        if yaml_path.is_file():
            return _from_yaml(yaml_path)
        return _from_folder(path)
    if path.is_file():
        return _from_yaml(path)
    raise DatasetError(f"dataset {path} does not exist (give a data.yaml or a dataset folder)")


def _from_yaml(yaml_path: Path) -> DataConfig:
    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise FormatError(yaml_path, f"not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise FormatError(yaml_path, "expected a mapping with 'names' and 'train'/'val' keys")
    names = data.get("names")
    if isinstance(names, dict):
        names = [names[key] for key in sorted(names)]
    if not isinstance(names, list) or not names:
        raise FormatError(yaml_path, "'names' must list the class names")
    _check_class_count(data.get("nc"), len(names), yaml_path)
    root = Path(data["path"]) if data.get("path") else yaml_path.parent
    if not root.is_absolute():
        root = (yaml_path.parent / root).resolve() if not root.exists() else root.resolve()
    split_dirs: dict[str, Path] = {}
    for split in SPLITS:
        entry = data.get(split)
        if not entry:
            continue
        if not isinstance(entry, str):
            raise FormatError(yaml_path, f"'{split}' must be one folder path (lists are not supported)")
        folder = (root / entry).resolve()
        if not folder.is_dir():
            raise DatasetError(f"{yaml_path}: the {split} folder {folder} does not exist")
        split_dirs[split] = folder
    if not split_dirs:
        raise FormatError(yaml_path, "names no split folder ('train', 'val' or 'test')")
    return DataConfig(yaml_path, root, [str(name) for name in names], split_dirs)


def _check_class_count(nc: object, name_count: int, yaml_path: Path) -> None:
    """``nc``, when given, must be the number of names: Ultralytics refuses the file otherwise."""
    if nc is None:
        return
    fix = f"set 'nc: {name_count}' (the number of names) or delete the 'nc' line"
    try:
        count = float(nc)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        count = math.nan
    if isinstance(nc, bool) or not count.is_integer():
        raise FormatError(yaml_path, f"'nc' is {nc!r}, not a whole number: {fix}")
    if int(count) != name_count:
        raise FormatError(yaml_path, f"'nc' is {int(count)} but 'names' lists {name_count} classes: {fix}, "
                                     "or add the missing names")


def _from_folder(folder: Path) -> DataConfig:
    split_dirs = {s: folder / "images" / s for s in SPLITS if (folder / "images" / s).is_dir()}
    if not split_dirs:
        raise DatasetError(f"{folder} has neither a data.yaml nor images/{{train,val,test}} folders")
    classes_txt = folder / "classes.txt"
    if not classes_txt.is_file():
        raise DatasetError(f"{folder} has no data.yaml (or classes.txt) naming the classes")
    names = [line.strip() for line in classes_txt.read_text(encoding="utf-8").splitlines() if line.strip()]
    return DataConfig(None, folder.resolve(), names, split_dirs)


def read_label_rows(label_path: Path) -> np.ndarray:
    """Rows of a YOLO label file as an (N, K) float array; a missing file means no boxes.

    Raises FormatError naming the line when a row is not numeric. Detection rows have K == 5;
    segmentation rows are longer and of varying length, so they come back as ragged lists
    through :func:`read_label_lines` instead.
    """
    rows = read_label_lines(label_path)
    if not rows:
        return np.zeros((0, 5), dtype=np.float64)
    lengths = {len(row) for row in rows}
    if lengths != {5}:
        raise FormatError(label_path, "expected 5 numbers per line (class x y w h)", where=f"line lengths {sorted(lengths)}")
    return np.array(rows, dtype=np.float64)


def read_label_lines(label_path: Path) -> list[list[float]]:
    """Each non-empty line of a YOLO label file as a list of floats."""
    return [values for _, values in read_numbered_label_lines(label_path)]


def read_numbered_label_lines(label_path: Path) -> list[tuple[int, list[float]]]:
    """Each non-empty line as ``(line number, floats)``, so callers can name the line of a bad row."""
    if not label_path.exists():
        return []
    try:
        # utf-8-sig: Ultralytics accepts labels saved with a byte-order mark (Windows editors)
        text = label_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise FormatError(label_path, f"not UTF-8 text: {error}") from None
    rows: list[tuple[int, list[float]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, [float(token) for token in line.split()]))
        except ValueError:
            raise FormatError(label_path, f"not numbers: {line.strip()!r}", where=f"line {number}") from None
    return rows
