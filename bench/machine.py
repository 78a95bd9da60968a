"""The machine line every benchmark prints and stores with its results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from datetime import datetime, timezone
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("ultralytics", "torch", "torchvision", "onnxruntime", "opencv-python", "numpy", "openvino"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:
            continue
    return versions


def machine_info() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "gpu": _gpu_name(),
        "versions": _versions(),
        "commit": commit,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        return None


def machine_line(info: dict | None = None) -> str:
    info = info or machine_info()
    gpu = info["gpu"] or "no GPU"
    v = info["versions"]
    return (f"machine: {info['cpu']}, {info['cores']} cores, {gpu}; python {v.get('python')}, "
            f"ultralytics {v.get('ultralytics')}, torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}")


def median(values) -> float:
    return float(statistics.median(values))


def write_result(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return path
