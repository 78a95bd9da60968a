"""The MQTT and OPC UA sinks are optional extras: without them the package still imports and says what to install."""

from __future__ import annotations

import sys

import pytest

from yolodefect.errors import YoloDefectError
from yolodefect.stream.sinks import MqttSink, OpcUaSink, SinkConfigError, sink_from_url


def test_missing_paho_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "paho" or m.startswith("paho.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "paho", None)  # None in sys.modules makes the import fail
    with pytest.raises(SinkConfigError, match=r"pip install yolodefect\[mqtt\]"):
        MqttSink("mqtt://127.0.0.1:1883/line/events")


def test_missing_asyncua_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "asyncua" or m.startswith("asyncua.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "asyncua", None)
    with pytest.raises(SinkConfigError, match=r"pip install yolodefect\[opcua\]"):
        OpcUaSink("opc.tcp://127.0.0.1:4840", decision_node="ns=2;i=2")


@pytest.mark.parametrize("spec", ["ftp://host/x", "kafka://broker/topic"])
def test_unknown_sink_scheme_lists_the_choices(spec: str) -> None:
    with pytest.raises(YoloDefectError, match="mqtt://"):
        sink_from_url(spec)
