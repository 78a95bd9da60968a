"""Fixtures shared by every test module. Tests write their own small data; ../shared is optional."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The real datasets beside the project; tests that need them skip when they are absent."""
    if not (SHARED_DIR / "datasets").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DIR} (only developer machines and CI have them)")
    return SHARED_DIR
