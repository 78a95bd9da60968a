"""Where benchmark results go, and the machine they were measured on.

The machine is described by the library (:mod:`yolodefect.machine`, the description model cards,
``export`` and ``compare`` record); a benchmark adds only the commit of the code it measured.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

from yolodefect.machine import machine_info as library_machine_info
from yolodefect.machine import machine_line

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"

__all__ = ["RESULTS_DIR", "SHARED_DIR", "machine_info", "machine_line", "median", "write_result"]


def machine_info() -> dict:
    """:func:`yolodefect.machine.machine_info` plus ``commit``: the short git hash of the measured code."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {**library_machine_info(), "commit": commit}


def median(values) -> float:
    return float(statistics.median(values))


def portable(value):
    """``value`` with this checkout's paths made relative: the repo's root -> ".", ../shared -> "../shared"."""
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item) for item in value]
    if isinstance(value, str):
        shared, root = str(Path(SHARED_DIR).resolve()), str(Path(__file__).resolve().parents[1])
        return value.replace(shared, "../shared").replace(root + "/", "").replace(root, ".")
    return value


def write_result(name: str, payload: dict, output: Path | None = None) -> Path:
    """``bench/results/NAME.json``, or ``output`` when given (quick runs must not replace committed results)."""
    path = Path(output) if output else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(portable(payload), indent=2), encoding="utf-8")
    return path
