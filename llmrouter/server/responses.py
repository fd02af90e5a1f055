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

The message of a 502/503/504 is the attempt report, one line per attempt naming the backend by
its redacted URL and the error class; ``error.attempts`` carries the same list as data. A
backend's own error text is never relayed as it came: only its safe part (``upstream.py``:
first line, no paths, no traceback, secrets masked) reaches the client, and the whole of it
(secrets masked) goes to the log, and to ``error.upstream_message`` with ``--debug``. Never a
stack trace, never a key. Upstream failures carry
``x-should-retry: false``: the gateway has already retried and failed over, and the OpenAI SDK
honours the header instead of stacking its own retries on top.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
from llmrouter.server.upstream import attempt_line, raw_text, safe_message

if TYPE_CHECKING:
    from llmrouter.server.ratelimit import Denial

__all__ = [
    "GatewayError",
    "error_body",
    "from_exception",
    "rate_limited",
    "too_many_in_flight",
]


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
    upstream: str | None = None  # the backend's whole error text (secrets masked), for the log

    def body(self, *, debug: bool = False) -> bytes:
        """The JSON answer; with ``debug`` it carries the backend's text as well."""
        extra = {"upstream_message": self.upstream} if debug and self.upstream else None
        return error_body(self.message, self.type, self.param, self.code, self.attempts, extra)


def error_body(
    message: str,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    attempts: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """``{"error": {"message", "type", "param", "code"}}`` as JSON bytes."""
    error: dict[str, Any] = {"message": message, "type": type_, "param": param, "code": code}
    if attempts is not None:
        error["attempts"] = attempts
    if extra:
        error.update(extra)
    return json.dumps({"error": error}, separators=(",", ":")).encode()


def _attempt_data(attempt: Attempt) -> dict[str, Any]:
    error = attempt.error
    return {
        "backend": attempt.backend,
        "error": None if error is None else type(error).__name__,
        "message": None if error is None else safe_message(str(getattr(error, "message", error))),
        "duration_ms": round(attempt.duration_s * 1000, 1),
        "skipped": attempt.skipped,
    }


_NO_RETRY = {"x-should-retry": "false"}


def _described(error: BaseException) -> str:
    """``backend: ErrorClass: safe message``."""
    backend = getattr(error, "backend", "")
    return f"{backend}: {attempt_line(error)}" if backend else attempt_line(error)


def _report(attempts: list[Attempt]) -> str:
    """The attempt report as ``AllBackendsFailedError`` prints it, with only safe text."""
    lines = [f"all {len(attempts)} attempt(s) failed:"]
    for i, a in enumerate(attempts, 1):
        if a.skipped:
            outcome = f"skipped ({attempt_line(a.error)})" if a.error else "skipped"
        elif a.error is None:
            outcome = "ok"
        else:
            outcome = attempt_line(a.error)
        lines.append(f"  {i}. {a.backend}: {outcome} ({a.duration_s * 1000:.0f} ms)")
    return "\n".join(lines)


def _upstream_text(attempts: list[Attempt]) -> str | None:
    texts = [
        f"{a.backend}: {type(a.error).__name__}: {raw_text(a.error)}"
        for a in attempts
        if a.error is not None and not a.skipped
    ]
    return "\n".join(texts) or None


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
        return GatewayError(
            400,
            _described(exc),
            "invalid_request_error",
            code=code,
            error_class=name,
            upstream=f"{exc.backend}: {raw_text(exc)}",
        )
    if isinstance(exc, AllBackendsFailedError):
        attempts = exc.attempts
        failures = [a.error for a in attempts if a.error is not None and not a.skipped]
    elif isinstance(exc, BackendError):
        attempts = [Attempt(exc.backend, exc)]
        failures = [exc]
    else:
        return GatewayError(500, "internal error", "server_error", error_class=name)
    data = [_attempt_data(a) for a in attempts]
    message = _report(attempts) if isinstance(exc, AllBackendsFailedError) else _described(exc)
    upstream = _upstream_text(attempts)
    if not failures or nothing_usable:
        return GatewayError(
            503,
            message,
            "service_unavailable",
            code="no_backend_available",
            headers=dict(_NO_RETRY),
            attempts=data,
            error_class=name,
            upstream=upstream,
        )
    if all(isinstance(e, NotFoundError) for e in failures):
        return GatewayError(
            404, message, "not_found_error", attempts=data, error_class=name, upstream=upstream
        )
    if all(isinstance(e, BackendTimeoutError) for e in failures):
        return GatewayError(
            504,
            message,
            "timeout_error",
            code="upstream_timeout",
            headers=dict(_NO_RETRY),
            attempts=data,
            error_class=name,
            upstream=upstream,
        )
    return GatewayError(
        502,
        message,
        "upstream_error",
        code="upstream_failed",
        headers=dict(_NO_RETRY),
        attempts=data,
        error_class=name,
        upstream=upstream,
    )


def stream_error_event(exc: BaseException) -> bytes:
    """The SSE event sent when a stream fails after it started: ``data: {"error": ...}``."""
    if isinstance(exc, StreamInterruptedError):
        text = safe_message(str(getattr(exc, "message", None) or exc)) or type(exc).__name__
        body = error_body(text, "stream_interrupted", code="stream_interrupted")
    else:
        err = from_exception(exc)
        body = error_body(err.message, err.type, err.param, err.code, err.attempts)
    return b"data: " + body + b"\n\n"


def rate_limited(denial: Denial, key_id: str) -> GatewayError:
    unit = "requests" if denial.limit == "requests" else "tokens"
    return GatewayError(
        429,
        f"rate limit reached for key id {key_id!r}: {denial.per_minute} {unit} per minute; "
        f"retry after {denial.retry_after_header} s",
        "rate_limit_error",
        code="rate_limit_exceeded",
        headers={"Retry-After": denial.retry_after_header},
        error_class="RateLimited",
    )


def too_many_in_flight(key_id: str, limit: int) -> GatewayError:
    return GatewayError(
        429,
        f"too many requests in flight for key id {key_id!r}: at most {limit} at once; "
        "retry after 1 s",
        "rate_limit_error",
        code="too_many_requests_in_flight",
        headers={"Retry-After": "1"},
        error_class="TooManyInFlight",
    )
