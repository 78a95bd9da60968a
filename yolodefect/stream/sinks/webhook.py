"""HTTP(S) webhook sink: POSTs each event as JSON; any 2xx is an ack.

Uses urllib from the standard library so the base install needs no HTTP client dependency.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from yolodefect import __version__
from yolodefect.stream.redact import redact_urls, redact_values
from yolodefect.stream.sinks.base import SinkConfigError, SinkError, event_json

logger = logging.getLogger(__name__)

DEFAULT_AUTH_ENV = "YOLODEFECT_WEBHOOK_AUTH"
# Header values that are never credentials; every other header we send may be one (X-Api-Key ...).
_PUBLIC_HEADERS = frozenset({"content-type", "user-agent"})
# A response is drained this far so the server sees a clean end of exchange.
_DRAIN_BYTES = 64 * 1024


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a GET without body; a 2xx from that GET is not an ack.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookSink:
    """POST ``application/json`` to ``url``.

    The ``Authorization`` header comes from the environment variable ``auth_env`` (default
    ``YOLODEFECT_WEBHOOK_AUTH``, e.g. ``"Bearer <token>"``) so secrets stay off command lines and
    config files. Each request carries ``Idempotency-Key: <event_id>`` for receivers that de-duplicate.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        *,
        auth_env: str | None = DEFAULT_AUTH_ENV,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SinkConfigError(f"webhook URL {redact_urls(url)!r} must look like http(s)://host[:port]/path")
        if parts.username or parts.password:
            raise SinkConfigError(
                f"webhook URL {redact_urls(url)!r} contains credentials; remove them and set "
                f"{auth_env or DEFAULT_AUTH_ENV} to the Authorization header value instead"
            )
        self.url = url
        self.timeout_s = timeout_s
        # The name keys this sink's queue in the outbox; the query string may carry a token, so leave it out.
        self.name = name or "webhook:" + urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        self._headers: dict[str, str] = {
            "Content-Type": "application/json",
            "User-Agent": f"yolodefect/{__version__}",
            **dict(headers or {}),
        }
        if auth_env:
            token = os.environ.get(auth_env)
            if token:
                self._headers["Authorization"] = token
        # What a server or urllib may echo back into an error message: every header value we send
        # that could be a credential, and the credential alone without its "Bearer " scheme.
        self._secrets = tuple(
            secret
            for key, value in self._headers.items()
            if key.lower() not in _PUBLIC_HEADERS
            for secret in (value, value.split(" ", 1)[-1])
        )
        self._opener = urllib.request.build_opener(_NoRedirect())

    def send(self, event: Mapping[str, Any]) -> None:
        body = event_json(event).encode("utf-8")
        request = urllib.request.Request(self.url, data=body, method="POST", headers=self._headers)
        request.add_header("Idempotency-Key", str(event.get("event_id", "")))
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read(_DRAIN_BYTES)
                status = response.status
        except urllib.error.HTTPError as exc:
            # Never the body itself: a server that echoes the request would put the Authorization
            # header into the log. Its size (and type) says enough to tell an error page from an echo.
            answer = exc.read(_DRAIN_BYTES) if exc.fp else b""
            size = f"{len(answer)}{'+' if len(answer) == _DRAIN_BYTES else ''} bytes"
            kind = self._scrub(exc.headers.get("Content-Type", "")) if exc.headers else ""
            raise SinkError(
                f"webhook {self.name} answered HTTP {exc.code} {self._scrub(str(exc.reason))} "
                f"(response body {size}{f', {kind}' if kind else ''}; not logged, it may echo the request headers)"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SinkError(f"webhook {self.name} unreachable: {self._scrub(str(reason))}") from exc
        if not 200 <= status < 300:
            raise SinkError(f"webhook {self.name} answered HTTP {status}; only 2xx counts as delivered")

    def _scrub(self, text: str) -> str:
        return redact_values(redact_urls(text), self._secrets)

    def close(self) -> None:
        pass
