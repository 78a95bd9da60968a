"""The web server's security rules on a real uvicorn: the bind rule, the token (bearer header and cookie),
and start() failing with a clear UsageError when it cannot listen."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.test_web_api import build_station
from yolodefect.errors import UsageError
from yolodefect.stream.web import WebServer, is_loopback
from yolodefect.stream.web.app import TOKEN_COOKIE

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def station(tmp_path):
    station = build_station(tmp_path)
    yield station
    station.view.events.close()


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True), ("LOCALHOST", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.20", False),
    ("station.local", False), ("10.0.0.1", False),
])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "station.local", "::"])
def test_a_non_loopback_bind_without_token_is_refused_naming_both_remedies(station, host):
    with pytest.raises(UsageError) as caught:
        WebServer(station.view, host=host, port=0)
    message = str(caught.value)
    assert host in message
    assert "YOLODEFECT_SERVE_TOKEN" in message and "--serve-insecure" in message


def test_a_non_loopback_bind_is_allowed_with_a_token_or_insecure_explicitly(station):
    WebServer(station.view, host="0.0.0.0", port=0, token=TOKEN)  # constructing checks the rule; nothing listens
    WebServer(station.view, host="0.0.0.0", port=0, insecure=True)
    for host in ("127.0.0.1", "localhost", "::1"):
        WebServer(station.view, host=host, port=0)


def test_an_empty_token_is_refused(station):
    with pytest.raises(UsageError, match="empty"):
        WebServer(station.view, host="0.0.0.0", port=0, token="")


@pytest.fixture
def guarded(station):
    """A token-protected server bound to every interface; the test talks to it through 127.0.0.1 only."""
    web = WebServer(station.view, host="0.0.0.0", port=0, token=TOKEN)
    web.start()
    yield f"http://127.0.0.1:{web.port}"
    web.stop()


def _paths(station) -> list[str]:
    first = station.events["first"]["event_id"]
    return ["/", "/page.js", "/api/status", "/api/events", f"/api/events/{first}",
            f"/api/evidence/{first}/annotated.jpg",
            "/api/cameras/a/frame.jpg", "/api/stream", "/metrics", "/healthz", "/nowhere"]


def test_without_the_token_every_request_gets_401(guarded, station):
    for path in _paths(station):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Cookie": f"{TOKEN_COOKIE}=wrong"}, {"Cookie": f"{TOKEN_COOKIE}={TOKEN}"}):
            response = httpx.get(guarded + path, headers=headers, timeout=5.0)
            assert response.status_code == 401, (path, headers)
            assert "/?token=" in response.text and "Bearer" in response.text
            assert response.headers["www-authenticate"] == "Bearer"
            assert "access-control-allow-origin" not in response.headers


def test_with_the_bearer_token_requests_are_served(guarded, station):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=guarded, headers=headers, timeout=5.0) as client:
        assert client.get("/api/status").json()["station"]["name"] == "line-1"
        first = station.events["first"]
        assert client.get(f"/api/events/{first['event_id']}").json() == first
        assert client.get(f"/api/evidence/{first['event_id']}/annotated.jpg").status_code == 200
        assert client.get("/healthz").text == "ok"
        assert client.get("/metrics").status_code == 200
        assert client.get("/").status_code == 200
        assert client.post("/api/status").status_code == 405  # read-only with the token too


def test_visiting_the_page_with_the_token_once_sets_a_cookie_that_opens_everything(guarded, station):
    with httpx.Client(base_url=guarded, timeout=5.0) as browser:
        assert browser.get("/?token=wrong").status_code == 401
        assert TOKEN_COOKIE not in browser.cookies
        visit = browser.get(f"/?token={TOKEN}")
        assert visit.status_code == 303 and visit.headers["location"] == "/"
        set_cookie = visit.headers["set-cookie"]
        assert set_cookie.startswith(f"{TOKEN_COOKIE}=")
        assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie.replace("Strict", "strict")
        assert "Path=/" in set_cookie
        assert TOKEN not in set_cookie  # the cookie jar never holds the token itself
        # the browser follows the redirect with its new cookie, and every endpoint opens
        assert browser.get("/").status_code == 200
        assert browser.get("/api/status").json()["totals"]["rejects"] == 2
        first = station.events["first"]["event_id"]
        assert browser.get(f"/api/evidence/{first}/annotated.jpg").status_code == 200
    # the same cookie from another client works; a forged one does not
    cookie = set_cookie.split(";")[0]
    assert httpx.get(guarded + "/healthz", headers={"Cookie": cookie}, timeout=5.0).status_code == 200
    assert httpx.get(guarded + "/healthz", headers={"Cookie": cookie[:-1] + "0"}, timeout=5.0).status_code == 401


def test_start_says_when_the_port_is_taken(station):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        web = WebServer(station.view, port=port)
        with pytest.raises(UsageError, match=f"127.0.0.1:{port}.*port is taken"):
            web.start()


def test_start_says_when_the_address_is_not_on_this_machine(station):
    web = WebServer(station.view, host="192.0.2.1", port=0, insecure=True)  # TEST-NET-1: never a local address
    with pytest.raises(UsageError, match="192.0.2.1.*no such address"):
        web.start()


def test_start_returns_listening_and_reports_the_port_it_got(station):
    web = WebServer(station.view, port=0)
    web.start()
    try:
        assert web.port > 0 and web.url == f"http://127.0.0.1:{web.port}/"
        assert httpx.get(web.url + "healthz", timeout=5.0).status_code == 200  # no retry: it listens already
    finally:
        web.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(web.url + "healthz", timeout=2.0)
