"""External part triggers (a PLC or photo-eye signal over MQTT or OPC UA) and the source they drive.

A line with a photo-eye knows when a part is in front of the camera better than any image does.
:func:`open_trigger` listens for that signal:

* ``mqtt://[user@]host[:port]/topic`` (``mqtts://`` for TLS): every message on the topic is one
  part. The payload names it: JSON ``{"part_id": "A17"}``, plain text ``A17``, or empty (then a
  running number). QoS 1 subscription, renewed on every reconnect, so a broker restart only costs
  the parts triggered while it was down (logged). Credentials as for the MQTT sink:
  ``YOLODEFECT_MQTT_USERNAME`` / ``YOLODEFECT_MQTT_PASSWORD``.
* ``opc.tcp://host:port?node=ns=2;s=PartPresent``: a subscription to data changes of that node.
  A string node: each new non-empty value is one part, named by it. A boolean: each rising edge.
  An integer: a counter, each increment one part (a jump of 3 is 3 parts); a counter also says how
  many parts passed while the PLC was unreachable, and those parts get error frames on reconnect.
  Credentials as for the OPC UA sink: ``YOLODEFECT_OPCUA_USERNAME`` / ``YOLODEFECT_OPCUA_PASSWORD``.

:class:`TriggeredSource` turns a camera, stream or (paced) video into one frame per trigger: the
first frame captured after the trigger arrived (plus an optional delay), with ``part_hint`` = the
trigger's part id. No trigger is dropped and no part leaves silently: a trigger that gets no frame
in time (camera gone), one that overflows the bounded queue of waiting parts, or one that fired
while the trigger connection was down still yields a frame, carrying an error that names the
trigger and the part (:attr:`Frame.error`), so the station gives that part an ``error`` decision.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from numbers import Integral, Real
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from yolodefect.errors import UsageError
from yolodefect.stream.frames import POLL_S, Frame, FrameSource, SourceOptions, SourceStats, utc_now
from yolodefect.stream.redact import redact_urls, redact_values
from yolodefect.stream.sinks.mqtt import PASSWORD_ENV as MQTT_PASSWORD_ENV
from yolodefect.stream.sinks.mqtt import USERNAME_ENV as MQTT_USERNAME_ENV
from yolodefect.stream.sinks.opcua import PASSWORD_ENV as OPCUA_PASSWORD_ENV
from yolodefect.stream.sinks.opcua import new_client as new_opcua_client

logger = logging.getLogger(__name__)

TRIGGER_HELP = "mqtt://[user@]host[:port]/topic or opc.tcp://host:port?node=ns=2;s=PartPresent"

# A counter that jumps by more than this on reconnect was reset or replaced, not advanced by parts.
_MAX_MISSED_PER_JUMP = 1000


@dataclass(frozen=True)
class TriggerSignal:
    """One part announced by the line. ``missed`` is set when the part is known to have passed while
    the trigger could not be heard (its moment is unknown, so no frame can be its picture)."""

    part_id: str
    received_at: datetime
    received_monotonic: float
    missed: str | None = None


class Trigger:
    """A source of :class:`TriggerSignal` objects; connects in the background and reconnects forever.

    :meth:`listen` hands every signal to a callback (on the trigger's network thread); signals that
    arrive before it are kept and handed over first. :meth:`close` ends it.
    """

    def __init__(self, name: str, stop_event: threading.Event | None = None):
        self.name = name
        self._stop = stop_event if stop_event is not None else threading.Event()
        # Held while a signal is handed over, so signals reach the listener in order, early ones first.
        self._lock = threading.RLock()
        self._listener: Callable[[TriggerSignal], None] | None = None
        self._early: list[TriggerSignal] = []
        self._numbers = 0
        self._ready = threading.Event()  # connected and subscribed
        self.reconnects = 0

    def listen(self, on_signal: Callable[[TriggerSignal], None]) -> None:
        with self._lock:
            self._listener = on_signal
            early, self._early = self._early, []
            for signal in early:
                on_signal(signal)

    def wait_ready(self, timeout_s: float) -> bool:
        """True once connected and subscribed (within ``timeout_s``)."""
        return self._ready.wait(timeout_s)

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def close(self) -> None:
        raise NotImplementedError

    def _running_number(self) -> str:
        with self._lock:
            self._numbers += 1
            return str(self._numbers)

    def _emit(self, part_id: str | None, missed: str | None = None) -> None:
        signal = TriggerSignal(part_id if part_id else self._running_number(), utc_now(), time.monotonic(), missed)
        with self._lock:
            if self._listener is None:
                self._early.append(signal)
            else:
                self._listener(signal)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def open_trigger(spec: str, stop_event: threading.Event | None = None) -> Trigger:
    """The trigger for ``spec`` (see :data:`TRIGGER_HELP`); raises UsageError when it cannot work."""
    text = spec.strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("mqtt", "mqtts"):
        return MqttTrigger(text, stop_event)
    if scheme == "opc.tcp":
        parts = urlsplit(text)
        # Node ids contain ';' and '=', which parse_qsl keeps (it splits on '&' and the first '=').
        params = dict(parse_qsl(parts.query))
        if set(params) != {"node"}:
            raise UsageError(f"OPC UA trigger {redact_urls(text)!r} needs exactly ?node=<node id>, "
                             "e.g. opc.tcp://plc:4840?node=ns=2;s=PartPresent")
        endpoint = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return OpcUaTrigger(endpoint, params["node"], stop_event)
    raise UsageError(f"unknown trigger {redact_urls(text)!r}; give {TRIGGER_HELP}")


def _missing_package(package: str, extra: str) -> UsageError:
    return UsageError(f"this trigger needs the '{package}' package: pip install yolodefect[{extra}]")


def part_id_from_payload(payload: bytes) -> str | None:
    """The part id an MQTT trigger message names: JSON ``{"part_id": ...}``, plain text, or None (empty)."""
    text = payload.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        value = data.get("part_id")
        return None if value is None or str(value).strip() == "" else str(value).strip()
    return text  # a bare number or string in JSON is the id as written


class MqttTrigger(Trigger):
    """Every message on an MQTT topic (wildcards allowed) is one part; see the module docstring."""

    def __init__(self, url: str, stop_event: threading.Event | None = None, *, keepalive_s: int = 30,
                 reconnect_max_s: int = 10, client_id: str | None = None):
        try:
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError as exc:
            raise _missing_package("paho-mqtt", "mqtt") from exc
        scheme, _, rest = url.partition("://")
        # Split by hand: urlsplit would take the '#' wildcard for a fragment marker.
        netloc, _, raw_topic = rest.partition("/")
        parts = urlsplit(f"{scheme}://{netloc}")
        topic = unquote(raw_topic)
        if not parts.hostname or not topic:
            raise UsageError(f"MQTT trigger {redact_urls(url)!r} must look like mqtt://[user@]host[:port]/topic")
        if parts.password:
            raise UsageError(f"MQTT trigger {redact_urls(url)!r} contains a password; remove it and set "
                             f"{MQTT_PASSWORD_ENV} instead")
        tls = scheme.lower() == "mqtts"
        self.host: str = parts.hostname
        self.port: int = parts.port or (8883 if tls else 1883)
        self.topic = topic
        super().__init__(f"{scheme.lower()}://{self.host}:{self.port}/{topic}", stop_event)
        self._closing = False
        self._was_connected = False
        self._failures = 0
        # A clean session: messages queued by the broker while we were away would arrive late and be
        # matched with frames of other parts; the outage is logged and counted instead.
        self._client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"yolodefect-trigger-{uuid.uuid4().hex[:12]}",
                                   clean_session=True, protocol=mqtt.MQTTv311)
        username = unquote(parts.username) if parts.username else os.environ.get(MQTT_USERNAME_ENV)
        if username:
            self._client.username_pw_set(username, os.environ.get(MQTT_PASSWORD_ENV))
        if tls:
            self._client.tls_set()
        self._client.reconnect_delay_set(min_delay=1, max_delay=max(1, reconnect_max_s))
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        # In the background: a broker that is down at startup is retried, not fatal.
        self._client.connect_async(self.host, self.port, keepalive=keepalive_s)
        self._client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._retry_log(f"broker refused the connection: {reason_code} (check {MQTT_USERNAME_ENV}/{MQTT_PASSWORD_ENV})")
            return
        # Subscribing on every connect: a restarted broker has forgotten our subscription.
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reason_codes: Any, properties: Any) -> None:
        refused = [code for code in reason_codes if code.is_failure]
        if refused:
            logger.error("MQTT trigger %s: the broker refused the subscription (%s); no part will be triggered",
                         self.name, refused[0])
            return
        if self._was_connected:
            self.reconnects += 1
            logger.warning("MQTT trigger %s: reconnected and subscribed again", self.name)
        else:
            logger.info("MQTT trigger %s: subscribed (QoS 1)", self.name)
        self._was_connected = True
        self._failures = 0
        self._ready.set()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._retry_log(f"broker {self.host}:{self.port} not reachable")

    def _retry_log(self, reason: str) -> None:
        self._failures += 1
        # The first failure of an outage is a warning; the retries every few seconds are info.
        log = logger.warning if self._failures == 1 else logger.info
        log("MQTT trigger %s: %s; retry %d, parts triggered meanwhile are not seen", self.name, reason, self._failures)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if self._ready.is_set() and not self._closing:
            logger.warning("MQTT trigger %s: disconnected (%s); reconnecting, parts triggered meanwhile are not seen",
                           self.name, reason_code)
        self._ready.clear()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self._emit(part_id_from_payload(message.payload))

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True  # our own disconnect is not an outage
        self._client.disconnect()
        self._client.loop_stop()


class OpcUaTrigger(Trigger):
    """Data changes of one OPC UA node are parts; see the module docstring for what counts as one.

    asyncua runs on the trigger's own event-loop thread. A supervisor connects, subscribes, checks
    the session every ``keepalive_s`` and, when it breaks, reconnects with exponential backoff.
    """

    def __init__(self, endpoint: str, node: str, stop_event: threading.Event | None = None, *,
                 timeout_s: float = 5.0, keepalive_s: float = 1.0, reconnect_initial_s: float = 0.5,
                 reconnect_max_s: float = 10.0, publishing_ms: float = 50.0):
        try:
            from asyncua import ua
        except ImportError as exc:
            raise _missing_package("asyncua", "opcua") from exc
        parts = urlsplit(endpoint)
        if parts.scheme != "opc.tcp" or not parts.hostname:
            raise UsageError(f"OPC UA trigger {redact_urls(endpoint)!r} must look like opc.tcp://host:4840?node=<node id>")
        try:
            self._node_id = ua.NodeId.from_string(node)
        except Exception as exc:
            raise UsageError(f"OPC UA trigger node id {node!r} is invalid ({exc}); use the form 'ns=2;i=2' "
                             "or 'ns=2;s=PartPresent'") from exc
        super().__init__(f"{redact_urls(endpoint).rstrip('/')}?node={node}", stop_event)
        self.endpoint = endpoint  # asyncua takes user:password@ from it; messages show only self.name
        self._url_password = parts.password
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.publishing_ms = publishing_ms
        self._previous: Any = None  # the node's last value, kept across reconnects (a counter's gap = missed parts)
        self._fresh_session = True
        self._closing = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, name=f"trigger-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self._supervise())
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            self._loop.close()

    def _halted(self) -> bool:
        return self._closing.is_set() or self._stop.is_set()

    async def _supervise(self) -> None:
        delay = self.reconnect_initial_s
        failures = 0
        rng = random.Random()
        while not self._halted():
            client = None
            try:
                client = await self._connect()
                if failures:
                    self.reconnects += 1
                    logger.warning("OPC UA trigger %s: reconnected after %d failed attempt(s)", self.name, failures)
                else:
                    logger.info("OPC UA trigger %s: subscribed", self.name)
                failures, delay = 0, self.reconnect_initial_s
                self._ready.set()
                while not self._halted():
                    await self._sleep(self.keepalive_s)
                    if self._halted():
                        break
                    # Any read proves the session; a dead server or cable makes it fail or time out.
                    await asyncio.wait_for(client.nodes.server_state.read_value(), self.timeout_s)
            except Exception as exc:
                if self._halted():
                    break
                failures += 1
                was_ready = self._ready.is_set()
                self._ready.clear()
                pause = delay * rng.uniform(0.5, 1.0)  # jitter: stations must not retry in lockstep
                log = logger.warning if was_ready or failures == 1 else logger.info
                log("OPC UA trigger %s: %s; reconnecting in %.1f s (retry %d), parts triggered meanwhile are %s",
                    self.name, self._scrub(f"{type(exc).__name__}: {exc}"), pause, failures,
                    "counted by the counter node" if isinstance(self._previous, Integral)
                    and not isinstance(self._previous, bool) else "not seen")
                delay = min(delay * 2, self.reconnect_max_s)
                await self._sleep(pause)
            finally:
                self._ready.clear()
                if client is not None:
                    await self._disconnect(client)

    async def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._halted() and time.monotonic() < deadline:
            await asyncio.sleep(min(POLL_S * 2, max(0.0, deadline - time.monotonic())))

    async def _connect(self) -> Any:
        client = new_opcua_client(self.endpoint, self.timeout_s)
        await client.connect()
        try:
            self._fresh_session = True
            subscription = await client.create_subscription(self.publishing_ms, _ChangeHandler(self))
            # A queue on the server: a short pulse (True then False) between two publishes is not lost.
            await subscription.subscribe_data_change(client.get_node(self._node_id), queuesize=100)
        except Exception:
            await self._disconnect(client)
            raise
        return client

    async def _disconnect(self, client: Any) -> None:
        try:
            await asyncio.wait_for(client.disconnect(), self.timeout_s)
        except Exception as exc:  # the connection is usually already broken; nothing to save
            logger.debug("OPC UA trigger %s disconnect: %s", self.name, self._scrub(str(exc)))

    def _scrub(self, text: str) -> str:
        # asyncua's own messages may quote the endpoint, or the password it was given.
        return redact_values(redact_urls(text), (self._url_password, os.environ.get(OPCUA_PASSWORD_ENV)))

    def on_value(self, value: Any) -> None:
        """One data change of the node (on the loop thread). The first of a session is its state, not a part."""
        previous, self._previous = self._previous, value
        fresh, self._fresh_session = self._fresh_session, False
        if isinstance(value, str):
            if not fresh and value.strip() and value != previous:
                self._emit(value.strip())
            return
        if isinstance(value, Integral) and not isinstance(value, bool):
            if not isinstance(previous, Integral) or isinstance(previous, bool):
                return  # no count to compare with yet
            gap = int(value) - int(previous)
            if gap < 0 and fresh:
                logger.warning("OPC UA trigger %s: the counter went back from %s to %s while disconnected (PLC "
                               "restarted?); parts that passed meanwhile cannot be counted", self.name, previous, value)
            elif gap < 0 and value:
                logger.info("OPC UA trigger %s: counter went back from %s to %s (reset); one part",
                            self.name, previous, value)
                self._emit(None)
            if gap <= 0:
                return
            if fresh:
                self._missed(gap, previous, value)
                return
            for _ in range(gap):
                self._emit(None)
            return
        if isinstance(value, Real) and not fresh and value and not previous:
            self._emit(None)  # a boolean's rising edge (or any number becoming non-zero)

    def _missed(self, gap: int, previous: Any, value: Any) -> None:
        """Parts the counter says passed while the PLC was unreachable: errors, since their frames are gone."""
        logger.warning("OPC UA trigger %s: the counter went from %s to %s while disconnected: %d part(s) passed "
                       "uninspected; each gets an error", self.name, previous, value, gap)
        if gap > _MAX_MISSED_PER_JUMP:
            logger.error("OPC UA trigger %s: a jump of %d is not a count of parts (counter reset?); "
                         "reporting one error for it", self.name, gap)
            gap = 1
        for _ in range(gap):
            self._emit(None, missed=f"trigger {self.name}: part passed while the trigger was disconnected "
                                    f"(counter {previous} -> {value}); not inspected")

    def close(self) -> None:
        self._closing.set()
        self._thread.join(self.timeout_s + self.keepalive_s + 1.0)


class _ChangeHandler:
    """asyncua calls ``datachange_notification`` on the loop thread for every change of the node."""

    def __init__(self, trigger: OpcUaTrigger):
        self._trigger = trigger

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        try:
            self._trigger.on_value(value)
        except Exception:  # a handler that raises would be logged by asyncua and the part lost silently
            logger.exception("OPC UA trigger %s: cannot handle the value %r", self._trigger.name, value)

    def status_change_notification(self, status: Any) -> None:
        logger.warning("OPC UA trigger %s: subscription status %s", self._trigger.name, status)


# ---------------------------------------------------------------------------------------------


@dataclass
class _Pending:
    """One trigger waiting for its frame; answered once ``frame`` or ``error`` is set."""

    signal: TriggerSignal
    frame: Frame | None = None
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.frame is not None or self.error is not None


_END = object()


class TriggeredStats(SourceStats):
    """The inner source's counters (reconnects, open failures...) with the trigger's own."""

    _TRIGGER_COUNTERS = ("triggers", "trigger_frame_timeouts", "triggers_lost", "triggers_missed")

    def __init__(self, inner: FrameSource, trigger: Trigger) -> None:
        super().__init__()
        self._inner = inner
        self._trigger = trigger
        self.triggers = 0  # signals received (missed ones included)
        self.trigger_frame_timeouts = 0  # parts that got no frame in time (camera gone, source ended)
        self.triggers_lost = 0  # parts beyond the queue of waiting parts
        self.triggers_missed = 0  # parts that passed while the trigger was disconnected (counter nodes)

    def snapshot(self) -> dict[str, Any]:
        inner = self._inner.stats.snapshot()
        with self._lock:
            own = {name: getattr(self, name) for name in ("frames", *self._TRIGGER_COUNTERS)}
        return {**inner, **own, "trigger_reconnects": self._trigger.reconnects,
                "trigger_connected": self._trigger.connected}


class TriggeredSource(FrameSource):
    """One frame per trigger from ``inner`` (a camera, stream or paced video): see the module docstring.

    ``inner`` is read continuously on its own thread; only frames that answer a trigger are kept.
    A trigger is answered by the first frame captured at least ``delay_s`` after it arrived (a
    photo-eye upstream of the camera), or by an error frame when none comes within
    ``frame_timeout_s``. At most ``max_pending`` parts wait (with their frames) for the consumer;
    more get error frames. When ``inner`` ends, the waiting triggers are answered and the source ends.
    """

    kind = "triggered"
    per_part = True

    def __init__(self, inner: FrameSource, trigger: Trigger, *, frame_timeout_s: float = 2.0, delay_s: float = 0.0,
                 max_pending: int = 16, stop_event: threading.Event | None = None):
        if frame_timeout_s <= 0 or delay_s < 0 or max_pending < 1:
            raise UsageError("a triggered source needs frame_timeout_s > 0, delay_s >= 0 and max_pending >= 1")
        super().__init__(f"{inner.name} on trigger {trigger.name}", SourceOptions(), stop_event)
        self.inner = inner
        self.trigger = trigger
        self.frame_timeout_s = frame_timeout_s
        self.delay_s = delay_s
        self.max_pending = max_pending
        self.stats = TriggeredStats(inner, trigger)
        self._cond = threading.Condition()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._inner_ended = False
        self._failure: BaseException | None = None
        self._done = threading.Event()
        self._last_index = 0
        self._error_streak = 0
        if inner.kind == "video" and inner.options.fps_cap is None:
            logger.warning("%s: a video file is read as fast as it decodes, so triggers find few frames; give an "
                           "fps cap to replay it at line speed", inner.name)
        # Listen now: a part triggered while the station starts still gets its (error) frame.
        trigger.listen(self._on_trigger)

    @property
    def nominal_fps(self) -> float | None:  # type: ignore[override]
        return self.inner.nominal_fps

    # -- trigger thread ----------------------------------------------------------------------------

    def _on_trigger(self, signal: TriggerSignal) -> None:
        entry = _Pending(signal)
        with self._cond:
            self.stats.add("triggers")
            if signal.missed is not None:
                entry.error = signal.missed
                self.stats.add("triggers_missed")
            elif sum(1 for p in self._pending if p.error is None) >= self.max_pending:
                entry.error = (f"trigger {self.trigger.name}: {self.max_pending} parts already waiting for the "
                               f"station (queue full); part {signal.part_id} not inspected")
                self.stats.add("triggers_lost")
            self._pending.append(entry)
            self._cond.notify_all()

    # -- reader thread -----------------------------------------------------------------------------

    def _read_inner(self) -> None:
        frames = iter(self.inner)
        try:
            for frame in frames:
                if self._done.is_set() or self._stop.is_set():
                    break
                self._offer(frame)
        except BaseException as exc:  # handed to the consumer, which answers the waiting parts and re-raises
            self._failure = exc
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # runs the inner source's finally (joins a camera's capture thread)
            with self._cond:
                self._inner_ended = True
                self._cond.notify_all()

    def _offer(self, frame: Frame) -> None:
        with self._cond:
            self._last_index = frame.index
            for entry in self._pending:
                if entry.answered:
                    continue
                wait_s = frame.captured_monotonic - (entry.signal.received_monotonic + self.delay_s)
                if wait_s < 0:
                    break  # later entries arrived later still
                if wait_s > self.frame_timeout_s:
                    entry.error = self._no_frame(entry)
                else:
                    entry.frame = frame
            self._cond.notify_all()

    # -- consumer ----------------------------------------------------------------------------------

    def _no_frame(self, entry: _Pending, why: str | None = None) -> str:
        self.stats.add("trigger_frame_timeouts")
        return (f"trigger {self.trigger.name}: " + (why or f"no frame from {self.inner.name} within "
                f"{self.frame_timeout_s:.1f} s") + f" for part {entry.signal.part_id}; not inspected")

    def _next(self) -> Any:
        """The next answered part as a Frame, _END when the inner source ended and nothing waits, or None."""
        with self._cond:
            now = time.monotonic()
            for entry in self._pending:
                if entry.answered:
                    continue
                if now - (entry.signal.received_monotonic + self.delay_s) <= self.frame_timeout_s:
                    break
                entry.error = self._no_frame(entry)
            if self._inner_ended:
                for entry in self._pending:
                    if not entry.answered:
                        entry.error = self._no_frame(entry, f"{self.inner.name} ended before a frame")
            if self._pending and self._pending[0].answered:
                return self._frame_for(self._pending.popleft())
            if self._inner_ended:
                return _END
            self._cond.wait(POLL_S * 2)
            return None

    def _frame_for(self, entry: _Pending) -> Frame:
        part_id = entry.signal.part_id
        if entry.frame is not None:
            if self._error_streak:
                logger.warning("%s: frames again after %d part(s) with errors", self.name, self._error_streak)
                self._error_streak = 0
            frame = entry.frame
            return Frame(frame.image, frame.index, frame.captured_at, self.name, part_id, frame.captured_monotonic,
                         frame.error)
        assert entry.error is not None
        self._error_streak += 1
        # One warning per outage: a dead camera on a fast line would otherwise flood the log.
        (logger.warning if self._error_streak == 1 else logger.debug)("%s; the part gets an error decision", entry.error)
        return Frame(Frame.placeholder(entry.error), self._last_index, entry.signal.received_at, self.name, part_id,
                     entry.signal.received_monotonic, entry.error)

    def _frames(self) -> Iterator[Frame]:
        self._done = threading.Event()
        reader = threading.Thread(target=self._read_inner, name=f"read-{self.inner.name}", daemon=True)
        reader.start()
        try:
            while not self._stop.is_set():
                item = self._next()
                if item is _END:
                    break
                if item is not None:
                    yield item
            if self._failure is not None:
                raise self._failure
        finally:
            self._done.set()
            self.trigger.close()
            # A reader blocked in a stalled camera cannot be interrupted; it is a daemon and exits with us.
            reader.join(timeout=2.0)


def open_triggered_source(spec_trigger: str, inner: FrameSource, stop_event: threading.Event | None = None,
                          **options: Any) -> TriggeredSource:
    """``inner`` (a camera, stream or video) read once per trigger from ``spec_trigger``; ``options`` go to
    :class:`TriggeredSource` (frame_timeout_s, delay_s, max_pending)."""
    if inner.per_part:
        raise UsageError(f"a trigger picks frames from a camera, stream or video; {inner.name} is already one "
                         "image per part (drop --trigger)")
    trigger = open_trigger(spec_trigger, stop_event)
    try:
        return TriggeredSource(inner, trigger, stop_event=stop_event, **options)
    except BaseException:
        trigger.close()
        raise
