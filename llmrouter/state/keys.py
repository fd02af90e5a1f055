"""Names in a shared store: :func:`key_id` (a digest for key names) and
:func:`parse_state_url` (a state URL -> the Redis URL and the namespace).

Both the package (:mod:`llmrouter.state`, which re-exports them) and the Redis stores
(:mod:`llmrouter.state.redis_state`) need these, so they live below both.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from llmrouter.errors import ConfigError

__all__ = ["key_id", "parse_state_url"]

_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def key_id(name: str) -> str:
    """A short stable digest of a backend display name or API key id, for Redis key names
    (so keys never carry a URL, a host name or a key id in clear)."""
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def parse_state_url(url: str) -> tuple[str, str]:
    """``redis://[:password@]host:port/db?namespace=NAME`` -> (the URL for redis-py, namespace).

    ``rediss://`` (TLS) and ``unix://`` are accepted as redis-py reads them. Other query
    parameters are passed to redis-py.

    Raises:
        ConfigError: not a Redis URL, or a namespace that is not 1-64 of ``[A-Za-z0-9_.-]``.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"LLMROUTER_STATE: expected memory:// or redis://host:6379/0, got a "
            f"{parts.scheme or 'scheme-less'} URL"
        )
    query = dict(parse_qsl(parts.query))
    namespace = query.pop("namespace", "default")
    if not _NAMESPACE.match(namespace):
        raise ConfigError(
            f"LLMROUTER_STATE: namespace {namespace!r}: expected 1-64 letters, digits, _ . -"
        )
    return urlunsplit(parts._replace(query=urlencode(query))), namespace
