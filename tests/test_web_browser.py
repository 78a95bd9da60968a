"""The station's web page in a real browser, while a real station runs with two cameras and a real broker.

One run of ``watch --serve`` (tests/station_child.py: the station as the CLI runs it, in its own process,
with a fake model that knows the generated frames) on two generated conveyor videos, events to a real
Mosquitto and a JSONL file. Headless chromium (Debian's, tests/browser.py) loads the page as an operator
would: both live views, the reject counter reaching the known number of defective parts, a reject's
evidence opened full size, and the MQTT sink turning "down" when the broker stops. /metrics is parsed
with prometheus_client's own parser. SIGTERM ends the station cleanly, keeping the stopped broker's
events in the outbox.

``YOLODEFECT_SCREENSHOT=1 python -m pytest tests/test_web_browser.py`` also refreshes docs/station-page.png
(the README's picture of the page).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import pytest

from tests.browser import browser, page  # noqa: F401 - fixtures
from tests.conftest import REPO_ROOT
from tests.helpers import free_port, http_get as get, wait_until
from tests.station_child import FLUSH_TIMEOUT_S, truth_path
from tests.test_sinks_mqtt import Broker  # skips here too without mosquitto
from yolodefect.data.conveyor import write_conveyor_video
from yolodefect.stream.options import WatchOptions

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as exc:  # a core dependency: a broken install, not a reason to skip
    raise RuntimeError(f"prometheus_client is a dependency of yolodefect: {exc}") from exc

# Two cameras, each with its own belt: defective parts early (the reject counter is final long before the
# videos end), good parts after them (the station keeps sending while the broker is down).
DEFECTIVE = {"top": {0, 1}, "side": {1}}
PARTS = 8
FRAME_SIZE = (640, 360)  # the generator's default: the evidence JPEG's size
FPS_CAP = 20.0  # about 20 s per video: long enough for the browser, short for the suite
TOPIC = "line1/station1/events"
SCREENSHOT = REPO_ROOT / "docs" / "station-page.png"


@pytest.fixture
def broker(tmp_path: Path):
    workdir = tmp_path / "broker"
    workdir.mkdir()
    running = Broker(workdir)
    running.start()
    yield running
    running.stop()


def write_videos(folder: Path) -> list[Path]:
    videos = []
    for seed, (name, defective) in enumerate(DEFECTIVE.items(), start=11):
        truth = write_conveyor_video(folder / f"{name}.mp4", parts=PARTS, defective=defective, seed=seed,
                                     frame_size=FRAME_SIZE, lead_in_frames=WatchOptions().belt_frames + 5)
        truth_path(truth.path).write_text(json.dumps(truth.to_dict()))
        videos.append(truth.path)
    return videos


def rejects_by_camera(metrics_text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "yolodefect_rejects_total":
                found[sample.labels["camera"]] = found.get(sample.labels["camera"], 0.0) + sample.value
    return found


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def image_size(tab: Any, selector: str) -> tuple[int, int]:
    return tuple(tab.eval_on_selector(selector, "img => [img.naturalWidth, img.naturalHeight]"))


def loaded(tab: Any, selector: str, timeout_s: float) -> None:
    """Wait until every image matching ``selector`` (at least one) has loaded a picture."""
    tab.wait_for_function(
        "s => { const imgs = [...document.querySelectorAll(s)];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
        arg=selector, timeout=timeout_s * 1000)


@pytest.mark.timeout(150)
def test_operator_page_shows_the_running_station(page: Any, broker: Broker, tmp_path: Path) -> None:  # noqa: F811
    videos = write_videos(tmp_path)
    out = tmp_path / "station"
    out.mkdir()
    port = free_port()
    mqtt_url = f"mqtt://127.0.0.1:{broker.port}/{TOPIC}"
    base = f"http://127.0.0.1:{port}"
    # Run from the test's folder with relative paths: the page (and the README's picture) shows short names.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    with open(out / "stdout.txt", "w") as stdout, open(out / "stderr.txt", "w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.station_child", str(port), mqtt_url, out.name, str(FPS_CAP),
             *(v.name for v in videos)], cwd=tmp_path, env=env, stdout=stdout, stderr=stderr)

    def logs() -> str:
        return (out / "stderr.txt").read_text()[-4000:]

    try:
        assert wait_until(lambda: child.poll() is not None or get(base + "/healthz")[0] in (200, 503), 60), logs()
        assert child.poll() is None, f"the station ended before serving:\n{logs()}"

        # Both cameras' live views show pictures; the counters reach the known rejects.
        page.goto(base + "/")
        for name in DEFECTIVE:
            loaded(page, f'.camera[data-camera="{name}"] img.live', 30)
        expected_rejects = sum(len(d) for d in DEFECTIVE.values())
        page.wait_for_function("n => document.querySelector('#total-rejects').textContent === String(n)",
                               arg=expected_rejects, timeout=60_000)
        assert page.get_attribute("#health", "data-ok") == "true", page.text_content("#health")
        for name, defective in DEFECTIVE.items():
            assert page.text_content(f'.camera[data-camera="{name}"] .rejects') == str(len(defective))
        status, metrics_text = get(base + "/metrics")
        assert status == 200
        scraped = rejects_by_camera(metrics_text)

        # The gallery holds every reject; the page as the README shows it.
        page.wait_for_function("n => document.querySelectorAll('#gallery .reject').length === n",
                               arg=expected_rejects, timeout=10_000)
        loaded(page, "#gallery .reject img.thumb", 10)
        gallery_ids = page.eval_on_selector_all("#gallery .reject", "nodes => nodes.map(n => n.dataset.eventId)")
        captions = page.eval_on_selector_all("#gallery .reject", "nodes => nodes.map(n => n.textContent)")
        for event_id, caption in zip(gallery_ids, captions):  # each thumbnail names its camera and defect classes
            event = json.loads(get(f"{base}/api/events/{event_id}")[1])
            assert event["source"] in caption and all(d["class"] in caption for d in event["defects"]), caption
        page.screenshot(path=str(tmp_path / "station-page.png"), full_page=True)
        if os.environ.get("YOLODEFECT_SCREENSHOT"):
            SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(tmp_path / "station-page.png", SCREENSHOT)

        # A reject opens full size with its event.
        page.click(f'#gallery .reject[data-event-id="{gallery_ids[-1]}"]')
        page.wait_for_selector("#viewer", state="visible", timeout=5_000)
        loaded(page, "#viewer img.full", 10)
        shown = json.loads(page.text_content("#viewer pre.event-json"))
        assert shown["event_id"] == gallery_ids[-1]
        paths = shown["snapshot_paths"]
        evidence = cv2.imread(str(tmp_path / (paths.get("annotated") or paths["raw"])))  # what the viewer shows
        assert image_size(page, "#viewer img.full") == (evidence.shape[1], evidence.shape[0]) == FRAME_SIZE
        page.click("#viewer .close")
        page.wait_for_selector("#viewer", state="hidden", timeout=5_000)

        # The broker stops: each camera's MQTT sink shows "down" within seconds.
        sinks = [f'.sink[data-camera~="{name}"][data-sink="{mqtt_url}"]' for name in DEFECTIVE]
        for sink in sinks:
            assert page.get_attribute(sink, "data-state") == "connected"
        broker.stop()
        stopped = time.monotonic()
        for sink in sinks:
            page.wait_for_selector(sink + '[data-state="down"]', timeout=5_000)
        assert time.monotonic() - stopped < 5
        assert "down since" in page.text_content(sinks[0] + " .state")
        # A good part decided after the page showed the broker down: its event waits in the outbox.
        passes_before = int(page.text_content("#total-passes"))
        page.wait_for_function("n => Number(document.querySelector('#total-passes').textContent) > n",
                               arg=passes_before, timeout=30_000)
        assert page.js_errors == []

        child.send_signal(signal.SIGTERM)
        assert child.wait(FLUSH_TIMEOUT_S + 15) == 0, logs()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)

    summary = json.loads((out / "stdout.txt").read_text().strip().splitlines()[-1])
    assert summary["stopped_by"] == "signal"
    assert not summary["flushed"] and summary["undelivered"][mqtt_url] > 0
    rejects = [e for e in read_events(out / "events.jsonl") if e["decision"] == "reject"]
    assert {name: sum(1 for e in rejects if e["source"] == name) for name in DEFECTIVE} == {
        name: len(d) for name, d in DEFECTIVE.items()}
    assert scraped == {name: float(len(d)) for name, d in DEFECTIVE.items()}
    assert sum(scraped.values()) == len(rejects)
    assert sorted(gallery_ids) == sorted(e["event_id"] for e in rejects)
