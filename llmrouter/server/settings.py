"""The gateway's settings: one value that every server module reads and none of them owns.

``app`` builds the application from it, ``routes`` and ``intake`` read its request limits,
``connections`` its timeouts and connection cap. Keeping it here, below all of them, is what
keeps the server's imports a tree (``app`` imports ``routes``; nothing imports ``app``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from llmrouter.errors import ConfigError
from llmrouter.server.auth import KeyStore

__all__ = ["SETTINGS", "GatewaySettings", "check_settings"]


@dataclass
class GatewaySettings:
    """How the gateway runs.

    Attributes:
        url: the backend chain (default: ``LLMROUTER_URL``, as for :class:`AsyncClient`).
        keys: the accepted API keys; none means no authentication (loopback only).
        requests_per_minute: per-key request limit (``None``: unlimited).
        tokens_per_minute: per-key token limit, prompt plus completion (``None``: unlimited).
        max_body_bytes: the largest request body accepted (413 above it).
        max_json_depth: how deeply arrays and objects may nest in a body (400 deeper).
        max_messages: the most messages one request may carry (400 above it).
        max_prompt_tokens: the largest estimated prompt (characters / 4 of the messages' text
            and the tool definitions; 400 above it). ``None``: no limit.
        max_in_flight_per_key: requests (streams included) one key may have running at once
            (429 with ``Retry-After`` above it). ``None``: no limit.
        max_connections: open client connections served at once; past it new connections get
            503 and are closed, past twice it they are closed at once.
        header_timeout_s: seconds a client has to send a request's line and headers, counted
            from its first byte (from the connection's opening for its first request).
        body_timeout_s: seconds a client has to send a request's body once its headers are in.
        keepalive_timeout_s: seconds an idle keep-alive connection stays open.
        grace_s: on shutdown, how long in-flight requests may take to finish.
        log_content: put messages and answers in the access log (off by default).
        debug: error answers also carry the backend's own error text (secrets scrubbed) in
            ``error.upstream_message``; for development, never for untrusted clients.
        client_options: more keyword arguments for the :class:`AsyncClient`
            (``timeout``, ``retry_policy``, ``circuit_breaker``, ``hedge``, ...).
        passthrough: relay an OpenAI SSE backend's stream as its own bytes after the first
            content (``passthrough``), instead of parsing and re-encoding each chunk. Off
            with ``log_content`` (the access log then needs the text).
        state: shared state for breakers, health, the retry budget and the per-key limits
            across gateway replicas (``redis://host:6379/0``; default ``LLMROUTER_STATE``,
            else in-process). See ``docs/scale-out.md``.
        otel: OpenTelemetry traces and metrics (``llmrouter[otel]``): a server span per
            request, the caller's ``traceparent`` its parent, the client's request and attempt
            spans under it, ``traceparent`` passed on to the backends. See
            ``docs/telemetry.md``.
        otel_content: with ``otel``, record messages and answers on the spans (off by default;
            also ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``).
    """

    url: str | None = None
    keys: KeyStore = field(default_factory=KeyStore)
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_json_depth: int = 64
    max_messages: int = 2048
    max_prompt_tokens: int | None = 131072
    max_in_flight_per_key: int | None = 64
    max_connections: int = 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 15.0
    grace_s: float = 10.0
    log_content: bool = False
    debug: bool = False
    client_options: dict[str, Any] = field(default_factory=dict)
    state: str | None = None
    passthrough: bool = True
    otel: bool = False
    otel_content: bool = False


SETTINGS = web.AppKey("settings", GatewaySettings)


def _positive(name: str, value: float | None, unit: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{name}: expected a positive number of {unit}, got {value!r}")


def check_settings(settings: GatewaySettings) -> None:
    """Refuse settings no gateway could run with.

    Raises:
        ConfigError: a limit or timeout is not a positive number (the message names it).
    """
    _positive("max body size", settings.max_body_bytes, "bytes")
    _positive("max JSON depth", settings.max_json_depth, "levels")
    _positive("max messages", settings.max_messages, "messages")
    _positive("max prompt tokens", settings.max_prompt_tokens, "tokens", optional=True)
    _positive("max in-flight per key", settings.max_in_flight_per_key, "requests", optional=True)
    _positive("max connections", settings.max_connections, "connections")
    _positive("header timeout", settings.header_timeout_s, "seconds")
    _positive("body timeout", settings.body_timeout_s, "seconds")
    _positive("keep-alive timeout", settings.keepalive_timeout_s, "seconds")
    if settings.grace_s < 0:
        raise ConfigError(f"grace: expected seconds >= 0, got {settings.grace_s}")
