"""Small helpers shared by test modules."""

from __future__ import annotations

import os

import pytest


def skip_unless_ci(reason: str) -> None:
    """Skip a module whose real dependency (a broker, a library) is missing, except in CI.

    CI installs everything the tests need, so a missing part there is a broken CI, which must fail
    loudly rather than turn the broker or PLC tests into silent skips.
    """
    if os.environ.get("CI"):
        raise RuntimeError(f"CI must run this module, but: {reason}")
    pytest.skip(reason, allow_module_level=True)
