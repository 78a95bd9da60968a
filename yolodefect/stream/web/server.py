"""``watch --serve``: the web app on uvicorn, in a daemon thread of its own, with the bind rule.

The caller's thread (the station) only binds the socket in :meth:`WebServer.start`, so a taken port or a
bad address is a :class:`~yolodefect.errors.UsageError` before the station starts; after that every request
is served on the server's own thread and its worker threads.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import threading
import time

import uvicorn

from yolodefect.errors import UsageError, YoloDefectError
from yolodefect.stream.live import LiveView
from yolodefect.stream.web.app import DEFAULT_MAX_MJPEG_FPS, MetricsLike, create_app

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
TOKEN_ENV_DEFAULT = "YOLODEFECT_SERVE_TOKEN"
STARTUP_TIMEOUT_S = 15.0


def is_loopback(host: str) -> bool:
    """True for "localhost", 127.x.x.x and ::1: addresses no other machine can reach."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def check_bind(host: str, port: int, token: str | None, insecure: bool) -> None:
    """UsageError unless the bind is loopback, has a token, or ``insecure`` was asked for explicitly."""
    if token is not None and not token:
        raise UsageError(f"the token for --serve {host}:{port} is empty; put a non-empty secret in the "
                         f"environment variable (default {TOKEN_ENV_DEFAULT})")
    if is_loopback(host) or token or insecure:
        return
    raise UsageError(
        f"--serve {host}:{port} listens beyond this machine, so anyone on the network could watch the station: "
        f"set a token in the environment variable {TOKEN_ENV_DEFAULT} (or the one --serve-token-env names), "
        f"or pass --serve-insecure to serve without one")


class WebServer:
    """The station's web server (read-only). ``start()`` returns once it listens; ``stop()`` ends it."""

    def __init__(self, view: LiveView, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
                 insecure: bool = False, metrics: MetricsLike | None = None,
                 max_mjpeg_fps: float = DEFAULT_MAX_MJPEG_FPS):
        self.host = host.strip().strip("[]")
        check_bind(self.host, port, token, insecure)
        self.requires_token = token is not None
        self.app = create_app(view, metrics=metrics, token=token, max_mjpeg_fps=max_mjpeg_fps)
        self._asked_port = int(port)
        self._socket: socket.socket | None = None
        self._bound_port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one the system chose when 0 was asked)."""
        return self._bound_port if self._bound_port is not None else self._asked_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("this WebServer was started already")
        self._socket = _bind(self.host, self._asked_port)
        self._bound_port = int(self._socket.getsockname()[1])
        # log_config=None: uvicorn's warnings go through the station's own logging (human or --log-format json)
        # instead of a configuration of uvicorn's replacing it.
        config = uvicorn.Config(self.app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                                ws="none", server_header=False, timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="watch-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop(timeout_s=1.0)
                reason = f": {self._failure}" if self._failure else ""
                raise YoloDefectError(f"the web server on {self.host}:{self.port} did not start{reason}")
            time.sleep(0.01)

    def _run(self) -> None:
        assert self._server is not None and self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # noqa: BLE001 - uvicorn exits with SystemExit on startup failures
            self._failure = exc
            logger.error("the web server stopped: %s", exc)

    def stop(self, timeout_s: float = 5.0) -> None:
        """End live streams, close connections and wait up to ``timeout_s`` for the server thread."""
        self.app.state.stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=max(0.0, timeout_s - 0.5))
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout=0.5)
        if self._socket is not None:
            self._socket.close()


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or UsageError saying why not (port taken, address not on this machine)."""
    try:
        candidates = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--serve {host}:{port}: cannot resolve {host!r} ({exc.strerror}); "
                         "give an address of this machine, e.g. 127.0.0.1 or 0.0.0.0") from None
    # IPv4 first: "localhost" must answer on 127.0.0.1, which is what browsers and curl try first.
    candidates.sort(key=lambda c: c[0] != socket.AF_INET)
    family, kind, proto, _, address = candidates[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a restarted station may bind again while old connections sit in TIME_WAIT
        # (on Linux this never lets two servers share a listening port).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            why = "the port is taken by another program (another station?); choose another port"
        elif exc.errno == errno.EADDRNOTAVAIL:
            why = "this machine has no such address; give one of its addresses, or 0.0.0.0 for all"
        elif exc.errno == errno.EACCES:
            why = "permission denied (ports below 1024 need privileges); choose a port from 1024 up"
        else:
            why = exc.strerror or str(exc)
        raise UsageError(f"--serve {host}:{port}: cannot listen there: {why}") from None
    sock.setblocking(False)
    return sock
