"""The error tree: every exception llmrouter raises on purpose.

::

    LLMRouterError
    ├── ConfigError (ValueError)             bad URL, environment or argument
    ├── InvalidRequestError (ValueError)     bad messages or parameters, caught before sending
    ├── MissingDependencyError (ImportError) names the extra to install
    ├── BackendError                         .backend, .retryable
    │   ├── BackendConnectionError           refused, reset, DNS, TLS
    │   │   └── BackendTimeoutError          connect / first token / idle / total deadline
    │   ├── StatusError                      .status_code .body .retry_after .request_id
    │   │   ├── BadRequestError
    │   │   │   └── ContextLengthError
    │   │   ├── AuthenticationError          401 and 403
    │   │   ├── NotFoundError                404 (unknown model, wrong path)
    │   │   ├── RateLimitError               429
    │   │   └── ServerError                  5xx, 529
    │   ├── ProtocolError                    malformed body or stream
    │   └── StreamInterruptedError           failed after the first chunk; carries the partial text
    ├── OutputParseError (ValueError)        parse(): the output does not validate (.raw)
    └── AllBackendsFailedError               .errors / .attempts: every attempt, in order

Messages never contain secrets: a backend is named by its redacted URL, and every configured
secret is cut from the text a server sends back (``llmrouter._scrub``) before it becomes a
message, a ``body`` or a ``request_id``: servers do echo keys.

The openai SDK's names are aliases of these classes, so ``except`` code written for ``openai``
keeps working with ``import llmrouter as openai``::

    APIError                  = LLMRouterError        (.message .body .code .param .type)
    APIConnectionError        = BackendConnectionError
    APITimeoutError           = BackendTimeoutError
    APIStatusError            = StatusError           (.status_code .body .request_id)
    APIResponseValidationError = ProtocolError
    UnprocessableEntityError  = BadRequestError
    PermissionDeniedError     = AuthenticationError
    InternalServerError       = ServerError

(``BadRequestError``, ``AuthenticationError``, ``NotFoundError`` and ``RateLimitError`` have the
same names already.) ``docs/migrating.md`` lists what still differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmrouter.route import Attempt

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AllBackendsFailedError",
    "AuthenticationError",
    "BackendConnectionError",
    "BackendError",
    "BackendTimeoutError",
    "BadRequestError",
    "ClientClosedError",
    "ConfigError",
    "ContextLengthError",
    "InternalServerError",
    "InvalidRequestError",
    "LLMRouterError",
    "MissingDependencyError",
    "NotFoundError",
    "OutputParseError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "ServerError",
    "StatusError",
    "StreamInterruptedError",
    "UnprocessableEntityError",
]


class LLMRouterError(Exception):
    """Base class of every error llmrouter raises on purpose.

    Attributes (the openai SDK's ``APIError`` ones, ``None`` where they do not apply):
        message: the error's text.
        body: the server's parsed error body (status errors), else ``None``.
        code: the ``code`` field of the server's error object, when present.
        param: the parameter at fault, when known.
        type: the ``type`` field of the server's error object, when present.
    """

    body: Any = None
    code: str | None = None
    param: str | None = None
    type: str | None = None

    @property
    def message(self) -> str:
        """The error's text (for a backend error, without the backend's name in front)."""
        value = self.__dict__.get("_message")
        return value if isinstance(value, str) else str(self)

    @message.setter
    def message(self, value: str) -> None:
        self.__dict__["_message"] = value


class ConfigError(LLMRouterError, ValueError):
    """A backend URL, an environment variable or a client argument is wrong."""


class InvalidRequestError(LLMRouterError, ValueError):
    """The request is malformed; detected before anything was sent.

    Attributes:
        param: the offending parameter (``"messages[1].role"``), when known.
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class MissingDependencyError(LLMRouterError, ImportError):
    """An optional dependency is not installed; the message names the extra."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package: pip install 'llmrouter[{extra}]'"
        )
        self.package = package
        self.extra = extra


class BackendError(LLMRouterError):
    """A backend failed to serve a request.

    Attributes:
        backend: the backend's display name (its URL with secrets removed).
        retryable: whether another attempt (here or on another backend) may succeed.
    """

    retryable: bool = True

    def __init__(self, message: str, *, backend: str = "", retryable: bool | None = None) -> None:
        super().__init__(f"{backend}: {message}" if backend else message)
        self.message = message
        self.backend = backend
        if retryable is not None:
            self.retryable = retryable


class BackendConnectionError(BackendError):
    """The connection could not be made, or broke before a response arrived."""


class ClientClosedError(BackendConnectionError, RuntimeError):
    """The client was used after ``close()``. Nothing was sent.

    A :class:`RuntimeError` too, as the openai SDK's closed client raises (httpx's "Cannot send
    a request, as the client has been closed"), so ``except`` code for either catches it.
    """


class BackendTimeoutError(BackendConnectionError):
    """A deadline passed: connect, time to first token, idle between chunks, or total.

    A kind of :class:`BackendConnectionError`, as the openai SDK's ``APITimeoutError`` is of
    ``APIConnectionError``: ``except`` code written for either catches both.

    Attributes:
        partial_text: for an in-process engine stopped by the deadline mid-generation, the
            text it had produced (``""`` otherwise).
    """

    partial_text: str = ""


class StatusError(BackendError):
    """The backend answered with an HTTP error status.

    Attributes:
        status_code: the HTTP status.
        body: the parsed JSON body, or the raw text when it was not JSON.
        retry_after: seconds the server asked us to wait (``retry-after-ms`` / ``Retry-After``).
        request_id: the server's request id header, when sent.
        should_retry: the server's ``x-should-retry`` verdict, when sent.
        error_type: the ``type`` (or ``error_type``) field of the error object, when present.
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        backend: str = "",
        status_code: int,
        body: Any = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        error_type: str | None = None,
        retryable: bool | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(f"HTTP {status_code}: {message}", backend=backend, retryable=retryable)
        self.should_retry = should_retry
        self.status_code = status_code
        self.body = body
        self.retry_after = retry_after
        self.request_id = request_id
        self.error_type = error_type
        self.type = error_type
        inner = body.get("error") if isinstance(body, dict) else None
        if isinstance(inner, dict):
            code, param = inner.get("code"), inner.get("param")
            self.code = None if code is None else str(code)
            self.param = None if param is None else str(param)


class BadRequestError(StatusError):
    """The backend rejected the request as invalid (400, 422, and engine validation errors)."""


class ContextLengthError(BadRequestError):
    """The prompt plus ``max_tokens`` does not fit the model's context window."""


class AuthenticationError(StatusError):
    """The key was missing, wrong, or not allowed (401, 403)."""


class NotFoundError(StatusError):
    """The model or path does not exist on this backend (404)."""


class RateLimitError(StatusError):
    """The backend asked us to slow down (429)."""

    retryable = True


class ServerError(StatusError):
    """The backend failed (5xx, 529 overloaded)."""

    retryable = True


class ProtocolError(BackendError):
    """The backend sent a body or stream that does not follow its protocol."""


class StreamInterruptedError(BackendError):
    """A stream failed after content had reached the caller.

    Nothing is retried once the caller has seen content: resending would duplicate it. The text
    and tool-call fragments delivered so far travel with the error.

    Attributes:
        partial_text: the content delivered before the failure (choice 0).
        partial_tool_calls: tool-call fragments delivered so far, merged per index.
        cause: the underlying error.
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        backend: str = "",
        partial_text: str = "",
        partial_tool_calls: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message, backend=backend, retryable=False)
        self.partial_text = partial_text
        self.partial_tool_calls = partial_tool_calls or []


class OutputParseError(LLMRouterError, ValueError):
    """``parse()``: the model's output is not valid for the requested model.

    Attributes:
        raw: the text the model returned.
        backend: the backend that produced it.
        validation_error: pydantic's error, when the text was JSON of the wrong shape or not
            JSON at all.
    """

    def __init__(
        self, message: str, *, raw: str, backend: str = "", validation_error: Any = None
    ) -> None:
        super().__init__(message)
        self.raw = raw
        self.backend = backend
        self.validation_error = validation_error


class AllBackendsFailedError(LLMRouterError):
    """Every backend in the chain failed; ``attempts`` says what happened to each, in order.

    Attributes:
        attempts: every attempt made (backend, error, duration), in order.
        errors: the errors of those attempts, in order.
    """

    def __init__(self, attempts: list[Attempt]) -> None:
        self.attempts = attempts
        self.errors: list[BaseException] = [a.error for a in attempts if a.error is not None]
        lines = [f"all {len(attempts)} attempt(s) failed:"]
        for i, attempt in enumerate(attempts, 1):
            lines.append(f"  {i}. {attempt.describe()}")
        super().__init__("\n".join(lines))


# The openai SDK's names (see the module docstring).
APIError = LLMRouterError
APIConnectionError = BackendConnectionError
APITimeoutError = BackendTimeoutError
APIStatusError = StatusError
APIResponseValidationError = ProtocolError
UnprocessableEntityError = BadRequestError
PermissionDeniedError = AuthenticationError
InternalServerError = ServerError
