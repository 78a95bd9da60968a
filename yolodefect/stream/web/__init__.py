"""The station's web server (``watch --serve``): the operator's page, the JSON API, ``/metrics`` and ``/healthz``.

:func:`create_app` builds the read-only Starlette app on a :class:`~yolodefect.stream.live.LiveView`;
:class:`WebServer` runs it on uvicorn in a thread of its own, with the bind and token rules.
"""

from yolodefect.stream.web.app import create_app
from yolodefect.stream.web.server import WebServer, check_bind, is_loopback

__all__ = ["WebServer", "check_bind", "create_app", "is_loopback"]
