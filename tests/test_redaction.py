"""Secrets never reach a log line or an error message: URL passwords, Authorization tokens, echoed bodies.

The webhook case uses a real HTTP server on 127.0.0.1 that answers 500 with the request's headers
echoed in its body (and the token in its reason phrase), which is what many debugging endpoints and
some proxies do; the OPC UA case a real connection attempt to a closed port on 127.0.0.1.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from yolodefect.errors import UsageError
from yolodefect.stream.delivery import Dispatcher
from yolodefect.stream.options import WatchOptions
from yolodefect.stream.redact import redact_urls, redact_values
from yolodefect.stream.sinks import SinkConfigError, sink_from_url
from tests.helpers import free_port, wait_until
from tests.builders import make_event

PASSWORD = "hunter2-SECRET"
TOKEN = "tok-0123456789abcdef"


class EchoServer:
    """Answers every POST with 500, its reason phrase and body echoing the request headers."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers["Content-Length"]))
                body = "".join(f"{k}: {v}\n" for k, v in self.headers.items()).encode()
                server.bodies.append(body)
                credential = self.headers.get("Authorization", "").split(" ", 1)[-1]
                self.send_response(500, f"Failed for {credential}")
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(5)


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


def test_webhook_errors_log_status_and_length_never_the_echoed_token(
        echo_server: EchoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLODEFECT_WEBHOOK_AUTH", f"Bearer {TOKEN}")
    caplog.set_level(logging.DEBUG)
    sink = sink_from_url(echo_server.url)
    dispatcher = Dispatcher.open(tmp_path / "outbox.sqlite", [sink], retry_initial_s=0.05, retry_max_s=0.1)
    try:
        dispatcher.submit(make_event(1))
        assert wait_until(lambda: dispatcher.stats()[sink.name]["failed_attempts"] >= 2, 10)
        last_error = dispatcher.stats()[sink.name]["last_error"]
    finally:
        dispatcher.close(timeout_s=0.5)
    warnings = [r.getMessage() for r in caplog.records if "delivery of event" in r.getMessage()]
    assert len(warnings) >= 2  # the dispatcher's retry line, which quotes the sink's error
    assert TOKEN.encode() in echo_server.bodies[0]  # the server did echo the token
    size = len(echo_server.bodies[0])
    for text in [*warnings, last_error]:
        assert "HTTP 500" in text and f"{size} bytes" in text, text
    everything = caplog.text + str(last_error)
    assert TOKEN not in everything and "Authorization" not in everything


def test_credentials_in_a_webhook_url_are_refused_without_printing_them() -> None:
    with pytest.raises(SinkConfigError) as refused:
        sink_from_url(f"https://operator:{PASSWORD}@127.0.0.1/hook?token=abc")
    message = str(refused.value)
    assert PASSWORD not in message and "abc" not in message
    assert "https://***@127.0.0.1/hook?token=***" in message


@pytest.mark.parametrize("url", [
    f"mqtt://operator:{PASSWORD}@127.0.0.1:1883/line1",  # password refused
    f"mqtt://operator:{PASSWORD}@/line1",  # no host
    f"mqtt://operator:{PASSWORD}#1@127.0.0.1/line1",  # a '#' in the password splits the URL early
    f"opc.tcp://operator:{PASSWORD}@127.0.0.1:4840?decison=ns=2;i=2",  # misspelt node parameter
    f"ftp://operator:{PASSWORD}@127.0.0.1/events",  # unknown scheme
])
def test_sink_url_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(SinkConfigError) as refused:
        sink_from_url(url)
    assert PASSWORD not in str(refused.value) and "***@" in str(refused.value)


def test_opcua_connection_errors_redact_the_url_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("asyncua")
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nothing listens: every attempt fails and is logged
    sink = sink_from_url(f"opc.tcp://operator:{PASSWORD}@127.0.0.1:{port}?decision=ns=2;i=2")
    dispatcher = Dispatcher.open(tmp_path / "outbox.sqlite", [sink], retry_initial_s=0.05, retry_max_s=0.1)
    try:
        dispatcher.submit(make_event(1))
        assert wait_until(lambda: dispatcher.stats()[sink.name]["failed_attempts"] >= 1, 15)
        last_error = str(dispatcher.stats()[sink.name]["last_error"])
    finally:
        dispatcher.close(timeout_s=0.5)
    assert f"opc.tcp://***@127.0.0.1:{port}" in last_error
    assert PASSWORD not in caplog.text + last_error
    assert any(f"***@127.0.0.1:{port}" in r.getMessage() for r in caplog.records)


def test_an_option_error_does_not_print_a_sink_password() -> None:
    with pytest.raises(UsageError) as refused:
        WatchOptions(sinks=[f"https://operator:{PASSWORD}@127.0.0.1/hook", 5])
    assert PASSWORD not in str(refused.value) and "***@127.0.0.1" in str(refused.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("rtsp://admin:pw@cam:554/s1", "rtsp://***@cam:554/s1"),
    ("see 'https://u:p@h/x?token=t1&a=1#top' and mqtt://u@b/t", "see 'https://***@h/x?token=***&a=1#top' and mqtt://***@b/t"),
    ("http://u:pa/ss@host/x", "http://***@host/x"),  # a raw '/' in the password
    ("https://h/p?api_key=k&sig=s&page=2", "https://h/p?api_key=***&sig=***&page=2"),
    ("opc.tcp://plc:4840?decision=ns=2;s=Line1.Decision", "opc.tcp://plc:4840?decision=ns=2;s=Line1.Decision"),
    ("no URL at all: user:pw@host", "no URL at all: user:pw@host"),
])
def test_redact_urls(text: str, expected: str) -> None:
    assert redact_urls(text) == expected


def test_redact_values_replaces_the_longest_secret_first() -> None:
    assert redact_values("Bearer abc and abc", ["abc", "Bearer abc", None, ""]) == "*** and ***"
