"""HTTP status + body -> the typed error tree (pure). Shared by every HTTP codec.

Bodies seen in the wild (``shared/protocols/openai-chat.md`` section 4 and 6):
OpenAI's ``{"error": {"message", "type", "param", "code"}}``, vLLM's ``{"error": "Unauthorized"}``,
TGI's ``{"error": str, "error_type": str}``, FastAPI's ``{"detail": ...}``, plain text, and HTML
502 pages from proxies. Retry hints: ``retry-after-ms``, ``Retry-After`` (seconds or an HTTP
date) and ``x-should-retry``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from llmrouter.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    NotFoundError,
    RateLimitError,
    ServerError,
    StatusError,
)

__all__ = ["error_from_status", "parse_retry_after"]

_CONTEXT_MARKERS = (
    "context length",
    "context_length",
    "maximum context",
    "context window",
    "exceed_context_size",
    "exceeds the available context",
    "too many tokens",
    "prompt is too long",
    "cannot be greater than max_model_len",  # vLLM: max_tokens over the model's length
    "input validation error: `inputs` tokens + `max_new_tokens`",
)

# OpenAI's error code and llama.cpp's error type for an over-long prompt.
_CONTEXT_CODES = ("context_length_exceeded", "exceed_context_size_error")

_MAX_BODY_TEXT = 500


def _finite(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``Retry-After``."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        ms = _finite(raw_ms)
        if ms is not None:
            return max(ms / 1000.0, 0.0)
    raw = headers.get("retry-after")
    if not raw:
        return None
    seconds = _finite(raw)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _message_of(body: Any, text: str) -> tuple[str, str | None]:
    """(message, error type) from any of the known error body shapes."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or json.dumps(error)[:200]
            kind = error.get("type") or error.get("error_type") or error.get("code")
            return str(message), str(kind) if kind is not None else None
        if isinstance(error, str):
            kind = body.get("error_type") or body.get("type")
            return error, str(kind) if kind is not None else None
        if "detail" in body:
            return str(body["detail"]), None
        if "message" in body:
            return str(body["message"]), None
    text = " ".join(text.split())
    if text.lower().startswith(("<!doctype", "<html")):
        return "non-JSON error page", None
    return (text[:_MAX_BODY_TEXT] or "empty body"), None


def _is_body_validation_error(message: str) -> bool:
    # llama-cpp-python's server answers request-validation failures with HTTP 500 and a
    # pydantic message whose loc starts with 'body' (openai-chat.md 6.5): a bad request.
    return "'body'" in message and ("validation error" in message or "loc" in message)


def error_from_status(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    backend: str,
) -> StatusError:
    """Map an HTTP error response to the typed error tree."""
    text = content.decode("utf-8", "replace")
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = text
    message, error_type = _message_of(body, text)
    lowered = message.lower()
    inner = body.get("error") if isinstance(body, dict) else None
    code = inner.get("code") if isinstance(inner, dict) else None
    cls: type[StatusError]
    if status in (400, 413, 422):
        is_context = (
            any(m in lowered for m in _CONTEXT_MARKERS)
            or error_type in _CONTEXT_CODES
            or code in _CONTEXT_CODES
        )
        cls = ContextLengthError if is_context else BadRequestError
    elif status in (401, 403):
        cls = AuthenticationError
    elif status == 404:
        cls = NotFoundError
    elif status == 429:
        cls = RateLimitError
    elif status >= 500 and _is_body_validation_error(message):
        cls = BadRequestError
    elif status >= 500:
        cls = ServerError
    else:
        cls = StatusError
    retryable: bool | None = True if status in (408, 409) else None
    header = headers.get("x-should-retry")
    should_retry = None if header not in ("true", "false") else header == "true"
    if should_retry is not None:
        retryable = should_retry
    request_id = (
        headers.get("x-request-id") or headers.get("request-id") or headers.get("x-amzn-requestid")
    )
    return cls(
        message,
        backend=backend,
        status_code=status,
        body=body,
        retry_after=parse_retry_after(headers),
        request_id=request_id,
        error_type=error_type,
        retryable=retryable,
        should_retry=should_retry,
    )
