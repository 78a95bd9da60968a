"""The station's read-only web app: the operator's page, the JSON API, live streams, ``/metrics`` and ``/healthz``.

Everything that may block (drawing and encoding a frame, reading the event store, waiting for a change,
reading an evidence file) runs on worker threads; the event loop only moves bytes. Nothing from a request
becomes a filesystem path: evidence is found by event id through :meth:`LiveView.evidence_file`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any, Protocol

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders, QueryParams
from starlette.middleware import Middleware
from starlette.requests import Request, cookie_parser
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from yolodefect.errors import UsageError, YoloDefectError
from yolodefect.stream.events import DECISIONS, to_utc_iso
from yolodefect.stream.live import LiveView
from yolodefect.stream.metrics import StationMetrics

TOKEN_COOKIE = "yolodefect_token"
DEFAULT_MAX_MJPEG_FPS = 10.0
DEFAULT_EVENTS_LIMIT = 50
MAX_EVENTS_LIMIT = 1000
STATUS_EVERY_S = 1.0  # a live page gets the status at least this often (fps and latency move without events)
MIN_STATUS_INTERVAL_S = 0.2  # and at most 5 times a second, however busy the line
# Live clients re-read events this far back from the newest they saw: two cameras may store events slightly
# out of emitted_at order, and an event must reach the page even then (ids already sent are skipped).
EVENT_WINDOW_S = 2.0
MJPEG_RESEND_S = 2.0  # an unchanged frame is sent again this often, so a gone client is noticed
MAX_LIVE_WAITERS = 32  # threads that live pages may hold waiting for a change; more pages take turns
EVIDENCE_FILES = {"raw.jpg": "raw", "annotated.jpg": "annotated", "cam.jpg": "cam"}
_MJPEG_BOUNDARY = "yolodefectframe"
_PAGE_FILES = {"/": ("page.html", "text/html; charset=utf-8"),
               "/page.js": ("page.js", "text/javascript; charset=utf-8"),
               "/page.css": ("page.css", "text/css; charset=utf-8")}
_SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    # The page is our own files only: no inline script, nothing from another origin. 'unsafe-eval' lets browser
    # automation (Playwright's wait_for_function, the page tests) evaluate expressions; the page itself never evals.
    "content-security-policy": ("default-src 'self'; script-src 'self' 'unsafe-eval'; img-src 'self' data:; "
                                "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
}


class MetricsLike(Protocol):
    content_type: str

    def render(self) -> bytes: ...


def create_app(view: LiveView, metrics: MetricsLike | None = None, token: str | None = None,
               max_mjpeg_fps: float = DEFAULT_MAX_MJPEG_FPS) -> Starlette:
    """The read-only app of one station. With ``token`` every request needs it (bearer header or the cookie
    that ``/?token=TOKEN`` sets). ``app.state.stopping`` (a ``threading.Event``) ends live streams when set."""
    if max_mjpeg_fps <= 0:
        raise UsageError(f"max_mjpeg_fps must be > 0, got {max_mjpeg_fps}")
    if token is not None and not token:
        raise UsageError("the serve token is empty; set a non-empty token or serve without one on 127.0.0.1")
    if metrics is None:
        metrics = StationMetrics(view)
    stopping = threading.Event()
    pages = {path: (resources.files(__package__).joinpath(name).read_bytes(), media)
             for path, (name, media) in _PAGE_FILES.items()}
    waiters: list[anyio.CapacityLimiter] = []  # made on the event loop at the first live client

    def waiter_limiter() -> anyio.CapacityLimiter:
        if not waiters:
            waiters.append(anyio.CapacityLimiter(MAX_LIVE_WAITERS))
        return waiters[0]

    async def page(request: Request) -> Response:
        body, media = pages[request.url.path]
        return Response(body, media_type=media)

    async def status(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(view.status))

    async def events(request: Request) -> Response:
        try:
            since, limit, decision = _events_query(request.query_params)
        except UsageError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        store = view.events
        if store is None:
            return JSONResponse([])
        try:
            found = await run_in_threadpool(store.list,  # type: ignore[attr-defined]
                                            since=since, limit=limit, decision=decision)
        except UsageError as exc:  # since is not an ISO time
            return PlainTextResponse(str(exc), status_code=400)
        except YoloDefectError as exc:
            return PlainTextResponse(str(exc), status_code=503)
        return JSONResponse(found)

    async def event(request: Request) -> Response:
        store = view.events
        found = None
        if store is not None:
            try:
                found = await run_in_threadpool(store.get, request.path_params["event_id"])
            except YoloDefectError as exc:
                return PlainTextResponse(str(exc), status_code=503)
        if found is None:
            return PlainTextResponse("no such event (the station keeps its recent events only)", status_code=404)
        return JSONResponse(found)

    async def evidence(request: Request) -> Response:
        kind = EVIDENCE_FILES.get(request.path_params["name"])
        if kind is None:
            return PlainTextResponse("Not Found", status_code=404)
        event_id = request.path_params["event_id"]

        def read() -> bytes | None:
            path = view.evidence_file(event_id, kind)
            if path is None:
                return None
            try:
                return path.read_bytes()
            except OSError:  # deleted or unreadable since it was checked
                return None

        try:
            body = await run_in_threadpool(read)
        except YoloDefectError as exc:
            return PlainTextResponse(str(exc), status_code=503)
        if body is None:
            return PlainTextResponse("no such evidence image", status_code=404)
        # An event's evidence never changes once written.
        return Response(body, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    async def frame(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in await run_in_threadpool(view.cameras):
            return PlainTextResponse(f"no camera named {name!r}", status_code=404)
        latest = await run_in_threadpool(view.latest_jpeg, name)
        if latest is None:
            return PlainTextResponse(f"camera {name} has no frame yet", status_code=503)
        return Response(latest[1], media_type="image/jpeg", headers={"X-Frame-Sequence": str(latest[0])})

    async def mjpeg(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in await run_in_threadpool(view.cameras):
            return PlainTextResponse(f"no camera named {name!r}", status_code=404)
        media = f"multipart/x-mixed-replace; boundary={_MJPEG_BOUNDARY}"
        if request.method == "HEAD":
            return Response(media_type=media)
        return StreamingResponse(_mjpeg_parts(view, name, 1.0 / max_mjpeg_fps, stopping), media_type=media)

    async def live(request: Request) -> Response:
        headers = {"X-Accel-Buffering": "no"}
        if request.method == "HEAD":
            return Response(media_type="text/event-stream", headers=headers)
        return StreamingResponse(_live_messages(view, stopping, waiter_limiter()), media_type="text/event-stream",
                                 headers=headers)

    async def prometheus(request: Request) -> Response:
        body = await run_in_threadpool(metrics.render)
        return Response(body, headers={"Content-Type": metrics.content_type})

    async def healthz(request: Request) -> Response:
        ok, reason = await run_in_threadpool(view.health)
        return PlainTextResponse("ok" if ok else str(reason), status_code=200 if ok else 503)

    routes = [
        *(Route(path, page, methods=["GET"]) for path in _PAGE_FILES),
        Route("/api/status", status, methods=["GET"]),
        Route("/api/events", events, methods=["GET"]),
        Route("/api/events/{event_id}", event, methods=["GET"]),
        Route("/api/evidence/{event_id}/{name}", evidence, methods=["GET"]),
        Route("/api/cameras/{name}/frame.jpg", frame, methods=["GET"]),
        Route("/api/cameras/{name}/stream.mjpeg", mjpeg, methods=["GET"]),
        Route("/api/stream", live, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_Guard, token=token)])
    app.state.stopping = stopping
    return app


def _events_query(params: QueryParams) -> tuple[str | None, int, str | None]:
    """(since, limit, decision) of ``GET /api/events``; UsageError says what is wrong."""
    raw_limit = params.get("limit")
    try:
        limit = DEFAULT_EVENTS_LIMIT if raw_limit is None else int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_EVENTS_LIMIT:
        raise UsageError(f"limit={raw_limit!r} must be an integer from 1 to {MAX_EVENTS_LIMIT}")
    decision = params.get("decision") or None
    if decision is not None and decision not in DECISIONS:
        raise UsageError(f"decision={decision!r} must be one of {', '.join(DECISIONS)}")
    return params.get("since") or None, limit, decision


async def _mjpeg_parts(view: LiveView, camera: str, interval_s: float,
                       stopping: threading.Event) -> AsyncIterator[bytes]:
    """The camera's latest frames as multipart parts, each new frame once, at most one per ``interval_s``."""
    sent_sequence, sent_at = None, 0.0
    while not stopping.is_set():
        started = time.monotonic()
        latest = await run_in_threadpool(view.latest_jpeg, camera)
        if latest is not None and (latest[0] != sent_sequence or started - sent_at >= MJPEG_RESEND_S):
            sequence, jpeg = latest
            yield (f"--{_MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                   .encode() + jpeg + b"\r\n")
            sent_sequence, sent_at = sequence, started
        await anyio.sleep(max(0.0, interval_s - (time.monotonic() - started)))


async def _live_messages(view: LiveView, stopping: threading.Event,
                         limiter: anyio.CapacityLimiter) -> AsyncIterator[bytes]:
    """Server-sent events: ``status`` on each change of the view (at most 5 a second) and at least every second,
    and ``event`` once per event stored since shortly before the client connected (oldest first)."""
    yield b"retry: 2000\n\n"
    feed = _EventFeed(view.events, datetime.now(timezone.utc))
    version = await run_in_threadpool(lambda: view.version)
    changed = True
    while not stopping.is_set():
        sent_at = time.monotonic()
        yield _sse("status", await run_in_threadpool(view.status))
        if changed:
            try:
                fresh = await run_in_threadpool(feed.new_events)
            except YoloDefectError:  # the store failed: the feed did not move, so the next change tries again
                fresh = []
            for event in fresh:
                yield _sse("event", event)
        rest = MIN_STATUS_INTERVAL_S - (time.monotonic() - sent_at)
        if rest > 0:
            await anyio.sleep(rest)
        now = await anyio.to_thread.run_sync(view.wait_change, version, STATUS_EVERY_S, limiter=limiter)
        changed, version = now != version, now


def _sse(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()


class _EventFeed:
    """The events one live client has not been sent yet, oldest first, each once."""

    def __init__(self, store: Any, start: datetime):
        self._store = store
        self._newest = start  # the newest emitted_at seen (or when the client connected)
        self._sent: dict[str, datetime] = {}  # ids sent that the next query may return again

    def new_events(self) -> list[dict[str, Any]]:
        if self._store is None or not hasattr(self._store, "list"):
            return []
        since = self._newest - timedelta(seconds=EVENT_WINDOW_S)
        fresh = []
        for event in reversed(self._store.list(since=to_utc_iso(since), limit=MAX_EVENTS_LIMIT)):
            event_id = str(event.get("event_id"))
            if event_id in self._sent:
                continue
            emitted = _parse_utc(event.get("emitted_at"), default=self._newest)
            self._sent[event_id] = emitted
            self._newest = max(self._newest, emitted)
            fresh.append(event)
        horizon = self._newest - timedelta(seconds=EVENT_WINDOW_S)
        self._sent = {event_id: emitted for event_id, emitted in self._sent.items() if emitted > horizon}
        return fresh


def _parse_utc(text: Any, *, default: datetime) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return default
    return parsed.astimezone(timezone.utc) if parsed.tzinfo is not None else default


def token_cookie_value(token: str) -> str:
    """What the browser keeps after ``/?token=``: derived from the token, so the cookie jar never holds it."""
    return hmac.new(token.encode(), b"yolodefect-serve-cookie", hashlib.sha256).hexdigest()


class _Guard:
    """Read-only, token and path rules for every request, before any route runs; adds the security headers."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.token = token.encode() if token else None
        self.cookie = token_cookie_value(token).encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("cache-control", "no-store")
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send_secured)
            return
        await self.app(scope, receive, send_secured)

    def _refusal(self, scope: Scope) -> Response | None:
        if scope["method"] not in ("GET", "HEAD"):
            return PlainTextResponse("this server is read-only: only GET and HEAD", status_code=405,
                                     headers={"Allow": "GET, HEAD"})
        if ".." in scope["path"] or b".." in scope.get("raw_path", b""):
            return PlainTextResponse("Not Found", status_code=404)
        if self.token is None:
            return None
        query = QueryParams(scope.get("query_string", b""))
        if scope["path"] == "/" and "token" in query:
            if not hmac.compare_digest(query["token"].encode(), self.token):
                return _unauthorized()
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.cookie.decode(), httponly=True, samesite="strict", path="/")
            return response
        if self._authorized(Headers(scope=scope)):
            return None
        return _unauthorized()

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        assert self.token is not None and self.cookie is not None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token):
            return True
        cookie = cookie_parser(headers.get("cookie", "")).get(TOKEN_COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self.cookie)


def _unauthorized() -> Response:
    return PlainTextResponse(
        "this station needs its token: send 'Authorization: Bearer TOKEN', or open /?token=TOKEN once in the browser",
        status_code=401, headers={"WWW-Authenticate": "Bearer"})
