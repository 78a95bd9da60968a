"""OPC UA sink: writes the decision (and defect class, event id, counter) into PLC variables.

asyncua is asynchronous; the sink owns one event-loop thread and runs every OPC UA call on it, so
``send`` stays a plain blocking call like every other sink. A failed call drops the session; the
next ``send`` (the dispatcher's retry) connects afresh - that is the reconnect.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from yolodefect.stream.redact import redact_urls, redact_values
from yolodefect.stream.sinks.base import SinkConfigError, SinkError, missing_extra

logger = logging.getLogger(__name__)

USERNAME_ENV = "YOLODEFECT_OPCUA_USERNAME"
PASSWORD_ENV = "YOLODEFECT_OPCUA_PASSWORD"


def new_client(endpoint: str, timeout_s: float) -> Any:
    """An asyncua client for ``endpoint``, with the user and password from the environment when set (not connected)."""
    from asyncua.client.client import Client

    client = Client(endpoint, timeout=timeout_s)
    username = os.environ.get(USERNAME_ENV)
    if username:
        client.set_user(username)
        client.set_password(os.environ.get(PASSWORD_ENV, ""))
    return client

# For PLCs that want a number rather than a string on an integer decision variable.
DECISION_CODES: dict[str, int] = {"pass": 0, "reject": 1, "error": 2}

_INT_MAX: dict[str, int] = {
    "SByte": 2**7 - 1, "Byte": 2**8 - 1, "Int16": 2**15 - 1, "UInt16": 2**16 - 1,
    "Int32": 2**31 - 1, "UInt32": 2**32 - 1, "Int64": 2**63 - 1, "UInt64": 2**64 - 1,
}

_T = TypeVar("_T")


class OpcUaSink:
    """Write each event to OPC UA variables in a single Write request.

    * ``decision_node``: "reject" / "pass" / "error" on a String variable, or 1 / 0 / 2 on an
      integer variable.
    * ``defect_class_node``: class of the first (highest-listed) defect, "" when there is none.
    * ``event_id_node``: the event's uuid - a PLC can de-duplicate on it.
    * ``counter_node``: integer incremented by one per delivered event. Two rejects in a row leave
      the decision string unchanged, so a PLC should trigger on this counter (or the event id),
      never on the decision value changing.

    Node values are written in the order class, event id, decision, counter, so a PLC that triggers
    on the counter sees the other values already updated. Credentials, if the server wants them,
    come from ``YOLODEFECT_OPCUA_USERNAME`` / ``YOLODEFECT_OPCUA_PASSWORD``.
    """

    def __init__(
        self,
        endpoint: str,
        decision_node: str,
        defect_class_node: str | None = None,
        *,
        event_id_node: str | None = None,
        counter_node: str | None = None,
        timeout_s: float = 5.0,
        name: str | None = None,
    ):
        try:
            from asyncua import ua
        except ImportError as exc:
            raise missing_extra("asyncua", "opcua") from exc
        parts = urlsplit(endpoint)
        if parts.scheme != "opc.tcp" or not parts.hostname:
            raise SinkConfigError(f"OPC UA endpoint {redact_urls(endpoint)!r} must look like opc.tcp://host:4840")
        self._ua = ua
        self.endpoint = endpoint  # asyncua takes user:password@ from it; messages show only redacted_endpoint
        self.redacted_endpoint = redact_urls(endpoint)
        self._url_password = parts.password
        self.timeout_s = timeout_s
        # Validate node ids now: a typo should stop startup, not turn into endless retries.
        self._node_ids: dict[str, Any] = {}
        for role, node_id in (
            ("defect_class", defect_class_node),
            ("event_id", event_id_node),
            ("decision", decision_node),
            ("counter", counter_node),
        ):
            if node_id is None:
                continue
            try:
                self._node_ids[role] = ua.NodeId.from_string(node_id)
            except Exception as exc:
                raise SinkConfigError(
                    f"OPC UA {role} node id {node_id!r} is invalid ({exc}); use the form 'ns=2;i=2' or 'ns=2;s=Line1.Decision'"
                ) from exc
        self.name = name or f"opcua:{parts.hostname}:{parts.port or 4840}/{decision_node}"

        self._client: Any = None
        self._variant_types: dict[str, Any] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"opcua-{self.name}", daemon=True)
        self._thread.start()

    # -- blocking facade -------------------------------------------------------------------------

    def send(self, event: Mapping[str, Any]) -> None:
        self._run(self._send(event), what=f"write event {event.get('event_id')}")

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._run(self._disconnect(), what="disconnect")
        except SinkError as exc:
            logger.debug("OPC UA %s: %s", self.name, exc)  # our own message: already redacted
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self.timeout_s)
        if not self._thread.is_alive():
            self._loop.close()

    def _run(self, coro: Coroutine[Any, Any, _T], *, what: str) -> _T:
        if not self._thread.is_alive():
            coro.close()
            raise SinkError(f"OPC UA sink {self.name} is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            # Connect + read types + write are each bounded by the client timeout; this is the backstop.
            return future.result(self.timeout_s * 4)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise SinkError(f"OPC UA {self.redacted_endpoint}: {what} timed out") from exc

    # -- on the loop thread ----------------------------------------------------------------------

    async def _send(self, event: Mapping[str, Any]) -> None:
        try:
            if self._client is None:
                await self._connect()
            await self._write(event)
        except SinkConfigError:
            await self._disconnect()
            raise
        except Exception as exc:
            await self._disconnect()
            raise SinkError(f"OPC UA {self.redacted_endpoint}: {type(exc).__name__}: {self._scrub(str(exc))}") from exc

    async def _connect(self) -> None:
        client = new_client(self.endpoint, self.timeout_s)
        await client.connect()
        self._client = client
        # Write with the variable's own data type: servers reject a Variant of another type.
        types = {}
        for role, node_id in self._node_ids.items():
            types[role] = await client.get_node(node_id).read_data_type_as_variant_type()
        self._variant_types = types
        logger.info("OPC UA %s connected", self.name)

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await asyncio.wait_for(client.disconnect(), self.timeout_s)
        except Exception as exc:  # the connection is usually already broken; nothing to save
            logger.debug("OPC UA %s disconnect: %s", self.name, self._scrub(str(exc)))

    def _scrub(self, text: str) -> str:
        # asyncua's own messages may quote the endpoint, or the password it was given.
        return redact_values(redact_urls(text), (self._url_password, os.environ.get(PASSWORD_ENV)))

    async def _write(self, event: Mapping[str, Any]) -> None:
        ua = self._ua
        decision = str(event.get("decision", ""))
        defects = event.get("defects") or []
        values: dict[str, Any] = {
            "defect_class": str(defects[0].get("class", "")) if defects else "",
            "event_id": str(event.get("event_id", "")),
            "decision": decision,
        }
        if "counter" in self._node_ids:
            current = await self._client.get_node(self._node_ids["counter"]).read_value()
            values["counter"] = int(current or 0) + 1

        node_ids, data_values = [], []
        for role, node_id in self._node_ids.items():
            vtype = self._variant_types[role]
            value = self._coerce(role, values[role], vtype)
            node_ids.append(node_id)
            # No timestamps: many PLC servers answer BadWriteNotSupported when a client sets them.
            data_values.append(ua.DataValue(ua.Variant(value, vtype)))
        results = await self._client.uaclient.write_attributes(node_ids, data_values, ua.AttributeIds.Value)
        for node_id, status in zip(node_ids, results):
            if not status.is_good():
                raise SinkError(f"OPC UA write to {node_id.to_string()} refused: {status.name}")

    def _coerce(self, role: str, value: Any, vtype: Any) -> Any:
        VT = self._ua.VariantType
        integer_types = {VT.SByte, VT.Byte, VT.Int16, VT.UInt16, VT.Int32, VT.UInt32, VT.Int64, VT.UInt64}
        if role == "decision" and vtype in integer_types:
            return DECISION_CODES[value]
        if role == "counter":
            if vtype not in integer_types:
                raise SinkConfigError(
                    f"OPC UA counter node {self._node_ids[role].to_string()} must be an integer variable, not {vtype.name}"
                )
            # Wrap instead of overflowing the PLC's type: the PLC only looks for a change.
            return value if value <= _INT_MAX[vtype.name] else 0
        if vtype != VT.String:
            raise SinkConfigError(
                f"OPC UA {role} node {self._node_ids[role].to_string()} has type {vtype.name}; it must be a String variable"
            )
        return value
