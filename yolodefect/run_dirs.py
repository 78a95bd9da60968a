"""Output folders numbered as Ultralytics numbers its runs: ``runs/x``, then ``x2``, ``x3`` ...

By hand rather than ``ultralytics.utils.files.increment_path``: that one splits a suffix off the
name, so a model or video stem with a dot in it ("line.2026-11-30") would be numbered in the middle.
"""

from __future__ import annotations

from pathlib import Path


def first_free_dir(base: Path | str) -> Path:
    """``base`` if it does not exist, else ``base2``, ``base3`` ...; nothing is created."""
    base = Path(base)
    candidate, number = base, 2
    while candidate.exists():
        candidate = base.with_name(f"{base.name}{number}")
        number += 1
    return candidate
