"""A full disk, for real (a small tmpfs): no decision is lost, no JSONL line is corrupt, no .part is left.

These tests mount a 1 MiB tmpfs, fill it to the last block with a filler file, and free it again by
deleting the filler. Mounting needs root; elsewhere they skip with the reason.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from yolodefect.cli import app
from yolodefect.detections import Detections
from yolodefect.stream.delivery import NOT_PERSISTED_PREFIX, Dispatcher
from yolodefect.stream.events import ModelIdentity
from yolodefect.stream.evidence import EvidenceWriter
from yolodefect.stream.outbox import Outbox, OutboxError
from yolodefect.stream.sinks import JsonlFileSink, WebhookSink
from tests.builders import make_event
from tests.helpers import fill, wait_until

MODEL = ModelIdentity("fake.pt", "0" * 64, "fp32")




def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def ids_in(path: Path) -> list[str]:
    """Event ids of a JSONL file; fails on a line that is not whole JSON."""
    return [json.loads(line)["event_id"] for line in lines_of(path)]



def not_persisted_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line[len(NOT_PERSISTED_PREFIX):]) for line in stderr.splitlines()
            if line.startswith(NOT_PERSISTED_PREFIX)]


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- (a) the outbox cannot store ------------------------------------------------------------------

def test_full_outbox_sends_events_directly_and_names_exactly_those(small_disk: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    outbox = small_disk / "outbox.sqlite"
    events_path = tmp_path / "events.jsonl"  # another, roomy filesystem
    down = WebhookSink(f"http://127.0.0.1:{closed_port()}/hook", timeout_s=0.5)
    dispatcher = Dispatcher.open(outbox, [JsonlFileSink(events_path), down], retry_initial_s=0.05, retry_max_s=0.2)
    before = [make_event(i) for i in range(3)]
    for e in before:
        dispatcher.submit(e)
    assert wait_until(lambda: len(ids_in(events_path)) == 3)
    filler = fill(small_disk)

    lost = [make_event(i) for i in range(3, 7)]
    for e in lost:
        assert dispatcher.submit(e) == e["event_id"]  # no exception: the station goes on
    assert "full" in (dispatcher.outbox_failure or "")
    assert dispatcher.not_persisted_event_ids() == tuple(e["event_id"] for e in lost)
    # Delivered directly, on the caller's thread: already in the file when submit returned.
    assert ids_in(events_path) == [e["event_id"] for e in before + lost]
    # And each one's whole content on stderr, one greppable line each.
    assert not_persisted_lines(capsys.readouterr().err) == lost

    filler.unlink()
    after = [make_event(i) for i in range(7, 9)]
    for e in after:
        dispatcher.submit(e)
    assert dispatcher.outbox_failure is None
    assert dispatcher.not_persisted_event_ids() == tuple(e["event_id"] for e in lost)
    assert wait_until(lambda: len(ids_in(events_path)) == 9)
    assert Counter(ids_in(events_path)) == Counter(e["event_id"] for e in before + lost + after)
    dispatcher.close(timeout_s=0.2)

    # The outbox holds, for the sink that was down, exactly the events that were not reported lost.
    with Outbox(outbox, [JsonlFileSink(events_path).name, down.name]) as box:
        assert [eid for eid, _ in box.pending(down.name, 100)] == [e["event_id"] for e in before + after]


def test_delivered_event_whose_ack_cannot_be_stored_is_not_sent_again_and_again(small_disk: Path,
                                                                                 tmp_path: Path) -> None:
    events_path = tmp_path / "events.jsonl"
    dispatcher = Dispatcher.open(small_disk / "outbox.sqlite", [JsonlFileSink(events_path)],
                                 retry_initial_s=0.02, retry_max_s=0.05, start=False)
    queued = [make_event(i) for i in range(3)]
    for e in queued:
        dispatcher.submit(e)
    filler = fill(small_disk)
    dispatcher.start()  # sends the first event, then cannot record the ack: the disk is full
    assert wait_until(lambda: len(ids_in(events_path)) >= 1)
    time.sleep(0.5)  # many ack retries
    assert ids_in(events_path) == [queued[0]["event_id"]]
    filler.unlink()
    assert dispatcher.flush(10.0)
    assert ids_in(events_path) == [e["event_id"] for e in queued]
    dispatcher.close()


# -- (b) the JSONL sink ---------------------------------------------------------------------------

def test_jsonl_file_holds_only_whole_lines_when_the_disk_fills_mid_line(small_disk: Path, tmp_path: Path) -> None:
    events_path = small_disk / "events.jsonl"
    sink = JsonlFileSink(events_path)
    dispatcher = Dispatcher.open(tmp_path / "outbox.sqlite", [sink], retry_initial_s=0.02, retry_max_s=0.05)
    first = make_event(0)
    dispatcher.submit(first)
    assert wait_until(lambda: lines_of(events_path) != [])
    filler = fill(small_disk)
    # Longer than a 4 KiB page: it starts in the slack of the file's last page and cannot end.
    big = [make_event(i, message="x" * 6000) for i in range(1, 4)]
    for e in big:
        dispatcher.submit(e)
    assert wait_until(lambda: dispatcher.stats()[sink.name]["failed_attempts"] >= 3)
    assert events_path.read_bytes().endswith(b"\n")
    assert ids_in(events_path) == [first["event_id"]]

    filler.unlink()
    assert dispatcher.flush(10.0)
    dispatcher.close()
    assert ids_in(events_path) == [e["event_id"] for e in [first, *big]]  # every line parses, each event once


def test_jsonl_sink_cuts_a_partial_last_line_left_by_a_crash(tmp_path: Path) -> None:
    events_path = tmp_path / "events.jsonl"
    whole = json.dumps(make_event(0)) + "\n"
    events_path.write_text(whole + json.dumps(make_event(1))[:50])  # the process died mid-write
    sink = JsonlFileSink(events_path)
    again = make_event(1)
    sink.send(again)
    sink.close()
    assert events_path.read_text() == whole + json.dumps(again, separators=(",", ":"), ensure_ascii=False) + "\n"


# -- (c) evidence ---------------------------------------------------------------------------------

def test_evidence_on_a_full_disk_leaves_no_part_files_and_counts_each_failure(small_disk: Path) -> None:
    writer = EvidenceWriter(small_disk / "evidence")
    when = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    saved = writer.save("ok", when, {"raw": image})
    assert Path(saved["raw"]).is_file()
    filler = fill(small_disk)
    for event_id in ("a", "b"):
        assert writer.save(event_id, when, {"raw": image, "annotated": image}) == {}
    assert writer.failures == 4
    assert sorted(p.name for p in (small_disk / "evidence").rglob("*")) == ["2024-05-01", "ok_raw.jpg"]
    filler.unlink()
    assert set(writer.save("c", when, {"raw": image})) == {"raw"}
    assert writer.failures == 4


# -- the whole station, from the command line -------------------------------------------------------

class FillingDetector:
    """Finds one defect per part; fills the disk while looking at part 3 and frees it at part 6."""

    class_names = ["scratch", "pit"]
    model_info = MODEL

    def __init__(self, disk: Path):
        self.disk = disk
        self.calls = 0
        self.filler: Path | None = None

    def __call__(self, image: np.ndarray) -> Detections:
        if self.calls == 3:
            self.filler = fill(self.disk)
        if self.calls == 6:
            assert self.filler is not None
            self.filler.unlink()
        self.calls += 1
        return Detections(np.array([[2.0, 2.0, 20.0, 20.0]]), np.array([0.9]), np.array([1]))


@pytest.mark.parametrize("json_output", [True, False], ids=["json", "panel"])
def test_watch_on_a_full_disk_loses_no_decision_and_exits_1(
    small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_output: bool
) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    for i in range(8):
        cv2.imwrite(str(parts / f"p{i}.png"), np.full((32, 32), 40 + 10 * i, np.uint8))
    (tmp_path / "fake.pt").write_bytes(b"not used: the detector is replaced")
    detector = FillingDetector(small_disk)
    monkeypatch.setattr("yolodefect.stream.watch.make_detector", lambda *args: detector)
    events_path, evidence = tmp_path / "events.jsonl", small_disk / "evidence"
    args = ["watch", "--source", str(parts), "--model", str(tmp_path / "fake.pt"), "--sink", str(events_path),
            "--outbox", str(small_disk / "outbox.sqlite"), "--evidence", str(evidence)]
    result = CliRunner().invoke(app, args + (["--json"] if json_output else []))

    assert result.exit_code == 1, result.output
    events = [json.loads(line) for line in lines_of(events_path)]
    rejects = [e for e in events if e["decision"] == "reject"]
    alarms = [e for e in events if e["decision"] == "error"]
    assert sorted(e["part_id"] for e in rejects) == [f"p{i}.png" for i in range(8)]  # every decision, once
    assert len(alarms) == 1 and alarms[0]["part_id"] is None and "durability" in alarms[0]["message"]
    assert alarms[0]["frame_index"] == 3
    lost = {e["event_id"] for e in rejects if e["part_id"] in ("p3.png", "p4.png", "p5.png")} | {alarms[0]["event_id"]}
    assert len(events) == 9 and len({e["event_id"] for e in events}) == 9
    assert {e["event_id"] for e in not_persisted_lines(result.stderr)} == lost
    assert not list(evidence.rglob("*.part"))
    if json_output:
        summary = json.loads(result.stdout)
        assert set(summary["not_persisted_event_ids"]) == lost
        assert summary["not_persisted_events"] == 4
        assert summary["evidence_failures"] == 6  # raw + annotated of parts 3, 4, 5
        assert summary["errors"] == 1 and summary["rejects"] == 8
    else:
        assert "evidence failures 6" in result.stderr
    red_line = next(line for line in result.stderr.splitlines()
                    if line.startswith("error:") and "NOT stored in the outbox" in line)
    assert all(event_id in red_line for event_id in lost)


def test_an_outbox_on_a_full_disk_is_refused_at_start_saying_the_disk_is_full(small_disk: Path) -> None:
    # SQLite itself only says "disk I/O error" when it cannot create its -wal/-shm files.
    path = small_disk / "outbox.sqlite"
    Outbox(path, ["file"]).close()
    fill(small_disk)
    with pytest.raises(OutboxError, match=r"the disk holding it is full \(0 bytes free\); free space there or give "
                                          r"--outbox on another disk"):
        Outbox(path, ["file"])
