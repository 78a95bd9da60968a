"""Secrets out of log lines and error messages: the one place that decides what a URL may show.

Every sink and every message that shows a sink or source URL passes it through :func:`redact_urls`,
so ``https://user:pw@host`` or ``rtsp://admin:pw@camera`` never reaches a log, a stats panel or an
event. :func:`redact_values` removes known secret values (an Authorization header, a password from
the environment) from text a library or a server produced, which we do not control.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "***"

# A URL inside free text: scheme:// up to whitespace or a quote (repr() and messages quote URLs).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
# Query parameters whose value is a credential by its name (?token=, ?api_key=, ?sig=, ?password=).
_SECRET_PARAM = re.compile(r"(?i)token|key|secret|pass|pwd|auth|sig|credential")


def redact_urls(text: str) -> str:
    """``text`` with the user info (``user:password@``) and secret-named query values of every URL in it as ``***``."""
    return _URL.sub(lambda match: _redact_url(match.group(0)), text)


def _redact_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    # Up to the last '@' anywhere: a password with a raw '/', '?' or '#' in it splits the URL where a
    # parser does not expect, and must not leak either. An '@' in a path costs only some readability.
    at = rest.rfind("@")
    if at >= 0:
        rest = REDACTED + rest[at:]
    query = rest.find("?")
    if query >= 0:
        fragment = rest.find("#", query)
        fragment = len(rest) if fragment < 0 else fragment
        params = [_redact_param(param) for param in rest[query + 1:fragment].split("&")]
        rest = rest[:query + 1] + "&".join(params) + rest[fragment:]
    return f"{scheme}://{rest}"


def _redact_param(param: str) -> str:
    key, sep, value = param.partition("=")
    return f"{key}={REDACTED}" if sep and value and _SECRET_PARAM.search(key) else param


def redact_values(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``***`` (longest first)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
