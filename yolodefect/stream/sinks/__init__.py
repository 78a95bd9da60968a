"""Delivery destinations for inspection events; see :class:`Sink` for the contract.

The MQTT and OPC UA sinks import their client libraries only when constructed, so they stay
optional extras (``pip install yolodefect[mqtt]`` / ``yolodefect[opcua]``).
"""

from __future__ import annotations

from yolodefect.stream.sinks.base import Sink, SinkConfigError, SinkError
from yolodefect.stream.sinks.factory import sink_from_url
from yolodefect.stream.sinks.file import JsonlFileSink, StdoutSink
from yolodefect.stream.sinks.mqtt import MqttSink
from yolodefect.stream.sinks.opcua import OpcUaSink
from yolodefect.stream.sinks.webhook import WebhookSink

__all__ = [
    "JsonlFileSink",
    "MqttSink",
    "OpcUaSink",
    "Sink",
    "SinkConfigError",
    "SinkError",
    "StdoutSink",
    "WebhookSink",
    "sink_from_url",
]
