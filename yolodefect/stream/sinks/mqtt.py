"""MQTT sink: publishes each event as JSON with QoS 1 and returns only after the broker's PUBACK.

paho-mqtt's network thread (``loop_start``) keeps the connection and reconnects on its own; ``send``
never queues into paho while disconnected, so a long outage does not pile up stale copies in memory -
the outbox is the queue.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from yolodefect.stream.events import utc_now_iso
from yolodefect.stream.redact import redact_urls
from yolodefect.stream.sinks.base import SinkConfigError, SinkError, event_json, missing_extra

logger = logging.getLogger(__name__)

USERNAME_ENV = "YOLODEFECT_MQTT_USERNAME"
PASSWORD_ENV = "YOLODEFECT_MQTT_PASSWORD"


class MqttSink:
    """``mqtt://[user@]host[:port]/topic/path`` (or ``mqtts://`` for TLS with the system CAs).

    The username comes from the URL or ``YOLODEFECT_MQTT_USERNAME``; the password only from
    ``YOLODEFECT_MQTT_PASSWORD`` (a password in the URL would end up in shell history and logs).
    """

    def __init__(
        self,
        url: str,
        qos: int = 1,
        *,
        timeout_s: float = 5.0,
        client_id: str | None = None,
        keepalive_s: int = 30,
        reconnect_max_s: int = 10,
        name: str | None = None,
    ):
        try:
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError as exc:
            raise missing_extra("paho-mqtt", "mqtt") from exc

        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise SinkConfigError(f"MQTT URL {redact_urls(url)!r} must look like mqtt://[user@]host[:port]/topic/path")
        if parts.password:
            raise SinkConfigError(
                f"MQTT URL {redact_urls(url)!r} contains a password; remove it and set {PASSWORD_ENV} instead"
            )
        topic = unquote(parts.path.lstrip("/"))
        # urlsplit reads '#' as a fragment marker, so look at the fragment too.
        if not topic or "+" in topic or "#" in topic or parts.fragment or "#" in url:
            raise SinkConfigError(f"MQTT URL {redact_urls(url)!r} needs a publish topic without wildcards, e.g. mqtt://host/line1/rejects")
        if qos not in (0, 1, 2):
            raise SinkConfigError(f"MQTT qos must be 0, 1 or 2, got {qos}")
        if qos == 0:
            logger.warning("MQTT qos=0 gives no broker acknowledgement; events can be lost in transit (use qos=1)")

        tls = parts.scheme == "mqtts"
        self.host: str = parts.hostname
        self.port: int = parts.port or (8883 if tls else 1883)
        self.topic = topic
        self.qos = qos
        self.timeout_s = timeout_s
        self.name = name or f"{parts.scheme}://{self.host}:{self.port}/{topic}"

        self._closing = False
        self._connected = threading.Event()
        self._last_error = "not connected yet"
        self._down_since: str | None = utc_now_iso()  # for the web page's "down since"; None while connected
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            # A unique id: two stations sharing an id would keep kicking each other off the broker.
            client_id=client_id or f"yolodefect-{uuid.uuid4().hex[:12]}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        username = unquote(parts.username) if parts.username else os.environ.get(USERNAME_ENV)
        if username:
            self._client.username_pw_set(username, os.environ.get(PASSWORD_ENV))
        if tls:
            self._client.tls_set()
        self._client.reconnect_delay_set(min_delay=1, max_delay=max(1, reconnect_max_s))
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        # Connect in the background: a broker that is down at startup must not stop detection.
        self._client.connect_async(self.host, self.port, keepalive=keepalive_s)
        self._client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._last_error = f"broker refused connection: {reason_code} (check {USERNAME_ENV}/{PASSWORD_ENV})"
            logger.warning("MQTT %s: %s", self.name, self._last_error)
            return
        logger.info("MQTT %s connected", self.name)
        self._down_since = None
        self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if self._connected.is_set() and not self._closing:
            logger.warning("MQTT %s disconnected (%s); reconnecting in the background", self.name, reason_code)
        self._connected.clear()
        self._last_error = f"disconnected: {reason_code}"
        self._down_since = self._down_since or utc_now_iso()

    def connection(self) -> tuple[str | None, str | None]:
        """(why the broker connection is down, since when as UTC ISO); (None, None) while connected. The web page
        shows a broker outage at once, before an event has to fail on it."""
        if self._connected.is_set():
            return None, None
        return self._last_error, self._down_since

    def send(self, event: Mapping[str, Any]) -> None:
        if not self._connected.wait(self.timeout_s):
            raise SinkError(f"MQTT broker {self.host}:{self.port} not reachable ({self._last_error})")
        info = self._client.publish(self.topic, event_json(event).encode("utf-8"), qos=self.qos)
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise SinkError(f"MQTT publish to {self.name} failed: {exc}") from exc
        if not info.is_published():
            # paho may still deliver this copy after a reconnect; the retry then makes a duplicate,
            # which consumers drop by event_id (at-least-once).
            raise SinkError(f"MQTT broker {self.host}:{self.port} did not acknowledge within {self.timeout_s} s")

    def close(self) -> None:
        self._closing = True  # our own disconnect is not an outage
        self._client.disconnect()
        self._client.loop_stop()
