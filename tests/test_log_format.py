"""--log-format json: one JSON object per stderr line (journald, Loki), checked in a real child process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import pytest

from yolodefect.console import configure_logging


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)


def test_json_logs_are_one_object_per_line_on_stderr() -> None:
    started = datetime.now(timezone.utc)
    child = run_child("""
        import logging
        from yolodefect.console import configure_logging

        configure_logging(False, "json")
        log = logging.getLogger("yolodefect.stream.watch")
        log.debug("hidden without --debug")
        log.info("camera %s: %d frames", "a", 12)
        log.warning("two\\nlines and ünïcode")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("sink failed")
        logging.getLogger("ultralytics").info("not shown by default")
        print("stdout stays data")
    """)
    assert child.returncode == 0, child.stderr
    assert child.stdout == "stdout stays data\n"
    lines = [json.loads(line) for line in child.stderr.splitlines()]  # fails on any line that is not JSON
    assert [(e["level"], e["logger"], e["message"]) for e in lines] == [
        ("INFO", "yolodefect.stream.watch", "camera a: 12 frames"),
        ("WARNING", "yolodefect.stream.watch", "two\nlines and ünïcode"),
        ("ERROR", "yolodefect.stream.watch", "sink failed"),
    ]
    assert "exception" not in lines[0]
    assert lines[2]["exception"].startswith("Traceback (most recent call last):")
    assert lines[2]["exception"].endswith("RuntimeError: boom")
    for entry in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"]), entry["time"]
        moment = datetime.fromisoformat(entry["time"])
        assert started - timedelta(seconds=1) <= moment <= datetime.now(timezone.utc)


def test_json_logs_with_debug_include_debug_records() -> None:
    child = run_child("""
        import logging
        from yolodefect.console import configure_logging

        configure_logging(True, "json")
        logging.getLogger("yolodefect").debug("details")
    """)
    assert child.returncode == 0, child.stderr
    assert [(e["level"], e["message"]) for e in map(json.loads, child.stderr.splitlines())] == [("DEBUG", "details")]


def test_human_logs_stay_as_they_were() -> None:
    child = run_child("""
        import logging
        from yolodefect.console import configure_logging

        configure_logging(False)
        logging.getLogger("yolodefect").info("hello station")
    """)
    assert child.returncode == 0, child.stderr
    assert "hello station" in child.stderr
    with pytest.raises(json.JSONDecodeError):
        json.loads(child.stderr.splitlines()[0])


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log format 'xml'; use one of: human, json"):
        configure_logging(False, "xml")
