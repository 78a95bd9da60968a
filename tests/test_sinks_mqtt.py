"""MQTT sink against a real Mosquitto broker, including a broker restart in the middle of a run."""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.builders import make_event
from tests.helpers import free_port, skip_unless_ci, wait_until

from yolodefect.stream.delivery import Dispatcher
from yolodefect.stream.events import load_schema
from yolodefect.stream.sinks import MqttSink, SinkConfigError, SinkError, sink_from_url

try:
    import paho.mqtt.client as mqtt
except ImportError as exc:  # the reason names the real import problem, not just "missing"
    skip_unless_ci(f"paho-mqtt not importable ({exc}); pip install yolodefect[mqtt]")
try:
    import jsonschema
except ImportError:
    skip_unless_ci("pip install jsonschema (dev dependency) to validate events")

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()), None
)
if MOSQUITTO is None:
    skip_unless_ci("mosquitto broker binary not found (apt-get install mosquitto)")

TOPIC = "line1/station2/events"


class Broker:
    """A mosquitto process on 127.0.0.1 with persistence in tmp_path, restartable on the same port."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            # When started as root, mosquitto would switch to user 'mosquitto', who cannot write tmp_path.
            f"user {getpass.getuser()}\n"
            f"log_dest file {self.log}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        # Errors before the config is read (bad option, port in use) go to the console, not the log file.
        with open(self.workdir / "console.txt", "ab") as console:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=console, stderr=console)
        if not wait_until(self._accepts, 10):
            self.stop()
            logs = "".join(p.read_text() for p in (self.workdir / "console.txt", self.log) if p.exists())
            pytest.fail(f"mosquitto did not listen on 127.0.0.1:{self.port}:\n{logs}")

    def _accepts(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file on the way out
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    b = Broker(workdir)
    b.start()
    yield b
    b.stop()


class Subscriber:
    """Persistent-session QoS 1 subscriber: the broker keeps its messages while it is offline."""

    def __init__(self, port: int, topic: str):
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        self.client.reconnect_delay_set(1, 1)
        self.topic = topic

        def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            # Subscribing again on every connect covers a broker that lost the session.
            client.subscribe(topic, qos=1)

        def on_subscribe(client: Any, userdata: Any, mid: Any, rcs: Any, props: Any) -> None:
            self.subscribed.set()

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            with self.lock:
                self.received.append(json.loads(msg.payload))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber got no SUBACK"

    def ids(self) -> set[str]:
        with self.lock:
            return {m["event_id"] for m in self.received}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    sub = Subscriber(broker.port, TOPIC)
    yield sub
    sub.close()


def test_events_arrive_on_topic_and_match_schema(broker: Broker, subscriber: Subscriber, tmp_path: Path) -> None:
    sink = sink_from_url(f"mqtt://127.0.0.1:{broker.port}/{TOPIC}")
    assert isinstance(sink, MqttSink) and sink.qos == 1
    dispatcher = Dispatcher.open(tmp_path / "outbox.db", [sink], retry_initial_s=0.05, retry_max_s=0.5)
    events = [make_event(i, "reject" if i % 2 else "pass") for i in range(5)]  # both kinds meet the schema
    for e in events:
        dispatcher.submit(e)
    assert dispatcher.flush(10), dispatcher.stats()
    assert dispatcher.close(5)
    assert wait_until(lambda: subscriber.ids() == {e["event_id"] for e in events}, 10)

    validator = jsonschema.Draft202012Validator(load_schema())
    with subscriber.lock:
        for message in subscriber.received:
            validator.validate(message)
        assert subscriber.received == events  # one publisher, QoS 1: in order


def test_broker_restart_mid_run_loses_nothing(broker: Broker, subscriber: Subscriber, tmp_path: Path) -> None:
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/{TOPIC}", timeout_s=1.0, reconnect_max_s=1)
    dispatcher = Dispatcher.open(tmp_path / "outbox.db", [sink], retry_initial_s=0.1, retry_max_s=0.5)
    try:
        before = [dispatcher.submit(make_event(i)) for i in range(5)]
        assert wait_until(lambda: set(before) <= subscriber.ids(), 10), "events before the outage did not arrive"

        broker.stop()
        during: list[str] = []
        slowest = 0.0
        for i in range(5, 15):
            start = time.monotonic()
            during.append(dispatcher.submit(make_event(i)))
            slowest = max(slowest, time.monotonic() - start)
            time.sleep(0.05)
        # Detection is never held up by the broker: submit only writes the outbox.
        assert slowest < 0.5, f"submit took {slowest:.2f} s while the broker was down"
        assert wait_until(lambda: dispatcher.stats()[sink.name]["failed_attempts"] > 0, 10)
        assert dispatcher.stats()[sink.name]["backlog"] > 0

        broker.start()
        assert dispatcher.flush(20), dispatcher.stats()
        everything = set(before) | set(during)
        assert wait_until(lambda: everything <= subscriber.ids(), 15), (
            f"missing after restart: {everything - subscriber.ids()}"
        )
    finally:
        dispatcher.close(5)


def test_send_raises_when_no_broker_listens() -> None:
    sink = MqttSink(f"mqtt://127.0.0.1:{free_port()}/{TOPIC}", timeout_s=0.5)
    try:
        start = time.monotonic()
        with pytest.raises(SinkError, match="not reachable"):
            sink.send(make_event(0))
        assert time.monotonic() - start < 3
    finally:
        sink.close()


def test_password_in_url_and_wildcard_topic_are_refused() -> None:
    with pytest.raises(SinkConfigError, match="YOLODEFECT_MQTT_PASSWORD"):
        MqttSink("mqtt://user:pw@127.0.0.1:1883/a/b")
    with pytest.raises(SinkConfigError, match="wildcards"):
        MqttSink("mqtt://127.0.0.1:1883/a/#")
