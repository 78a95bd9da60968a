"""Webhook sink against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from yolodefect.stream.delivery import Dispatcher
from yolodefect.stream.sinks import SinkConfigError, SinkError, WebhookSink, sink_from_url
from tests.builders import make_event


@dataclass
class Receiver:
    """What the HTTP server saw; ``fail_first`` requests get a 500."""

    url: str
    fail_first: int = 0
    status: int = 200
    attempts: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delivered_ids(self) -> list[str]:
        """The consumer's view: de-duplicated on event_id, first arrival order."""
        seen: dict[str, None] = {}
        with self.lock:
            for body in self.bodies:
                seen.setdefault(body["event_id"], None)
        return list(seen)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                state.attempts += 1
                failing = state.attempts <= state.fail_first
                if not failing and 200 <= state.status < 300:
                    state.bodies.append(json.loads(body))
                    state.headers.append(dict(self.headers))
            code = 500 if failing else state.status
            self.send_response(code)
            self.send_header("Content-Length", "2")
            if 300 <= code < 400:
                self.send_header("Location", "/elsewhere")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_post_carries_json_auth_and_idempotency_key(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLODEFECT_WEBHOOK_AUTH", "Bearer s3cret")
    sink = sink_from_url(receiver.url)
    assert isinstance(sink, WebhookSink)
    event = make_event(1)
    sink.send(event)
    assert receiver.bodies == [event]
    headers = receiver.headers[0]
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == event["event_id"]


def test_no_auth_header_without_env(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("YOLODEFECT_WEBHOOK_AUTH", raising=False)
    WebhookSink(receiver.url).send(make_event(1))
    assert "Authorization" not in receiver.headers[0]


@pytest.mark.parametrize("status", [500, 401, 302])
def test_non_2xx_raises(receiver: Receiver, status: int) -> None:
    receiver.status = status
    with pytest.raises(SinkError, match=str(status)):
        WebhookSink(receiver.url, timeout_s=2).send(make_event(1))
    assert receiver.bodies == []


def test_unreachable_server_raises_quickly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(SinkError, match="unreachable"):
        WebhookSink(f"http://127.0.0.1:{port}/hook", timeout_s=2).send(make_event(1))
    assert time.monotonic() - start < 3


def test_credentials_in_url_are_refused() -> None:
    with pytest.raises(SinkConfigError, match="YOLODEFECT_WEBHOOK_AUTH"):
        WebhookSink("http://user:pw@127.0.0.1:1/hook")


def test_server_failing_first_attempts_still_gets_every_event_once_in_order(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YOLODEFECT_WEBHOOK_AUTH", "Bearer s3cret")
    receiver.fail_first = 3
    sink = WebhookSink(receiver.url, timeout_s=2)
    dispatcher = Dispatcher.open(tmp_path / "outbox.db", [sink], retry_initial_s=0.05, retry_max_s=0.2)
    events = [make_event(i) for i in range(20)]
    for event in events:
        dispatcher.submit(event)
    assert dispatcher.flush(15), dispatcher.stats()
    stats = dispatcher.stats()[sink.name]
    assert dispatcher.close(5)

    assert receiver.delivered_ids() == [e["event_id"] for e in events]
    assert all(h["Authorization"] == "Bearer s3cret" for h in receiver.headers)
    assert stats["failed_attempts"] == 3
    assert stats["delivered"] == 20
    assert stats["backlog"] == 0
    assert uuid.UUID(receiver.bodies[0]["event_id"])
