"""A real browser for the tests: Debian's chromium, headless, driven by Playwright for Python.

Playwright only drives it: the executable is the system's ``chromium`` (installed by .ci/run, as
mosquitto is), never a browser Playwright downloads, so the tests need no network. A test module uses
the fixtures by importing them (``from tests.browser import browser, page``); without chromium or
Playwright they skip, saying what to install (and fail in CI, which installs both).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import skip_unless_ci

CHROMIUM = shutil.which("chromium")
VIEWPORT = {"width": 1280, "height": 900}  # a small desktop, also the README screenshot's size


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium per test module (starting one costs about a second)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        skip_unless_ci(f"playwright not importable ({exc}); pip install -e '.[dev]'")
    if CHROMIUM is None:
        skip_unless_ci("no chromium on PATH: apt-get install chromium (the tests drive Debian's system browser)")
    with sync_playwright() as playwright:
        # --no-sandbox: CI and containers run as root, where chromium's sandbox refuses to start.
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (own cookies and cache) of :data:`VIEWPORT` size; ``page.js_errors`` lists its uncaught exceptions."""
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    # Uncaught exceptions: a page that throws is broken even where it still shows something.
    tab.js_errors = []
    tab.on("pageerror", lambda exc: tab.js_errors.append(str(exc)))
    try:
        yield tab
    finally:
        context.close()
