"""``watch --serve``: the pieces a station starts for the web page, the JSON API, /metrics and /healthz.

The event store (recent events, kept across restarts), the :class:`~yolodefect.stream.live.LiveView`
the station publishes into, Prometheus metrics over it, and the web server on its own thread. The
web packages are imported only here, when a station serves.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from yolodefect.errors import UsageError
from yolodefect.inference.rules import RejectRules
from yolodefect.stream.events import ModelIdentity
from yolodefect.stream.live import LiveView
from yolodefect.stream.options import DEFAULT_TOKEN_ENV, WatchOptions, event_store_path, parse_serve_address

logger = logging.getLogger(__name__)


def serve_token(options: WatchOptions) -> str | None:
    """The bearer token from the environment variable ``serve_token_env`` (default YOLODEFECT_SERVE_TOKEN)."""
    variable = options.serve_token_env or DEFAULT_TOKEN_ENV
    token = os.environ.get(variable)
    if options.serve_token_env is not None and not token:
        raise UsageError(f"serve_token_env names the environment variable {variable}, which is not set or empty: "
                         f"export {variable}=<a long random token> before starting the station")
    return token or None


def check_serving(options: WatchOptions) -> None:
    """Refuse a bind the security rule forbids (before the station opens anything)."""
    from yolodefect.stream.web.server import check_bind

    host, port = parse_serve_address(options.serve)
    check_bind(host, port, serve_token(options), options.serve_insecure)


def start_serving(options: WatchOptions, rules: Sequence[RejectRules], cameras: Sequence[str], model: ModelIdentity,
                  card: Mapping[str, Any] | None, names: Mapping[int, str]) -> tuple[LiveView, Any, Any]:
    """(live view, started web server, event store) for a station about to run its first frame."""
    from yolodefect.stream.event_store import EventStore
    from yolodefect.stream.metrics import StationMetrics
    from yolodefect.stream.web.server import WebServer

    host, port = parse_serve_address(options.serve)
    event_store = EventStore(event_store_path(options))
    try:
        thresholds = {name: rules[0].threshold(name) for name in names.values()}
        live = LiveView(station=", ".join(cameras), model=model.to_dict(), thresholds=thresholds, model_card=card,
                        evidence_dir=options.evidence_dir, events=event_store,
                        # A live source is reopened after stall_timeout_s: unhealthy once a reopen did not help.
                        stall_s=2 * options.stall_timeout_s + 1.0)
        server = WebServer(live, host=host, port=port, token=serve_token(options), insecure=options.serve_insecure,
                           metrics=StationMetrics(live))
        server.start()
    except BaseException:
        event_store.close()
        raise
    return live, server, event_store
