"""One station per outbox: a second opener fails at once, naming the process that holds it."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from yolodefect.cli import app
from yolodefect.detections import Detections
from yolodefect.stream.delivery import Dispatcher
from yolodefect.stream.events import ModelIdentity
from yolodefect.stream.options import WatchOptions
from yolodefect.stream.outbox import Outbox, OutboxError
from yolodefect.stream.sinks import JsonlFileSink
from yolodefect.stream.watch import watch

HOLDER = textwrap.dedent(
    """
    import sys
    from yolodefect.stream.outbox import Outbox

    box = Outbox(sys.argv[1], ["file"])
    box.put({"event_id": "left-by-the-first-station", "decision": "reject"})
    print("ready", flush=True)
    sys.stdin.read()  # hold the outbox until killed
    """
)


def in_use_by(pid: int) -> str:
    return rf"in use by pid {pid} on host {re.escape(socket.gethostname())}; give each station its own --outbox"


def test_second_outbox_in_the_same_process_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    first = Outbox(path, ["file"])
    with pytest.raises(OutboxError, match=in_use_by(os.getpid())):
        Outbox(path, ["file"])
    first.put({"event_id": "e1"})  # the refused opener did not disturb the owner
    first.close()
    with Outbox(path, ["file"]) as again:
        assert [eid for eid, _ in again.pending("file")] == ["e1"]


def test_outbox_held_by_another_process_is_refused_and_freed_when_it_dies(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(OutboxError, match=in_use_by(holder.pid)):
            Outbox(path, ["file"])
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no close, no cleanup
        holder.wait(10)
    with Outbox(path, ["file"]) as box:  # no stale lock after a crash
        assert [eid for eid, _ in box.pending("file")] == ["left-by-the-first-station"]


def test_dispatcher_refused_an_outbox_closes_its_sinks(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"

    class Recorder(JsonlFileSink):
        closed = False

        def close(self) -> None:
            Recorder.closed = True
            super().close()

    with Outbox(path, ["x"]):
        with pytest.raises(OutboxError, match="in use by"):
            Dispatcher.open(path, [Recorder(tmp_path / "e.jsonl", name="x")])
    assert Recorder.closed


def detector(image: np.ndarray) -> Detections:
    return Detections(np.array([[2.0, 2.0, 20.0, 20.0]]), np.array([0.9]), np.array([1]))


detector.class_names = ["scratch", "pit"]  # type: ignore[attr-defined]
detector.model_info = ModelIdentity("fake.pt", "0" * 64, "fp32")  # type: ignore[attr-defined]


def test_second_station_on_the_same_outbox_fails_at_start_with_one_red_line(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    cv2.imwrite(str(parts / "p0.png"), np.full((32, 32), 128, np.uint8))
    (tmp_path / "fake.pt").write_bytes(b"not used: the detector is replaced")
    monkeypatch.setattr("yolodefect.stream.watch.make_detector", lambda *args: detector)
    outbox, events_path = tmp_path / "outbox.sqlite", tmp_path / "events.jsonl"
    with Outbox(outbox, [JsonlFileSink(events_path).name]):
        result = CliRunner().invoke(app, ["watch", "--source", str(parts), "--model", str(tmp_path / "fake.pt"),
                                          "--sink", str(events_path), "--outbox", str(outbox)])
    assert result.exit_code == 1, result.output
    assert re.search(rf"^error: outbox {re.escape(str(outbox))} is {in_use_by(os.getpid())}", result.stderr, re.M)
    assert "Traceback" not in result.output
    assert not events_path.exists()


def test_startup_log_says_the_default_outbox_is_in_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    cv2.imwrite(str(parts / "p0.png"), np.full((32, 32), 128, np.uint8))
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="yolodefect.stream.watch"):
        summary = watch(WatchOptions(source=str(parts), sinks=("events.jsonl",)), detector=detector)
    assert summary.stats.events == 1 and summary.not_persisted_event_ids == ()
    assert f"outbox yolodefect-outbox.sqlite (the default, in the working folder {tmp_path})" in caplog.text
    assert (tmp_path / "yolodefect-outbox.sqlite").is_file()
    assert json.loads((tmp_path / "events.jsonl").read_text())["part_id"] == "p0.png"
