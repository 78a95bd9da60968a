"""Turn a ``--sink`` string from the command line into a configured sink."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from yolodefect.stream.redact import redact_urls
from yolodefect.stream.sinks.base import Sink, SinkConfigError
from yolodefect.stream.sinks.file import JsonlFileSink, StdoutSink

_OPCUA_KEYS = {"decision", "defect_class", "event_id", "counter"}

EXAMPLES = (
    "events.jsonl | - (stdout) | https://host/hook | mqtt://[user@]host[:port]/topic | "
    "opc.tcp://host:4840?decision=ns=2;i=2&defect_class=ns=2;i=3"
)


def sink_from_url(url: str) -> Sink:
    """Map a sink spec to a sink.

    * ``-``: stdout
    * a path (``events.jsonl``, ``file:///var/log/events.jsonl``): JSON lines file, fsynced per event
    * ``http://`` / ``https://``: webhook (Authorization from ``YOLODEFECT_WEBHOOK_AUTH``)
    * ``mqtt://`` / ``mqtts://``: MQTT QoS 1 (credentials from ``YOLODEFECT_MQTT_USERNAME``/``_PASSWORD``)
    * ``opc.tcp://host:port?decision=<node>[&defect_class=<node>][&event_id=<node>][&counter=<node>]``
    """
    spec = url.strip()
    if spec == "-":
        return StdoutSink()
    path = file_sink_path(spec)
    if path is not None:
        return JsonlFileSink(path)
    scheme = spec.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        from yolodefect.stream.sinks.webhook import WebhookSink

        return WebhookSink(spec)
    if scheme in ("mqtt", "mqtts"):
        from yolodefect.stream.sinks.mqtt import MqttSink

        return MqttSink(spec)
    if scheme == "opc.tcp":
        return _opcua_from_url(spec)
    raise SinkConfigError(f"unknown sink {redact_urls(url)!r}; use one of: {EXAMPLES}")


def file_sink_path(spec: str) -> Path | None:
    """The file a sink spec appends to (``events.jsonl``, ``file:///var/log/events.jsonl``); None for any other sink."""
    spec = spec.strip()
    if spec == "-":
        return None
    if "://" not in spec:
        return Path(spec).expanduser()
    if spec.split("://", 1)[0].lower() == "file":
        return Path(urlsplit(spec).path)
    return None


def _opcua_from_url(spec: str) -> Sink:
    from yolodefect.stream.sinks.opcua import OpcUaSink

    parts = urlsplit(spec)
    # Node ids contain ';' and '=', which parse_qsl keeps (it splits on '&' and the first '=').
    params = dict(parse_qsl(parts.query, keep_blank_values=False))
    unknown = set(params) - _OPCUA_KEYS
    if unknown or "decision" not in params:
        raise SinkConfigError(
            f"OPC UA sink {redact_urls(spec)!r} needs ?decision=<node id> and accepts only {sorted(_OPCUA_KEYS)} "
            f"(got {sorted(params)}); e.g. opc.tcp://plc:4840?decision=ns=2;i=2&defect_class=ns=2;i=3"
        )
    endpoint = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return OpcUaSink(
        endpoint,
        decision_node=params["decision"],
        defect_class_node=params.get("defect_class"),
        event_id_node=params.get("event_id"),
        counter_node=params.get("counter"),
    )
