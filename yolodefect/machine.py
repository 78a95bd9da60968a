"""What machine a measurement was taken on: CPU, cores, INT8 features, load, GPU, library versions.

Latency means nothing without it, so model cards, ``export``, ``compare`` and every benchmark record
:func:`machine_info` and print :func:`machine_line` (:func:`machine_description` without the prefix):
the one description of the machine. Import-safe: torch is only asked about a GPU when it is already
imported or importable, and nothing here starts a subprocess.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("ultralytics", "torch", "torchvision", "onnx", "onnxruntime", "opencv-python", "numpy", "openvino", "nncf",
            "tensorrt")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> set[str]:
    """Instruction-set flags of the first CPU (empty where /proc/cpuinfo is absent)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def int8_features() -> list[str]:
    """The CPU features that make INT8 (and BF16) inference fast, as the kernel reports them."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    flags = cpu_flags()
    return [flag for flag in wanted if flag in flags]


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA install must not stop a CPU measurement
        return None


def load_average() -> float | None:
    """The 1-minute load average (other work on the machine skews timings); None where the OS has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_info() -> dict:
    """CPU, cores, INT8 features, load, GPU, OS, library versions and the time, as a JSON-ready dict."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cpu_features": int8_features(),
        "load_average_1min": load_average(),
        "os": f"{platform.system()} {platform.release()}",
        "gpu": gpu_name(),
        "versions": package_versions(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def machine_description(info: dict | None = None) -> str:
    """``CPU, N cores (features), load L, GPU; versions``: what a timing is read against."""
    info = info or machine_info()
    gpu = info.get("gpu") or "no GPU"
    versions = info.get("versions", {})
    features = info.get("cpu_features")
    cores = f"{info.get('cores')} cores" + (f" ({', '.join(features)})" if features else "")
    load = f", load {info['load_average_1min']:.1f}" if info.get("load_average_1min") is not None else ""
    libraries = ", ".join(
        f"{name} {versions[name]}" for name in ("python", "ultralytics", "torch", "onnxruntime", "openvino")
        if name in versions
    )
    return f"{info.get('cpu')}, {cores}{load}, {gpu}; {libraries}"


def machine_line(info: dict | None = None) -> str:
    """One line for logs and cards: ``machine: CPU, N cores (features), load L, GPU; versions``."""
    return f"machine: {machine_description(info)}"
