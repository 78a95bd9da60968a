"""The demo end to end (--quick), and the station it builds driving a real MQTT broker that restarts.

The demo runs once per module (a few minutes on 2 cores); the tests then check what it promises:
every file it lists, events that match the generated video's defective parts exactly, the parts with
a defect no detector was taught rejected by the anomaly stage, and the done-when of the station: ``watch --source conveyor.mp4 --model best_int8.onnx --mqtt ...`` rejects
each defective part once to a real Mosquitto broker that is restarted mid-run, losing nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.test_sinks_mqtt import Broker, Subscriber, wait_until
from yolodefect.anomaly import load_anomaly_model
from yolodefect.cli import app
from yolodefect.data.conveyor import ConveyorTruth, write_conveyor_video
from yolodefect.demo import DemoOptions, DemoResult, part_of_event, run_demo
from yolodefect.shipped import shipped_model_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    steps: list[str] = []
    result = run_demo(DemoOptions(out=tmp_path_factory.mktemp("demo") / "out", quick=True),
                      on_step=lambda title, explanation: steps.append(title))
    assert len(steps) == 9
    return result


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_shipped_model_and_its_card_are_in_weights() -> None:
    model = shipped_model_path()
    assert model.exists() and model.stat().st_size < 10_000_000
    card = json.loads(model.with_suffix(".card.json").read_text())
    assert "synthetic" in card["purpose"] and "DEMONSTRATION" in card["purpose"]
    assert model.with_suffix(".thresholds.yaml").exists()


def test_demo_writes_every_file_it_lists(demo: DemoResult) -> None:
    for name, path in demo.files.items():
        assert Path(path).exists(), f"{name}: {path} missing"
    assert (demo.out / "demo.json").exists() and (demo.out / "conveyor.truth.json").exists()
    assert json.loads((demo.out / "demo.json").read_text())["defective_parts"] == demo.defective_parts
    assert demo.deployable, "the INT8 model of the demo failed its gate"
    assert demo.model.name == "best_int8.onnx"
    assert all(path.is_relative_to(demo.out) for path in map(Path, demo.files.values()))


def test_demo_rejects_exactly_the_defective_parts_once_each(demo: DemoResult) -> None:
    events = read_events(demo.events)
    rejects = [e for e in events if e["decision"] == "reject"]
    assert demo.defective_parts, "the demo video must contain defective parts"
    assert demo.rejected_parts == demo.defective_parts
    truth = json.loads((demo.out / "conveyor.truth.json").read_text())
    assert truth["defective_parts"] == demo.defective_parts
    assert len(rejects) == len(demo.defective_parts), [e["defects"] for e in rejects]
    # Evidence: a raw and an annotated JPEG per reject, named by its event id.
    jpegs = {p.name for p in demo.evidence.rglob("*.jpg")}
    for event in rejects:
        assert sum(event["event_id"] in name for name in jpegs) == 2


def test_demo_anomaly_stage_rejects_the_parts_with_the_unseen_defect_once_each(demo: DemoResult) -> None:
    """Contamination is in no class list, so neither the detector nor its thresholds know it; the anomaly model,
    taught good parts only, rejects those parts (class 'anomaly') and no good part."""
    truth = json.loads((demo.out / "conveyor.truth.json").read_text())
    contaminated = sorted(p["index"] for p in truth["parts"] if any(d["class"] == "contamination" for d in p["defects"]))
    assert "contamination" not in truth["class_names"]
    assert demo.unseen_parts == contaminated == truth["unseen_parts"] and len(contaminated) == 2
    assert set(demo.unseen_parts) <= set(demo.defective_parts)
    assert 3 <= len(demo.defective_parts) - len(demo.unseen_parts)  # the detector's own classes are on the line too

    rejects = [e for e in read_events(demo.events) if e["decision"] == "reject"]
    by_anomaly: dict[int, list[dict]] = {}
    for event in rejects:
        if any(d["class"] == "anomaly" for d in event["defects"]):
            by_anomaly.setdefault(part_of_event(demo_truth(demo), event), []).append(event)
            assert event["anomaly_model"]["name"] == demo.anomaly_model.name
    for part in demo.unseen_parts:
        assert len(by_anomaly.get(part, [])) == 1, (part, [e["defects"] for e in rejects])
        (anomaly,) = [d for d in by_anomaly[part][0]["defects"] if d["class"] == "anomaly"]
        assert anomaly["anomaly_score"] > 0
    assert set(by_anomaly) <= set(demo.defective_parts), "the anomaly stage rejected a good part"
    assert sorted(by_anomaly) == demo.anomaly_parts
    assert demo.unseen_caught == demo.unseen_parts and demo.unseen_missed == [] and demo.anomaly_false_rejects == []
    assert all("anomaly" in demo.reject_classes[part] for part in demo.unseen_parts)
    saved = json.loads((demo.out / "demo.json").read_text())
    assert (saved["unseen_parts"], saved["unseen_caught"], saved["anomaly_false_rejects"]) == (
        demo.unseen_parts, demo.unseen_parts, [])
    # The model learned from the good-part photos the demo wrote, and only from them.
    good = sorted(Path(demo.files["good_parts"]).glob("*.png"))
    card = load_anomaly_model(demo.anomaly_model).card
    assert card["good_images"] + card["holdout_images"] == len(good) > 0


def test_demo_summary_says_which_unseen_defect_parts_the_anomaly_model_caught(demo: DemoResult) -> None:
    from rich.console import Console

    from yolodefect.render import render_demo

    console = Console(record=True, width=400)
    render_demo(demo, console)
    text = console.export_text()
    assert (f"Parts with contamination, a defect the detector was never taught: {demo.unseen_parts}; rejected as "
            f"'anomaly' by the anomaly model: {demo.unseen_parts}: all caught (no good part rejected as 'anomaly'"
            in text), text
    assert "9. Watch the line" in text and "yolodefect anomaly train" in text


def demo_truth(demo: DemoResult) -> ConveyorTruth:
    return ConveyorTruth.from_dict(json.loads((demo.out / "conveyor.truth.json").read_text()))


def test_demo_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(app, ["demo", str(mine), "--quick", "--force"])
    assert result.exit_code == 2
    assert "not written by 'yolodefect demo'" in result.output
    assert (mine / "notes.txt").read_text() == "keep me"


def test_watch_to_a_restarting_mqtt_broker_loses_no_reject(demo: DemoResult, tmp_path: Path) -> None:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = Broker(workdir)
    broker.start()
    subscriber = Subscriber(broker.port, "line1/rejects")
    video = write_conveyor_video(tmp_path / "conveyor.mp4", kind="steel", parts=6, defective={1, 2, 4}, seed=11,
                                 part_size=(256, 192), speed_px_per_frame=16, lead_in_frames=35, gap_px=(40, 120))
    command = [sys.executable, "-m", "yolodefect", "watch", "--source", str(video.path), "--model", str(demo.model),
               "--thresholds", str(demo.out / "calibration" / "thresholds.yaml"), "--tile", "320",
               "--mqtt", f"mqtt://127.0.0.1:{broker.port}/line1/rejects", "--sink", str(tmp_path / "events.jsonl"),
               "--outbox", str(tmp_path / "outbox.sqlite"), "--fps", "12", "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        assert wait_until(lambda: subscriber.ids() or process.poll() is not None, 90), "no event arrived"
        assert process.poll() is None, "the run ended before the broker could be restarted"
        broker.stop()
        time.sleep(2.0)  # events of the next parts go to the outbox meanwhile
        broker.start()
        stdout, stderr = process.communicate(timeout=180)
        assert process.returncode == 0, stderr.decode()[-2000:]
        summary = json.loads(stdout)
        assert summary["flushed"] and summary["undelivered"] == {}
        written = {e["event_id"] for e in read_events(tmp_path / "events.jsonl")}
        assert wait_until(lambda: written <= subscriber.ids(), 20), f"lost in the restart: {written - subscriber.ids()}"
        with subscriber.lock:
            received = {m["event_id"]: m for m in subscriber.received}  # at-least-once: de-duplicate on event_id
    finally:
        if process.poll() is None:
            process.kill()
        subscriber.close()
        broker.stop()
    assert set(received) == written
    rejected = sorted(part_of_event(video, e) for e in received.values() if e["decision"] == "reject")
    assert rejected == [1, 2, 4]


class VideoAsCamera:
    """A camera (``--camera 0``) that shows a conveyor video at its frame rate, then goes dark."""

    def __init__(self, path: Path, fps: float):
        import cv2

        self.capture = cv2.VideoCapture(str(path))
        self.period = 1.0 / fps
        self.next_at = time.monotonic()

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.capture.isOpened()

    def read(self):
        time.sleep(max(0.0, self.next_at - time.monotonic()))
        self.next_at = time.monotonic() + self.period
        return self.capture.read()

    def grab(self) -> bool:
        return self.read()[0]

    def set(self, *args) -> bool:
        return True

    def get(self, *args) -> float:
        return 0.0

    def release(self) -> None:
        self.capture.release()


def test_watch_camera_without_model_runs_the_shipped_model(tmp_path: Path) -> None:
    from yolodefect.stream.options import WatchOptions
    from yolodefect.stream.watch import watch

    video = write_conveyor_video(tmp_path / "line.mp4", kind="steel", parts=4, defective={1, 3}, seed=21,
                                 part_size=(256, 192), speed_px_per_frame=16, lead_in_frames=35, gap_px=(40, 120))
    stop = threading.Event()
    cameras: list[VideoAsCamera] = []

    def camera(target):
        assert target == 0
        # 5 fps: a rate the station keeps up with on 2 loaded cores (the first 30 frames teach it the empty belt).
        cameras.append(VideoAsCamera(video.path, fps=5))
        return cameras[-1]

    timer = threading.Timer(video.frames / 5 + 3.0, stop.set)  # the video's length, then stop like Ctrl-C
    timer.start()
    try:
        summary = watch(WatchOptions(source="0", sinks=(str(tmp_path / "events.jsonl"),),
                                     outbox=tmp_path / "outbox.sqlite", stall_timeout_s=30),
                        stop_event=stop, capture_factory=camera)
    finally:
        timer.cancel()
    events = read_events(tmp_path / "events.jsonl")
    assert summary.stats.model_card and "DEMONSTRATION" in summary.stats.model_card["purpose"]
    assert {e["model"]["name"] for e in events} == {"yolodefect-demo.pt"}
    # The shipped defaults (tiles, thresholds, the belt learned at start) give one reject per defective part.
    assert sorted(part_of_event(video, e) for e in events if e["decision"] == "reject") == [1, 3]
