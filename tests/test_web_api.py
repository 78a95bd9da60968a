"""The station's web API on a real uvicorn (127.0.0.1, port 0): exact values from a LiveView with two cameras,
a real EventStore with known events and evidence files, the live streams (SSE, MJPEG), /metrics and /healthz."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from yolodefect.stream.event_store import EventStore
from yolodefect.stream.events import Defect, Event, ModelIdentity, new_event, to_utc_iso
from yolodefect.stream.live import LiveView
from yolodefect.stream.stats import StatsBoard, WatchStats
from yolodefect.stream.web import WebServer

MODEL = ModelIdentity(name="best.pt", sha256="ab" * 32, precision="fp32")
DAY = "2024-05-01"


@dataclass
class Station:
    view: LiveView
    boards: dict[str, StatsBoard]
    events: dict[str, dict]  # name -> stored event
    evidence_dir: Path
    annotated: np.ndarray  # the evidence image of event "first"


def _event(decision: str, source: str, second: int, snapshot_paths: dict[str, str] | None = None) -> dict:
    event = new_event(decision=decision, source=source, frame_index=second, captured_at=f"{DAY}T12:00:0{second}.000Z",
                      latency_ms=12.5, image_size_wh=(64, 48), model=MODEL,
                      defects=[Defect("scratch", 0.9, (1.0, 2.0, 30.0, 40.0))] if decision == "reject" else [],
                      snapshot_paths=snapshot_paths, message="camera timeout" if decision == "error" else None)
    return replace(event, emitted_at=f"{DAY}T12:00:0{second}.000Z").to_dict()


def build_station(tmp_path: Path, *, stall_s: float = 60.0) -> Station:
    """Two cameras (a: 3 frames, 5 parts, 2 rejects; b: 1 frame, 1 error), four stored events, evidence on disk."""
    evidence_dir = tmp_path / "evidence"
    (evidence_dir / DAY).mkdir(parents=True)
    annotated = np.zeros((48, 64, 3), np.uint8)
    annotated[10:20, 10:40] = (0, 0, 255)
    outside = tmp_path / "elsewhere" / "secret.jpg"  # a real JPEG the server must still refuse
    outside.parent.mkdir()
    cv2.imwrite(str(outside), annotated)

    store = EventStore(tmp_path / "events.sqlite")
    view = LiveView(station="line-1", model=MODEL.to_dict(), thresholds={"scratch": 0.4}, evidence_dir=evidence_dir,
                    events=store, stall_s=stall_s)
    boards = {}
    for name, latencies, counts, classes in (
            ("a", (10.0, 20.0, 30.0), {"parts": 5, "rejects": 2, "passes": 3, "dropped_frames": 4, "events": 5},
             {"scratch"}),
            ("b", (40.0,), {"errors": 1, "events": 1}, set())):
        board = StatsBoard(WatchStats(source=f"{name}.avi", mode="track", model=MODEL.to_dict()))
        for latency in latencies:
            board.frame_done(latency)
        for key, value in counts.items():
            board.add(key, value)
        if classes:
            board.add_classes(classes)
            board.add_classes(classes)
        boards[name] = board
        view.add_camera(name, f"{name}.avi", board.snapshot)

    events = {}
    first = _event("reject", "a", 1)
    path = evidence_dir / DAY / f"{first['event_id']}_annotated.jpg"
    cv2.imwrite(str(path), annotated)
    first["snapshot_paths"] = {"annotated": str(path)}
    events["first"] = first
    events["pass"] = _event("pass", "b", 2)
    events["error"] = _event("error", "b", 3)
    events["outside"] = _event("reject", "a", 4, {"annotated": str(outside), "raw": str(outside)})
    for event in events.values():
        view.event_added(event)
    return Station(view, boards, events, evidence_dir, annotated)


@pytest.fixture
def station(tmp_path):
    station = build_station(tmp_path)
    yield station
    station.view.events.close()


@pytest.fixture
def server(station):
    web = WebServer(station.view, port=0)
    web.start()
    yield web
    web.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url.rstrip("/"), timeout=10.0) as client:
        yield client


def raw_request(port: int, request_line: str) -> tuple[int, bytes]:
    """(status, whole response) for a request line sent as is: no client library normalises its path."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"{request_line}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


# -- JSON API -------------------------------------------------------------------------------------

def test_status_gives_each_camera_and_the_totals(client, station):
    response = client.get("/api/status")
    assert response.status_code == 200
    status = response.json()
    assert status["station"]["name"] == "line-1"
    assert status["model"]["sha256"] == "ab" * 32 and status["model"]["thresholds"] == {"scratch": 0.4}
    a, b = status["cameras"]
    assert (a["name"], a["source"], a["frames"], a["parts"], a["rejects"], a["passes"], a["dropped_frames"]) == \
        ("a", "a.avi", 3, 5, 2, 3, 4)
    assert (a["latency_p50_ms"], a["latency_p95_ms"]) == (20.0, 29.0)
    assert a["rejects_by_class"] == {"scratch": 2}
    assert (b["name"], b["frames"], b["errors"], b["latency_p50_ms"]) == ("b", 1, 1, 40.0)
    totals = status["totals"]
    assert (totals["parts"], totals["rejects"], totals["passes"], totals["errors"], totals["frames"]) == (5, 2, 3, 1, 4)
    assert status["health"] == {"ok": True, "reason": None}
    assert "access-control-allow-origin" not in response.headers


def test_events_are_listed_newest_first_and_filtered(client, station):
    ids = {name: event["event_id"] for name, event in station.events.items()}

    def listed(**params):
        response = client.get("/api/events", params=params)
        assert response.status_code == 200, response.text
        return [event["event_id"] for event in response.json()]

    assert listed() == [ids["outside"], ids["error"], ids["pass"], ids["first"]]
    assert listed(decision="reject") == [ids["outside"], ids["first"]]
    assert listed(decision="pass") == [ids["pass"]]
    assert listed(since=f"{DAY}T12:00:02Z") == [ids["outside"], ids["error"]]  # strictly after
    assert listed(since=f"{DAY}T12:00:02Z", decision="error") == [ids["error"]]
    assert listed(limit=2) == [ids["outside"], ids["error"]]
    assert listed(limit=1000) == listed()


@pytest.mark.parametrize("params, says", [
    ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "many"}, "limit"),
    ({"decision": "maybe"}, "decision"), ({"since": "yesterday"}, "since"), ({"since": "2024-05-01T12:00:00"}, "zone"),
])
def test_bad_event_queries_get_400_saying_what_is_wrong(client, params, says):
    response = client.get("/api/events", params=params)
    assert response.status_code == 400
    assert says in response.text


def test_one_event_by_id(client, station):
    first = station.events["first"]
    response = client.get(f"/api/events/{first['event_id']}")
    assert response.status_code == 200
    assert response.json() == first
    assert client.get("/api/events/00000000-0000-4000-8000-000000000000").status_code == 404


def test_evidence_is_served_by_event_id_from_the_evidence_folder_only(client, station):
    first = station.events["first"]
    response = client.get(f"/api/evidence/{first['event_id']}/annotated.jpg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == Path(first["snapshot_paths"]["annotated"]).read_bytes()
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == station.annotated.shape
    # not recorded for this event, unknown kind, unknown id
    assert client.get(f"/api/evidence/{first['event_id']}/raw.jpg").status_code == 404
    assert client.get(f"/api/evidence/{first['event_id']}/annotated.png").status_code == 404
    assert client.get("/api/evidence/00000000-0000-4000-8000-000000000000/annotated.jpg").status_code == 404
    # the recorded path of this event lies outside the evidence folder (the file exists)
    outside = station.events["outside"]
    assert Path(outside["snapshot_paths"]["annotated"]).is_file()
    for kind in ("annotated", "raw"):
        assert client.get(f"/api/evidence/{outside['event_id']}/{kind}.jpg").status_code == 404


@pytest.mark.parametrize("target", [
    "/api/evidence/../../etc/passwd",
    "/api/evidence/%2e%2e/%2e%2e/etc/passwd",
    "/api/cameras/../../../etc/passwd",
    "/../etc/passwd",
])
def test_paths_with_dot_dot_get_404(server, target):
    status, body = raw_request(server.port, f"GET {target} HTTP/1.1")
    assert status == 404
    assert b"root:" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/api/status", "/api/events", "/", "/nowhere"])
def test_only_get_and_head_are_served(client, method, path):
    response = client.request(method, path, headers={"Origin": "http://evil.example"})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert "access-control-allow-origin" not in response.headers


def test_head_is_answered_and_no_cors_headers_are_ever_sent(client, station):
    for path in ("/", "/api/status", "/api/events", "/healthz", "/metrics", "/api/stream",
                 "/api/cameras/a/stream.mjpeg"):
        head = client.head(path, headers={"Origin": "http://evil.example"})
        assert head.status_code == 200, path
        assert head.content == b""
        assert not any(name.startswith("access-control-") for name in head.headers), path
    get = client.get("/api/status", headers={"Origin": "http://evil.example"})
    assert not any(name.startswith("access-control-") for name in get.headers)


# -- camera frames ----------------------------------------------------------------------------------

def _frame(value: int) -> np.ndarray:
    image = np.full((48, 64, 3), value, np.uint8)
    return image


def _decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


def test_latest_frame_of_a_camera(client, station):
    assert client.get("/api/cameras/a/frame.jpg").status_code == 503  # no frame yet
    assert "no frame yet" in client.get("/api/cameras/a/frame.jpg").text
    assert client.get("/api/cameras/nope/frame.jpg").status_code == 404
    assert client.get("/api/cameras/nope/stream.mjpeg").status_code == 404
    station.view.publish_frame("a", lambda: _frame(200))
    response = client.get("/api/cameras/a/frame.jpg")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    image = _decode(response.content)
    assert image.shape == (48, 64, 3) and abs(int(image.mean()) - 200) <= 2
    station.view.publish_frame("a", lambda: _frame(30))
    assert abs(int(_decode(client.get("/api/cameras/a/frame.jpg").content).mean()) - 30) <= 2
    assert client.get("/api/cameras/b/frame.jpg").status_code == 503


def _mjpeg_parts(response: httpx.Response, count: int, timeout_s: float) -> list[tuple[float, bytes]]:
    """(arrival time, JPEG) of the first ``count`` parts of a multipart stream."""
    boundary = response.headers["content-type"].split("boundary=")[1].encode()
    buffer, parts = b"", []
    deadline = time.monotonic() + timeout_s
    for chunk in response.iter_raw():
        buffer += chunk
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                break
            head = buffer[:head_end].decode()
            assert head.startswith(f"--{boundary.decode()}"), head
            length = next(int(line.split(":")[1]) for line in head.split("\r\n")
                          if line.lower().startswith("content-length"))
            end = head_end + 4 + length
            if len(buffer) < end + 2:
                break
            parts.append((time.monotonic(), buffer[head_end + 4:end]))
            buffer = buffer[end + 2:]
        if len(parts) >= count or time.monotonic() > deadline:
            break
    return parts


def test_mjpeg_stream_sends_new_frames_at_most_max_fps(station):
    stop = threading.Event()

    def camera():  # a fast camera: 100 frames a second
        value = 0
        while not stop.is_set():
            value = (value + 1) % 250  # 250 distinct frames: no repeat within the ~2 s the test reads
            station.view.publish_frame("a", lambda v=value: _frame(v))
            time.sleep(0.01)

    feeder = threading.Thread(target=camera, daemon=True)
    feeder.start()
    web = WebServer(station.view, port=0, max_mjpeg_fps=5.0)
    web.start()
    try:
        with httpx.stream("GET", f"{web.url}api/cameras/a/stream.mjpeg", timeout=10.0) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("multipart/x-mixed-replace; boundary=")
            parts = _mjpeg_parts(response, count=6, timeout_s=15.0)  # generous: a loaded CI machine
    finally:
        stop.set()
        web.stop()
        feeder.join()
    assert len(parts) == 6
    for _, jpeg in parts:
        assert _decode(jpeg).shape == (48, 64, 3)
    assert len({jpeg for _, jpeg in parts}) == 6  # each part a newer frame
    span = parts[-1][0] - parts[0][0]
    assert span >= 5 / 5.0 * 0.8  # 5 intervals at 5 fps: about 1 s, never 0.05 s at the camera's 100 fps


def test_stop_ends_live_streams_and_the_server_thread(station):
    station.view.publish_frame("a", lambda: _frame(100))
    web = WebServer(station.view, port=0)
    web.start()
    results = {}

    def watch(name, path):
        try:
            with httpx.stream("GET", web.url + path, timeout=10.0) as response:
                for _ in response.iter_raw():
                    results.setdefault(name, "streaming")
            results[name] = "ended"
        except httpx.HTTPError as exc:
            results[name] = f"ended: {type(exc).__name__}"

    clients = [threading.Thread(target=watch, args=(name, path), daemon=True)
               for name, path in (("mjpeg", "api/cameras/a/stream.mjpeg"), ("sse", "api/stream"))]
    for thread in clients:
        thread.start()
    assert _wait(lambda: len(results) == 2)
    started = time.monotonic()
    web.stop(timeout_s=5.0)
    assert time.monotonic() - started < 4.0
    assert not web._thread.is_alive()
    for thread in clients:
        thread.join(timeout=5.0)
        assert not thread.is_alive()
    assert all(result.startswith("ended") for result in results.values()), results
    with pytest.raises(httpx.ConnectError):
        httpx.get(web.url + "healthz", timeout=2.0)


@pytest.mark.parametrize("path, what, tick_s", [
    ("api/cameras/a/stream.mjpeg", "latest_jpeg", 0.1), ("api/stream", "status", 1.0)])
def test_a_client_that_leaves_stops_costing_the_server(station, server, monkeypatch, path, what, tick_s):
    """A closed MJPEG or SSE connection ends its stream on the server: no more frame or status reads for it."""
    station.view.publish_frame("a", lambda: _frame(100))
    calls = {what: 0}
    original = getattr(station.view, what)

    def counted(*args):
        calls[what] += 1
        return original(*args)

    monkeypatch.setattr(station.view, what, counted)
    with httpx.stream("GET", server.url + path, timeout=10.0) as response:
        chunks = response.iter_raw()  # kept: a dropped iterator closes the connection
        next(chunks)
        assert _wait(lambda: calls[what] >= 3)  # the stream goes on while its client is there
    time.sleep(tick_s + 0.2)  # the server notices within one frame interval or one status tick
    before = calls[what]
    time.sleep(tick_s + 0.2)
    assert calls[what] == before, f"{path} still running after its client left"


def _wait(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# -- server-sent events -----------------------------------------------------------------------------

def _sse_messages(response: httpx.Response):
    """(event name, parsed data) of each message of a text/event-stream."""
    kind, data = None, []
    for line in response.iter_lines():
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data.append(line.split(":", 1)[1].strip())
        elif line == "" and data:
            yield kind, json.loads("\n".join(data))
            kind, data = None, []


def _next(messages, seen: list, kind: str, until=lambda data: True, timeout_s: float = 5.0) -> dict:
    """The next message of ``kind`` whose data passes ``until``; every message read is appended to ``seen``."""
    deadline = time.monotonic() + timeout_s
    for got, data in messages:  # a status comes every second, so the deadline is checked at least that often
        seen.append((got, data))
        if got == kind and until(data):
            return data
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"no {kind} message within {timeout_s} s")


def test_stream_sends_status_then_each_new_event_once(server, station):
    seen: list[tuple[str, dict]] = []
    now = datetime.now(timezone.utc)
    a_event = new_event(decision="reject", source="a", frame_index=7, captured_at=now, latency_ms=3.0,
                        image_size_wh=(64, 48), model=MODEL, defects=[Defect("scratch", 0.8, (0, 0, 5, 5))]).to_dict()
    # camera b emitted its event half a second before a's but stored it after: it must still come
    b_event = replace(Event.from_dict(a_event), event_id=str(uuid.uuid4()), source="b",
                      emitted_at=to_utc_iso(now - timedelta(seconds=0.5))).to_dict()
    with httpx.stream("GET", f"{server.url}api/stream", timeout=10.0) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        messages = _sse_messages(response)
        status = _next(messages, seen, "status")
        assert status["totals"]["rejects"] == 2 and [c["name"] for c in status["cameras"]] == ["a", "b"]
        station.view.event_added(a_event)
        assert _next(messages, seen, "event") == a_event
        station.view.event_added(b_event)
        assert _next(messages, seen, "event") == b_event
        # one more change: the stream reads the store again, and must not repeat what it sent
        station.view.set_alarm("drift", "a", "drifted")
        _next(messages, seen, "status", until=lambda data: data["alarms"])
        _next(messages, seen, "status")
    events = [data["event_id"] for kind, data in seen if kind == "event"]
    # the four events stored before the client connected are old: only the new ones come, each once
    assert events == [a_event["event_id"], b_event["event_id"]]


def test_stream_sends_status_at_least_every_second_without_changes(server):
    times = []
    with httpx.stream("GET", f"{server.url}api/stream", timeout=10.0) as response:
        for kind, _ in _sse_messages(response):
            if kind == "status":
                times.append(time.monotonic())
            if len(times) == 3:
                break
    assert times[-1] - times[0] < 3.0


def test_stream_reports_an_alarm_at_once(server, station):
    with httpx.stream("GET", f"{server.url}api/stream", timeout=10.0) as response:
        raised_at = None
        for kind, data in _sse_messages(response):
            if kind != "status":
                continue
            if raised_at is None:
                raised_at = time.monotonic()
                station.view.set_alarm("drift", "a", "confidence drifted")
            elif data["alarms"]:
                assert data["alarms"][0]["message"] == "confidence drifted"
                break
    assert time.monotonic() - raised_at < 0.9  # on the change, not the next 1 s tick


# -- metrics and health -----------------------------------------------------------------------------

def test_metrics_are_prometheus_text_with_the_station_counters(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(response.text) for s in family.samples}
    assert samples[("yolodefect_rejects_total", (("camera", "a"),))] == 2
    assert samples[("yolodefect_errors_total", (("camera", "b"),))] == 1
    assert samples[("yolodefect_rejected_class_total", (("camera", "a"), ("class", "scratch")))] == 2


def test_healthz_is_ok_while_frames_flow_and_503_naming_a_stalled_camera(tmp_path):
    station = build_station(tmp_path, stall_s=0.3)
    web = WebServer(station.view, port=0)
    web.start()
    try:
        ok = httpx.get(web.url + "healthz", timeout=5.0)
        assert (ok.status_code, ok.text) == (200, "ok")
        time.sleep(0.4)
        station.boards["b"].frame_done(5.0)  # b goes on, a stalls
        stalled = httpx.get(web.url + "healthz", timeout=5.0)
        assert stalled.status_code == 503
        assert stalled.headers["content-type"].startswith("text/plain")
        assert "camera a: no frame for" in stalled.text and "source a.avi" in stalled.text
        assert "camera b" not in stalled.text
        assert httpx.get(web.url + "api/status", timeout=5.0).json()["health"]["ok"] is False
    finally:
        web.stop()
        station.view.events.close()


# -- the page -----------------------------------------------------------------------------------------

def test_page_and_its_files_are_served_by_the_app(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for marker in ('id="health"', 'id="total-rejects"', 'id="total-parts"', 'id="total-passes"', 'id="total-errors"',
                   'id="gallery"', 'id="viewer"', 'class="full"', 'class="event-json"', 'id="model"', 'id="alarms"'):
        assert marker in page.text, marker
    assert "http://" not in page.text and "https://" not in page.text  # nothing from another origin
    script = client.get("/page.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert 'new EventSource("/api/stream")' in script.text
    style = client.get("/page.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
