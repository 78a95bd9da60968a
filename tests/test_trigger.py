"""External triggers: a real Mosquitto broker and a real asyncua server on 127.0.0.1 pick one frame per part."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from tests.builders import write_video
from tests.helpers import free_port, skip_unless_ci, wait_until
from tests.test_sinks_mqtt import Broker  # the real mosquitto process, restartable on its port

from yolodefect.errors import UsageError
from yolodefect.stream.frames import Frame, SourceOptions
from yolodefect.stream.sources import open_source
from yolodefect.stream.trigger import (
    MqttTrigger,
    OpcUaTrigger,
    TriggeredSource,
    open_trigger,
    open_triggered_source,
    part_id_from_payload,
)

try:
    import paho.mqtt.publish as mqtt_publish
    from asyncua import ua
    from asyncua.sync import Server, ThreadLoop
except ImportError as exc:
    skip_unless_ci(f"paho-mqtt or asyncua not importable ({exc}); pip install yolodefect[mqtt,opcua]")

TOPIC = "line1/station2/part"
FAST_RETRY = SourceOptions(reconnect_initial_s=0.05, reconnect_max_s=0.1, stall_timeout_s=1.0)


class FakeCamera:
    """A camera at ~100 fps whose frame n is filled with n % 256; ``alive.clear()`` unplugs it."""

    def __init__(self) -> None:
        self.alive = threading.Event()
        self.alive.set()
        self.count = 0

    def capture(self, target: Any) -> FakeCamera.Capture:
        return FakeCamera.Capture(self)

    class Capture:
        def __init__(self, camera: FakeCamera):
            self.camera = camera

        def isOpened(self) -> bool:
            return self.camera.alive.is_set()

        def read(self) -> tuple[bool, np.ndarray | None]:
            time.sleep(0.01)
            if not self.camera.alive.is_set():
                return False, None
            image = np.full((24, 32, 3), self.camera.count % 256, np.uint8)
            self.camera.count += 1
            return True, image

        def release(self) -> None:
            pass

        def get(self, prop_id: int) -> float:
            return 0.0


class Collector:
    """Iterates a source on a thread, like the station does, keeping every frame."""

    running: ClassVar[list[Collector]] = []

    def __init__(self, source: TriggeredSource):
        Collector.running.append(self)
        self.source = source
        self.frames: list[Frame] = []
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for frame in self.source:
                self.frames.append(frame)
        except BaseException as exc:
            self.failure = exc

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Frame]:
        assert wait_until(lambda: len(self.frames) >= count, timeout_s), \
            f"{len(self.frames)} of {count} frames: {[f.part_hint for f in self.frames]}"
        return list(self.frames)

    def ended(self, timeout_s: float) -> bool:
        self.thread.join(timeout_s)
        return not self.thread.is_alive()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    b = Broker(workdir)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    """The run's stop event; at teardown the run is stopped and every source iterated by a Collector has ended."""
    event = threading.Event()
    Collector.running = []
    yield event
    event.set()
    assert all(collector.ended(5) for collector in Collector.running), "a source did not stop"


def publish(broker: Broker, *payloads: str) -> float:
    """Publish ``payloads`` in order with QoS 1; the monotonic time just before (frames must be later)."""
    sent_at = time.monotonic()
    mqtt_publish.multiple([{"topic": TOPIC, "payload": p, "qos": 1} for p in payloads],
                          hostname="127.0.0.1", port=broker.port)
    return sent_at


def triggered_camera(broker: Broker, stop: threading.Event, camera: FakeCamera, **options: Any) -> TriggeredSource:
    inner = open_source(0, FAST_RETRY, stop_event=stop, capture_factory=camera.capture)
    source = open_triggered_source(f"mqtt://127.0.0.1:{broker.port}/{TOPIC}", inner, stop, **options)
    assert source.trigger.wait_ready(5), "the trigger did not subscribe"
    return source


def assert_real_frame(frame: Frame, after: float) -> None:
    """A camera frame, captured after ``after``, whose pixels are the frame its index names."""
    assert frame.error is None, frame.error
    assert frame.captured_monotonic >= after
    assert int(frame.image[0, 0, 0]) == frame.index % 256


def test_payload_names_the_part() -> None:
    assert part_id_from_payload(b'{"part_id": "A17"}') == "A17"
    assert part_id_from_payload(b'{"part_id": 42}') == "42"
    assert part_id_from_payload(b"  B-9\n") == "B-9"
    assert part_id_from_payload(b"") is None
    assert part_id_from_payload(b'{"part_id": ""}') is None
    assert part_id_from_payload(b'{"other": 1}') is None


def test_one_frame_per_mqtt_message_with_its_part_id(broker: Broker, stop: threading.Event) -> None:
    camera = FakeCamera()
    source = triggered_camera(broker, stop, camera)
    collector = Collector(source)
    sent: list[float] = []
    for payload in ('{"part_id": "A1"}', "B2", "", '{"part_id": 7}'):
        sent.append(publish(broker, payload))
        time.sleep(0.05)
    # A burst faster than the camera: every message is still one part, in order.
    burst_at = publish(broker, *[f"C{i}" for i in range(10)])
    frames = collector.wait_for(14)
    time.sleep(0.3)  # nothing more may come: no trigger, no frame
    assert [f.part_hint for f in collector.frames] == ["A1", "B2", "1", "7"] + [f"C{i}" for i in range(10)]
    for frame, after in zip(frames, sent + [burst_at] * 10):
        assert_real_frame(frame, after)
    assert [f.index for f in frames] == sorted(f.index for f in frames)
    stats = source.stats.snapshot()
    assert (stats["triggers"], stats["frames"], stats["trigger_frame_timeouts"], stats["triggers_lost"]) == (14, 14, 0, 0)
    assert stats["trigger_connected"] is True
    stop.set()
    assert collector.ended(5) and collector.failure is None


def test_triggers_after_a_broker_restart_still_arrive(broker: Broker, stop: threading.Event) -> None:
    source = triggered_camera(broker, stop, FakeCamera())
    collector = Collector(source)
    before = publish(broker, "before")
    assert_real_frame(collector.wait_for(1)[0], before)
    broker.stop()
    assert wait_until(lambda: not source.trigger.connected, 5), "the trigger did not notice the broker going away"
    broker.start()
    assert source.trigger.wait_ready(10), "the trigger did not reconnect and subscribe again"
    after = publish(broker, "after")
    frames = collector.wait_for(2)
    assert [f.part_hint for f in frames] == ["before", "after"]
    assert_real_frame(frames[1], after)
    assert source.stats.snapshot()["trigger_reconnects"] == 1


def test_a_camera_that_stops_gives_the_triggered_part_an_error(broker: Broker, stop: threading.Event) -> None:
    camera = FakeCamera()
    source = triggered_camera(broker, stop, camera, frame_timeout_s=0.3)
    collector = Collector(source)
    seen = publish(broker, "seen")
    assert_real_frame(collector.wait_for(1)[0], seen)
    camera.alive.clear()
    time.sleep(0.05)  # the last frame in flight is gone
    publish(broker, "unseen")
    frames = collector.wait_for(2, timeout_s=3)
    lost = frames[1]
    assert lost.part_hint == "unseen"
    assert lost.error is not None and source.trigger.name in lost.error and "part unseen" in lost.error
    assert "no frame from camera:0 within 0.3 s" in lost.error
    assert source.stats.snapshot()["trigger_frame_timeouts"] == 1
    # The camera comes back: parts are inspected again.
    camera.alive.set()
    after = publish(broker, "back")
    assert_real_frame(collector.wait_for(3)[2], after)
    assert collector.frames[2].part_hint == "back"


def test_a_full_queue_gives_the_extra_parts_errors_in_order(broker: Broker, stop: threading.Event) -> None:
    source = triggered_camera(broker, stop, FakeCamera(), max_pending=2)
    # Nobody reads yet (a station busy starting up): five parts arrive, two may wait for their frames.
    sent = publish(broker, *[f"P{i}" for i in range(1, 6)])
    assert wait_until(lambda: source.stats.snapshot()["triggers"] == 5, 3)
    frames = Collector(source).wait_for(5)
    assert [f.part_hint for f in frames] == ["P1", "P2", "P3", "P4", "P5"]
    assert_real_frame(frames[0], sent)
    assert_real_frame(frames[1], sent)
    for frame in frames[2:]:
        assert frame.error is not None and f"part {frame.part_hint} not inspected" in frame.error
        assert "queue full" in frame.error
    assert source.stats.snapshot()["triggers_lost"] == 3


def test_a_video_ends_after_its_waiting_parts_are_answered(broker: Broker, stop: threading.Event,
                                                           tmp_path: Path) -> None:
    video = write_video(tmp_path / "line.mp4", 30)  # frame i is grey 4 * i
    inner = open_source(str(video), SourceOptions(fps_cap=20), stop_event=stop)
    source = open_triggered_source(f"mqtt://127.0.0.1:{broker.port}/{TOPIC}", inner, stop, delay_s=0.5,
                                   frame_timeout_s=5)
    assert source.trigger.wait_ready(5)
    collector = Collector(source)
    early = publish(broker, "early")
    # 0.25 s of video left: a part triggered now would need a frame 0.5 s later, which the file does not have.
    assert wait_until(lambda: inner.stats.snapshot()["frames"] >= 25, 5)
    publish(broker, "late")
    assert collector.ended(5), "the source did not end with its video"
    assert collector.failure is None
    first, last = collector.frames
    assert (first.part_hint, last.part_hint) == ("early", "late")
    assert first.error is None and first.captured_monotonic >= early + 0.5
    assert abs(float(first.image.mean()) - 4 * first.index) < 6  # the video's own frame (mp4 is lossy)
    assert last.error is not None and "ended before a frame" in last.error and "part late" in last.error
    assert not source.trigger.connected  # closed with the source


# -- OPC UA --------------------------------------------------------------------------------------


def start_plc(tloop: ThreadLoop, port: int, count: int = 0) -> tuple[Server, dict[str, Any]]:
    server = Server(tloop=tloop)
    endpoint = f"opc.tcp://127.0.0.1:{port}/"
    server.set_endpoint(endpoint)
    idx = server.register_namespace("urn:yolodefect:test-trigger")
    line = server.nodes.objects.add_object(idx, "Line1")
    nodes = {
        "present": line.add_variable(f"ns={idx};s=PartPresent", "PartPresent", False, varianttype=ua.VariantType.Boolean),
        "part_id": line.add_variable(f"ns={idx};s=PartId", "PartId", "", varianttype=ua.VariantType.String),
        "counter": line.add_variable(f"ns={idx};s=PartCount", "PartCount", count, varianttype=ua.VariantType.UInt32),
    }
    server.start()
    return server, {"endpoint": endpoint, "idx": idx, **nodes}


@pytest.fixture(scope="module")
def tloop() -> Iterator[ThreadLoop]:
    loop = ThreadLoop()
    loop.start()
    yield loop
    loop.stop()


@pytest.fixture(scope="module")
def plc(tloop: ThreadLoop) -> Iterator[dict[str, Any]]:
    server, nodes = start_plc(tloop, free_port())
    yield {"server": server, **nodes}
    server.stop()


def opcua_source(plc: dict[str, Any], node: str, stop: threading.Event) -> TriggeredSource:
    inner = open_source(0, FAST_RETRY, stop_event=stop, capture_factory=FakeCamera().capture)
    source = open_triggered_source(f"{plc['endpoint']}?node=ns={plc['idx']};s={node}", inner, stop)
    assert isinstance(source.trigger, OpcUaTrigger)
    assert source.trigger.wait_ready(5), "the OPC UA trigger did not subscribe"
    time.sleep(0.2)  # the subscription's first report (the node's state, not a part) is in
    return source


def test_each_rising_edge_of_a_boolean_node_is_one_part(plc: dict[str, Any], stop: threading.Event) -> None:
    plc["present"].write_value(True)  # already on when the station connects: a state, not a part
    source = opcua_source(plc, "PartPresent", stop)
    collector = Collector(source)
    edges = []
    for value in (False, True, False, True, False):
        if value:
            edges.append(time.monotonic())
        plc["present"].write_value(value)
        time.sleep(0.15)
    frames = collector.wait_for(2)
    time.sleep(0.3)
    assert [f.part_hint for f in collector.frames] == ["1", "2"]
    for frame, edge in zip(frames, edges):
        assert_real_frame(frame, edge)


def test_a_string_node_names_each_part(plc: dict[str, Any], stop: threading.Event) -> None:
    plc["part_id"].write_value("old")
    source = opcua_source(plc, "PartId", stop)
    collector = Collector(source)
    for part in ("S-1", "S-2", "", "S-3"):
        plc["part_id"].write_value(part)
        time.sleep(0.15)
    collector.wait_for(3)
    time.sleep(0.3)
    assert [f.part_hint for f in collector.frames] == ["S-1", "S-2", "S-3"]
    assert all(f.error is None for f in collector.frames)


def test_a_counter_node_counts_parts_even_when_changes_coalesce(plc: dict[str, Any], stop: threading.Event) -> None:
    plc["counter"].write_value(ua.Variant(10, ua.VariantType.UInt32))
    source = opcua_source(plc, "PartCount", stop)
    collector = Collector(source)
    plc["counter"].write_value(ua.Variant(11, ua.VariantType.UInt32))
    time.sleep(0.15)
    plc["counter"].write_value(ua.Variant(14, ua.VariantType.UInt32))  # three parts within one report
    collector.wait_for(4)
    time.sleep(0.3)
    assert [f.part_hint for f in collector.frames] == ["1", "2", "3", "4"]
    assert all(f.error is None for f in collector.frames)


def test_parts_counted_while_the_plc_was_unreachable_get_errors(plc: dict[str, Any], stop: threading.Event) -> None:
    plc["counter"].write_value(ua.Variant(5, ua.VariantType.UInt32))
    source = opcua_source(plc, "PartCount", stop)
    collector = Collector(source)
    plc["counter"].write_value(ua.Variant(6, ua.VariantType.UInt32))
    collector.wait_for(1)
    plc["server"].stop()
    try:
        assert wait_until(lambda: not source.trigger.connected, 5), "the trigger did not notice the PLC going away"
        # The PLC comes back having counted three more parts: their moments, hence their frames, are unknown.
        plc["counter"].write_value(ua.Variant(9, ua.VariantType.UInt32))
    finally:
        plc["server"].start()
    assert source.trigger.wait_ready(10), "the trigger did not reconnect"
    collector.wait_for(4)
    plc["counter"].write_value(ua.Variant(10, ua.VariantType.UInt32))
    frames = collector.wait_for(5)
    assert [f.part_hint for f in frames] == ["1", "2", "3", "4", "5"]
    assert frames[0].error is None and frames[4].error is None
    for frame in frames[1:4]:
        assert frame.error is not None and "while the trigger was disconnected (counter 6 -> 9)" in frame.error
    stats = source.stats.snapshot()
    assert (stats["triggers_missed"], stats["trigger_reconnects"]) == (3, 1)


# -- specs ---------------------------------------------------------------------------------------


def test_trigger_specs_that_cannot_work_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="YOLODEFECT_MQTT_PASSWORD"):
        open_trigger("mqtt://user:secret@127.0.0.1/line")
    with pytest.raises(UsageError, match="mqtt://"):
        open_trigger("ftp://127.0.0.1/line")
    with pytest.raises(UsageError, match=r"\?node="):
        open_trigger("opc.tcp://127.0.0.1:4840?decision=ns=2;i=2")
    with pytest.raises(UsageError, match="invalid"):
        open_trigger("opc.tcp://127.0.0.1:4840?node=nonsense")
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(UsageError, match="one image per part"):
        open_triggered_source("mqtt://127.0.0.1/line", open_source(str(tmp_path)))
    trigger = open_trigger(f"mqtt://127.0.0.1:{free_port()}/{TOPIC}/+")  # wildcards may be subscribed to
    try:
        assert isinstance(trigger, MqttTrigger) and trigger.topic == f"{TOPIC}/+"
    finally:
        trigger.close()


def test_watch_with_a_trigger_makes_one_decision_per_message(broker: Broker, tmp_path: Path) -> None:
    """The station end to end: `watch --trigger mqtt://...` on a camera; each message is one part, named by it."""
    from yolodefect.detections import Detections
    from yolodefect.stream.options import WatchOptions
    from yolodefect.stream.watch import watch

    camera = FakeCamera()
    stop = threading.Event()

    def detector(image: np.ndarray) -> Detections:  # frames whose pixel value is odd show a defect
        if int(image[0, 0, 0]) % 2:
            return Detections(np.array([[2, 2, 10, 10]]), np.array([0.9]), np.array([0]))
        return Detections.empty()

    detector.class_names = ["scratch"]  # type: ignore[attr-defined]
    events_path = tmp_path / "events.jsonl"
    options = WatchOptions(camera_faults=False, source="0", trigger=f"mqtt://127.0.0.1:{broker.port}/{TOPIC}", emit_pass=True,
                           sinks=(str(events_path),), outbox=tmp_path / "outbox.sqlite", stall_timeout_s=1.0)
    runner = threading.Thread(target=lambda: watch(options, detector=detector, stop_event=stop,
                                                   capture_factory=camera.capture), daemon=True)
    runner.start()
    try:
        def lines() -> list[dict]:
            return [json.loads(line) for line in events_path.read_text().splitlines()] if events_path.exists() else []

        # The subscription is made when watch opens the trigger: publish until the first part is answered.
        assert wait_until(lambda: publish(broker, '{"part_id": "P-0"}') and wait_until(lambda: lines(), 0.5), 10)
        publish(broker, "P-1", "P-2", "P-3")
        assert wait_until(lambda: len(lines()) >= 4, 10), lines()
    finally:
        stop.set()
        runner.join(15)
    events = lines()
    parts = [e["part_id"] for e in events]
    assert parts[-3:] == ["P-1", "P-2", "P-3"] and set(parts[:-3]) == {"P-0"}
    for event in events:  # each decision is the detector's verdict on the camera frame taken for that part
        assert event["decision"] == ("reject" if event["frame_index"] % 2 else "pass")
    assert not runner.is_alive()
