"""OPC UA sink against a real asyncua server on 127.0.0.1 with writable variables."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.builders import make_event
from tests.helpers import free_port, skip_unless_ci

from yolodefect.stream.delivery import Dispatcher
from yolodefect.stream.sinks import OpcUaSink, SinkConfigError, SinkError, sink_from_url

try:
    from asyncua import ua
    from asyncua.sync import Server, SyncNode, ThreadLoop
except ImportError as exc:  # the reason names the real import problem, not just "missing"
    skip_unless_ci(f"asyncua not importable ({exc}); pip install yolodefect[opcua]")


def wait_for_value(node: SyncNode, expected: Any, timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    value = node.read_value()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        value = node.read_value()
    return value


@dataclass
class Plc:
    endpoint: str
    server: Server
    decision: SyncNode
    defect_class: SyncNode
    event_id: SyncNode
    counter: SyncNode
    decision_code: SyncNode

    def ids(self, node: SyncNode) -> str:
        return node.nodeid.to_string()


def start_plc(tloop: ThreadLoop, port: int) -> Plc:
    server = Server(tloop=tloop)
    endpoint = f"opc.tcp://127.0.0.1:{port}/"
    server.set_endpoint(endpoint)
    idx = server.register_namespace("urn:yolodefect:test-plc")
    line = server.nodes.objects.add_object(idx, "Line1")
    nodes = {
        "decision": line.add_variable(idx, "Decision", "", varianttype=ua.VariantType.String),
        "defect_class": line.add_variable(idx, "DefectClass", "", varianttype=ua.VariantType.String),
        "event_id": line.add_variable(idx, "EventId", "", varianttype=ua.VariantType.String),
        "counter": line.add_variable(idx, "Counter", 0, varianttype=ua.VariantType.UInt16),
        "decision_code": line.add_variable(idx, "DecisionCode", -1, varianttype=ua.VariantType.Int32),
    }
    for node in nodes.values():
        node.set_writable()
    server.start()
    return Plc(endpoint=endpoint, server=server, **nodes)


@pytest.fixture(scope="module")
def tloop() -> Iterator[ThreadLoop]:
    loop = ThreadLoop()
    loop.start()
    yield loop
    loop.stop()


@pytest.fixture(scope="module")
def plc(tloop: ThreadLoop) -> Iterator[Plc]:
    p = start_plc(tloop, free_port())
    yield p
    p.server.stop()


def test_reject_event_sets_decision_and_defect_class(plc: Plc, tmp_path: Path) -> None:
    url = (
        f"{plc.endpoint}?decision={plc.ids(plc.decision)}&defect_class={plc.ids(plc.defect_class)}"
        f"&event_id={plc.ids(plc.event_id)}&counter={plc.ids(plc.counter)}"
    )
    sink = sink_from_url(url)
    assert isinstance(sink, OpcUaSink)
    start_count = plc.counter.read_value()
    dispatcher = Dispatcher.open(tmp_path / "outbox.db", [sink], retry_initial_s=0.05, retry_max_s=0.5)
    try:
        reject = make_event(decision="reject", classes=("scratch", "dent"))
        dispatcher.submit(reject)
        assert dispatcher.flush(10), dispatcher.stats()
        assert plc.decision.read_value() == "reject"
        assert plc.defect_class.read_value() == "scratch"
        assert plc.event_id.read_value() == reject["event_id"]
        assert plc.counter.read_value() == start_count + 1

        passed = make_event(decision="pass")
        dispatcher.submit(passed)
        assert wait_for_value(plc.event_id, passed["event_id"]) == passed["event_id"]
        assert plc.decision.read_value() == "pass"
        assert plc.defect_class.read_value() == ""
        assert plc.counter.read_value() == start_count + 2
    finally:
        assert dispatcher.close(5)


def test_integer_decision_node_gets_a_code(plc: Plc) -> None:
    sink = OpcUaSink(plc.endpoint, decision_node=plc.ids(plc.decision_code), timeout_s=3)
    try:
        sink.send(make_event(decision="reject", classes=("scratch",)))
        assert plc.decision_code.read_value() == 1
        sink.send(make_event(decision="error"))
        assert plc.decision_code.read_value() == 2
    finally:
        sink.close()


def test_wrong_node_type_is_reported(plc: Plc) -> None:
    sink = OpcUaSink(plc.endpoint, decision_node=plc.ids(plc.decision), defect_class_node=plc.ids(plc.counter))
    try:
        with pytest.raises(SinkConfigError, match="String"):
            sink.send(make_event(decision="reject", classes=("scratch",)))
    finally:
        sink.close()


def test_invalid_node_id_fails_at_startup() -> None:
    with pytest.raises(SinkConfigError, match="node id"):
        OpcUaSink("opc.tcp://127.0.0.1:4840", decision_node="not a node id")
    with pytest.raises(SinkConfigError, match="decision"):
        sink_from_url("opc.tcp://127.0.0.1:4840")


def test_reconnects_after_server_restart(tloop: ThreadLoop) -> None:
    plc = start_plc(tloop, free_port())
    sink = OpcUaSink(plc.endpoint, decision_node=plc.ids(plc.decision), timeout_s=2)
    try:
        sink.send(make_event(decision="reject", classes=("scratch",)))
        assert plc.decision.read_value() == "reject"
        plc.server.stop()
        with pytest.raises(SinkError):
            sink.send(make_event(decision="pass"))

        plc.server.start()  # the PLC comes back on the same port
        sink.send(make_event(decision="pass"))
        assert plc.decision.read_value() == "pass"
    finally:
        sink.close()
        plc.server.stop()
