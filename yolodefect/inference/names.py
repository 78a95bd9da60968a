"""Class names, the one way: Ultralytics gives them as a dict (models), a list (datasets) or a string
(ONNX metadata stores the dict's repr); everything in yolodefect works on ``{id: name}``."""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from typing import Any, Union

ClassNames = Union[Mapping[int, str], Sequence[str]]


def names_dict(class_names: Any) -> dict[int, str]:
    """Class names as ``{id: name}`` from a dict, a list/tuple or the repr of a dict; ValueError otherwise."""
    names = class_names
    if isinstance(names, str):
        try:
            names = ast.literal_eval(names)  # ONNX metadata stores the dict as its repr
        except (ValueError, SyntaxError):
            raise ValueError(f"class names {class_names!r} are neither a dict nor a list") from None
    if isinstance(names, Mapping):
        return {int(k): str(v) for k, v in names.items()}
    if isinstance(names, (list, tuple)):
        return {i: str(name) for i, name in enumerate(names)}
    raise ValueError(f"class names {class_names!r} are neither a dict nor a list")


def names_list(class_names: Any) -> list[str]:
    """Class names in id order, as Ultralytics' data.yaml lists them."""
    names = names_dict(class_names)
    return [names[key] for key in sorted(names)]


def class_name(names: Mapping[int, str], class_id: int) -> str:
    # A model with more outputs than named classes still gets a printable, stable label.
    return names.get(int(class_id), str(int(class_id)))
