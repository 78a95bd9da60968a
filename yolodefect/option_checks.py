"""The checks options dataclasses run on themselves in ``__post_init__``, worded with the CLI option's name.

Every command's options refuse a bad value when they are built, before any work starts, with one
line naming the flag (``--calib must be a whole number >= 1, got 0``); a library caller building
the dataclass gets the same :class:`~yolodefect.errors.UsageError` as a CLI user.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from yolodefect.errors import UsageError


def flag(field_name: str) -> str:
    """``calib_images`` -> ``--calib-images``."""
    return "--" + field_name.replace("_", "-")


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def whole_number(option: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    """``value`` is an int >= ``minimum`` (or None when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{option} must be a whole number >= {minimum}, got {value!r}")


def number(option: str, value: Any, *, minimum: float | None = None, optional: bool = False) -> None:
    """``value`` is a finite number (>= ``minimum`` when given), or None when ``optional``."""
    if optional and value is None:
        return
    if not _is_number(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise UsageError(f"{option} must be a number{bound}, got {value!r}")


def fraction(option: str, value: Any, *, below: float = 1.0, inclusive: bool = True, optional: bool = False) -> None:
    """``value`` is a number in [0, below] (or [0, below) when not ``inclusive``), or None when ``optional``."""
    if optional and value is None:
        return
    inside = _is_number(value) and 0 <= value and (value <= below if inclusive else value < below)
    if not inside:
        interval = f"[0, {below:g}]" if inclusive else f"[0, {below:g})"
        raise UsageError(f"{option} must be a fraction in {interval}, got {value!r}")


def choice(option: str, value: Any, choices: Iterable[str]) -> None:
    """``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise UsageError(f"{option} {value!r}: choose one of {', '.join(choices)}")


def optional_bool(option: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise UsageError(f"{option} must be true or false, got {value!r}")
