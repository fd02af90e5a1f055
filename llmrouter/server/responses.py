"""OpenAI-style error bodies, and which HTTP status each llmrouter error becomes (pure).

====================================================  ======  =====================
error                                                 status  ``error.type``
====================================================  ======  =====================
malformed JSON, :class:`InvalidRequestError`          400     invalid_request_error
a backend's 400/422 (:class:`BadRequestError`)        400     invalid_request_error
every backend answered 404 (unknown model)            404     not_found_error
nothing usable: every breaker open, nothing called    503     service_unavailable
every failure a timeout                               504     timeout_error
any other backend failure                             502     upstream_error
====================================================  ======  =====================

The message of a 502/503/504 is the attempt report (``AllBackendsFailedError``'s message, or
the one backend's error), which names backends by their redacted URLs; ``error.attempts``
carries the same list as data. Never a stack trace, never a key. Upstream failures carry
``x-should-retry: false``: the gateway has already retried and failed over, and the OpenAI SDK
honours the header instead of stacking its own retries on top.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmrouter.errors import (
    AllBackendsFailedError,
    BackendError,
    BackendTimeoutError,
    BadRequestError,
    ContextLengthError,
    InvalidRequestError,
    NotFoundError,
    StreamInterruptedError,
)
from llmrouter.route import Attempt

__all__ = ["GatewayError", "error_body", "from_exception"]


@dataclass(eq=False)
class GatewayError(Exception):
    """An error answer: HTTP status plus the OpenAI error object's fields."""

    status: int
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    attempts: list[dict[str, Any]] | None = None
    error_class: str = ""

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.param, self.code, self.attempts)


def error_body(
    message: str,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    attempts: list[dict[str, Any]] | None = None,
) -> bytes:
    """``{"error": {"message", "type", "param", "code"}}`` as JSON bytes."""
    error: dict[str, Any] = {"message": message, "type": type_, "param": param, "code": code}
    if attempts is not None:
        error["attempts"] = attempts
    return json.dumps({"error": error}, separators=(",", ":")).encode()


def _attempt_data(attempt: Attempt) -> dict[str, Any]:
    error = attempt.error
    return {
        "backend": attempt.backend,
        "error": None if error is None else type(error).__name__,
        "message": None if error is None else str(getattr(error, "message", error))[:300],
        "duration_ms": round(attempt.duration_s * 1000, 1),
        "skipped": attempt.skipped,
    }


_NO_RETRY = {"x-should-retry": "false"}


def from_exception(exc: BaseException, *, nothing_usable: bool = False) -> GatewayError:
    """The error answer for an exception raised by the client.

    Args:
        exc: what ``chat.completions.create`` (or a stream) raised.
        nothing_usable: every backend's breaker is open now (the answer becomes a 503).
    """
    name = type(exc).__name__
    if isinstance(exc, InvalidRequestError):
        return GatewayError(
            400, str(exc), "invalid_request_error", exc.param, None, error_class=name
        )
    if isinstance(exc, BadRequestError):
        code = "context_length_exceeded" if isinstance(exc, ContextLengthError) else None
        return GatewayError(400, str(exc), "invalid_request_error", code=code, error_class=name)
    if isinstance(exc, AllBackendsFailedError):
        attempts = exc.attempts
        failures = [a.error for a in attempts if a.error is not None and not a.skipped]
    elif isinstance(exc, BackendError):
        attempts = [Attempt(exc.backend, exc)]
        failures = [exc]
    else:
        return GatewayError(500, "internal error", "server_error", error_class=name)
    data = [_attempt_data(a) for a in attempts]
    message = str(exc) if isinstance(exc, AllBackendsFailedError) else f"{name}: {exc}"
    if not failures or nothing_usable:
        return GatewayError(
            503,
            message,
            "service_unavailable",
            code="no_backend_available",
            headers=dict(_NO_RETRY),
            attempts=data,
            error_class=name,
        )
    if all(isinstance(e, NotFoundError) for e in failures):
        return GatewayError(404, message, "not_found_error", attempts=data, error_class=name)
    if all(isinstance(e, BackendTimeoutError) for e in failures):
        return GatewayError(
            504,
            message,
            "timeout_error",
            code="upstream_timeout",
            headers=dict(_NO_RETRY),
            attempts=data,
            error_class=name,
        )
    return GatewayError(
        502,
        message,
        "upstream_error",
        code="upstream_failed",
        headers=dict(_NO_RETRY),
        attempts=data,
        error_class=name,
    )


def stream_error_event(exc: BaseException) -> bytes:
    """The SSE event sent when a stream fails after it started: ``data: {"error": ...}``."""
    if isinstance(exc, StreamInterruptedError):
        body = error_body(str(exc), "stream_interrupted", code="stream_interrupted")
    else:
        err = from_exception(exc)
        body = error_body(err.message, err.type, err.param, err.code, err.attempts)
    return b"data: " + body + b"\n\n"
