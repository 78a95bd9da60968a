"""``watch --serve`` wired into a running station: /healthz follows the camera, /metrics and /api/events follow
the events, the recent events survive a restart, and a bind the security rule forbids opens nothing."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from yolodefect.cli import app
from yolodefect.detections import Detections
from yolodefect.stream.events import ModelIdentity
from yolodefect.stream.options import WatchOptions
from yolodefect.stream.watch import watch
from tests.helpers import free_port, http_get as get, wait_until

MODEL = ModelIdentity(name="fake.pt", sha256="f" * 64, precision="fp32")


class Camera:
    """An OpenCV-like live camera: a frame every 10 ms while ``flowing`` is set; silent (no frame) otherwise."""

    def __init__(self, flowing: threading.Event):
        self.flowing = flowing
        self.count = 0

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.flowing.wait(0.1):
            return False, None
        time.sleep(0.01)
        self.count += 1
        return True, np.full((48, 64, 3), self.count % 250, np.uint8)

    def release(self) -> None:
        pass

    def get(self, prop_id: int) -> float:
        return 0.0


class EveryTenth:
    """A defect on every tenth frame (one frame = one part in part mode)."""

    class_names = ["scratch", "pit"]
    model_info = MODEL

    def __init__(self):
        self.calls = 0

    def __call__(self, image: np.ndarray) -> Detections:
        self.calls += 1
        if self.calls % 10:
            return Detections.empty()
        return Detections(np.array([[2.0, 2.0, 20.0, 20.0]]), np.array([0.9]), np.array([self.calls // 10 % 2]))


def metric(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
    return total


def test_health_metrics_and_events_follow_a_running_station(tmp_path: Path) -> None:
    flowing, stop = threading.Event(), threading.Event()
    flowing.set()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    options = WatchOptions(camera_faults=False, source="0", camera="press-1", mode="part", sinks=(str(tmp_path / "events.jsonl"),),
                           outbox=tmp_path / "outbox.sqlite", evidence_dir=tmp_path / "evidence",
                           serve=f"127.0.0.1:{port}", stall_timeout_s=0.5, flush_timeout_s=2)
    result: dict[str, Any] = {}
    station = threading.Thread(target=lambda: result.setdefault("summary", watch(
        options, detector=EveryTenth(), stop_event=stop, capture_factory=lambda _: Camera(flowing))))
    station.start()
    try:
        assert wait_until(lambda: get(f"{base}/api/status")[0] == 200 and
                          json.loads(get(f"{base}/api/status")[1])["totals"]["rejects"] >= 3)
        status, body = get(f"{base}/healthz")
        assert status == 200, body

        flowing.clear()  # the camera goes silent: the station is unhealthy, and says which camera
        assert wait_until(lambda: get(f"{base}/healthz")[0] == 503, 10)
        status, reason = get(f"{base}/healthz")
        assert "camera press-1: no frame for" in reason
        # Nothing moves while the camera is silent: the numbers can be compared exactly.
        text = get(f"{base}/metrics")[1]
        state = json.loads(get(f"{base}/api/status")[1])
        events = json.loads(get(f"{base}/api/events?limit=1000")[1])
        rejects = [e for e in events if e["decision"] == "reject"]
        assert metric(text, "yolodefect_rejects_total", {"camera": "press-1"}) == len(rejects) == \
            state["totals"]["rejects"]
        assert metric(text, "yolodefect_rejected_class_total") == len(rejects)  # one class per reject here
        assert metric(text, "yolodefect_frames_total") == state["totals"]["frames"]
        assert metric(text, "yolodefect_healthy") == 0
        assert state["cameras"][0]["thresholds"] == {"scratch": 0.25, "pit": 0.25}  # the camera's own (conf)
        first = rejects[-1]
        status, one = get(f"{base}/api/events/{first['event_id']}")
        assert status == 200 and json.loads(one)["event_id"] == first["event_id"]
        with urllib.request.urlopen(f"{base}/api/evidence/{first['event_id']}/raw.jpg", timeout=5) as response:
            assert response.headers["Content-Type"] == "image/jpeg" and response.read()[:2] == b"\xff\xd8"

        flowing.set()  # frames again: healthy again
        assert wait_until(lambda: get(f"{base}/healthz")[0] == 200, 10)
    finally:
        stop.set()
        station.join(30)
    summary = result["summary"]
    written = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert summary.stats.rejects == len([e for e in written if e["decision"] == "reject"])
    assert {e["source"] for e in written} == {"press-1"}  # a camera given a name is named in its events
    assert summary.stats.rejects_by_class == {
        name: len([e for e in written if e["defects"][0]["class"] == name]) for name in ("scratch", "pit")}
    # The server went away with the station.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base}/healthz", timeout=2)

    # The recent events survive a restart: a new station on the same store serves them before its first event.
    flowing.clear()
    port = free_port()
    stop = threading.Event()
    restarted = threading.Thread(target=watch, args=(WatchOptions(
        camera_faults=False, source="0", camera="press-1", mode="part", sinks=(str(tmp_path / "events.jsonl"),),
        outbox=tmp_path / "outbox.sqlite", serve=f"127.0.0.1:{port}", stall_timeout_s=0.5),),
        kwargs=dict(detector=EveryTenth(), stop_event=stop, capture_factory=lambda _: Camera(flowing)))
    restarted.start()
    try:
        assert wait_until(lambda: get(f"http://127.0.0.1:{port}/api/events?limit=1000")[0] == 200)
        served = json.loads(get(f"http://127.0.0.1:{port}/api/events?limit=1000")[1])
        assert sorted(e["event_id"] for e in served) == sorted(e["event_id"] for e in written)
    finally:
        stop.set()
        restarted.join(30)


def test_a_network_bind_without_a_token_is_refused_before_anything_opens(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("YOLODEFECT_SERVE_TOKEN", raising=False)
    video = tmp_path / "line.mp4"
    video.write_bytes(b"")
    args = ["watch", "--source", str(video), "--serve", "0.0.0.0:8080", "--outbox", str(tmp_path / "outbox.sqlite"),
            "--sink", str(tmp_path / "events.jsonl")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--serve-token-env" in result.output or "serve_token_env" in result.output
    assert "insecure" in result.output
    assert not (tmp_path / "outbox.sqlite").exists() and not (tmp_path / "events.jsonl").exists()

    result = CliRunner().invoke(app, args + ["--serve-token-env", "NO_SUCH_VARIABLE_SET"])
    assert result.exit_code == 2 and "NO_SUCH_VARIABLE_SET" in result.output
