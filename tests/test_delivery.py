"""Dispatcher: a down sink blocks nothing else, restarts drain leftovers, close() flushes."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from yolodefect.stream.delivery import Dispatcher, DispatcherError
from yolodefect.stream.outbox import Outbox
from yolodefect.stream.sinks import JsonlFileSink, StdoutSink, WebhookSink, sink_from_url
from tests.helpers import wait_until
from tests.builders import make_event


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["event_id"] for line in path.read_text().splitlines()]



@pytest.fixture
def http_receiver() -> Iterator[tuple[str, list[str]]]:
    received: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["event_id"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def test_down_sink_does_not_block_submit_or_file_sink(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    file_sink = JsonlFileSink(out)
    down = WebhookSink(f"http://127.0.0.1:{closed_port()}/hook", timeout_s=1)
    dispatcher = Dispatcher.open(tmp_path / "outbox.db", [file_sink, down], retry_initial_s=0.05, retry_max_s=0.2)
    try:
        start = time.monotonic()
        ids = [dispatcher.submit(make_event(i)) for i in range(30)]
        assert time.monotonic() - start < 15  # 30 fsynced puts; waiting on the 1 s timeout would take 30 s

        assert wait_until(lambda: read_ids(out) == ids, 10), "file sink was held up by the down webhook"
        # The line is written before the ack is counted: wait for the count too.
        assert wait_until(lambda: dispatcher.stats()[file_sink.name]["delivered"] == 30, 10)
        assert wait_until(lambda: dispatcher.stats()[down.name]["failed_attempts"] >= 2, 10)
        stats = dispatcher.stats()
        assert stats[file_sink.name] == {"delivered": 30, "failed_attempts": 0, "backlog": 0, "last_error": None,
                                         "down_since": None}
        assert stats[down.name]["backlog"] == 30
        assert stats[down.name]["down_since"] is not None  # the web page's "down since"
        assert stats[down.name]["delivered"] == 0
        assert "unreachable" in stats[down.name]["last_error"]
        assert not dispatcher.flush(0.2)
    finally:
        assert not dispatcher.close(0.5)  # the webhook's events stay in the outbox


def test_restart_drains_what_the_previous_run_left(tmp_path: Path, http_receiver: tuple[str, list[str]]) -> None:
    url, received = http_receiver
    outbox_path = tmp_path / "outbox.db"
    # Same sink name in both runs: the outbox keys each sink's queue by name.
    first = Dispatcher.open(
        outbox_path,
        [WebhookSink(f"http://127.0.0.1:{closed_port()}/hook", timeout_s=1, name="hook")],
        retry_initial_s=0.05,
        retry_max_s=0.2,
    )
    ids = [first.submit(make_event(i)) for i in range(10)]
    assert not first.close(0.3)
    assert received == []

    second = Dispatcher.open(outbox_path, [WebhookSink(url, timeout_s=2, name="hook")])
    assert second.flush(10), second.stats()
    assert second.close(5)
    assert received == ids  # in order, none lost
    with Outbox(outbox_path, ["hook"]) as box:
        assert box.backlog() == {"hook": 0}


def test_close_flushes_everything(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    sink = JsonlFileSink(out)
    dispatcher = Dispatcher.open(tmp_path / "outbox.db", [sink])
    ids = [dispatcher.submit(make_event(i)) for i in range(50)]
    assert dispatcher.close(10)
    assert read_ids(out) == ids
    with Outbox(tmp_path / "outbox.db", [sink.name]) as box:
        assert box.backlog() == {sink.name: 0}


def test_fans_out_to_every_sink(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    sinks = [sink_from_url(str(a)), sink_from_url(f"file://{b}"), sink_from_url("-")]
    assert isinstance(sinks[2], StdoutSink)
    with Dispatcher.open(tmp_path / "outbox.db", sinks) as dispatcher:
        ids = [dispatcher.submit(make_event(i)) for i in range(5)]
        assert dispatcher.flush(10)
    assert read_ids(a) == ids and read_ids(b) == ids
    printed = [json.loads(line)["event_id"] for line in capsys.readouterr().out.splitlines()]
    assert printed == ids


def test_misuse_raises(tmp_path: Path) -> None:
    sink = JsonlFileSink(tmp_path / "e.jsonl")
    with pytest.raises(DispatcherError, match="do not match"):
        Dispatcher(Outbox(tmp_path / "o.db", ["other"]), [sink])
    dispatcher = Dispatcher.open(tmp_path / "o2.db", [sink])
    dispatcher.close(1)
    with pytest.raises(DispatcherError, match="after close"):
        dispatcher.submit(make_event(0))
