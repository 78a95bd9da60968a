"""Fixtures shared by every test module. Tests write their own small data; ../shared is optional."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
DEMO_MODEL = REPO_ROOT / "weights" / "yolodefect-demo.pt"  # a real Ultralytics checkpoint, 5 MB, stride 32


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The real datasets beside the project; tests that need them skip when they are absent."""
    if not (SHARED_DIR / "datasets").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DIR} (only developer machines and CI have them)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """A small steel dataset named with the demo model's classes, so the demo model can be evaluated on it."""
    import yaml

    from yolodefect.data.synth_dataset import SynthOptions, synthesize
    from yolodefect.inference.model_file import read_model_file

    out = tmp_path_factory.mktemp("demo_data") / "data"
    synthesize(out, SynthOptions(kind="steel", images=12, size_wh=(96, 96)))
    config = yaml.safe_load((out / "data.yaml").read_text())
    names = read_model_file(DEMO_MODEL).class_names
    config["names"], config["nc"] = names, len(names)
    (out / "data.yaml").write_text(yaml.safe_dump(config))
    return out


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem, unmounted afterwards."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("a real full disk needs root, to mount a small tmpfs")
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        # Lazy: a file the test failed to close must not leave the mount behind.
        subprocess.run(["umount", "-l", str(mount)], check=True)
