"""Small helpers shared by test modules."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def skip_unless_ci(reason: str) -> None:
    """Skip a module whose real dependency (a broker, a library) is missing, except in CI.

    CI installs everything the tests need, so a missing part there is a broken CI, which must fail
    loudly rather than turn the broker or PLC tests into silent skips.
    """
    if os.environ.get("CI"):
        raise RuntimeError(f"CI must run this module, but: {reason}")
    pytest.skip(reason, allow_module_level=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout_s: float = 10.0, interval_s: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passes; its last answer, as a bool."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a GET on 127.0.0.1; (0, why) while nothing listens there."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def fill(folder: Path) -> Path:
    """Take every free block of folder's filesystem with one file; delete it to free the disk."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    assert os.statvfs(folder).f_bavail == 0
    return filler
