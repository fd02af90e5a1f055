"""llmrouter: one OpenAI-shaped client for every LLM inference engine, with failover.

    from llmrouter import Client
    client = Client()  # LLMROUTER_URL, else OPENAI_BASE_URL, else the embedded model
    resp = client.chat.completions.create(messages=[{"role": "user", "content": "hi"}])

Importing this package loads nothing heavy: the clients, types and HTTP libraries load on
first use of a name, and each backend loads when a URL names it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llmrouter.errors import (
    AllBackendsFailedError,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    BadRequestError,
    ClientClosedError,
    ConfigError,
    ContextLengthError,
    InternalServerError,
    InvalidRequestError,
    LLMRouterError,
    MissingDependencyError,
    NotFoundError,
    OutputParseError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StatusError,
    StreamInterruptedError,
    UnprocessableEntityError,
)

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AllBackendsFailedError",
    "AsyncClient",
    "AsyncStream",
    "Attempt",
    "AuthenticationError",
    "BackendConnectionError",
    "BackendError",
    "BackendSpec",
    "BackendTimeoutError",
    "BadRequestError",
    "ChatCompletion",
    "ChatCompletionChunk",
    "Client",
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
    "Route",
    "ServerError",
    "StatusError",
    "Stream",
    "StreamInterruptedError",
    "Timeouts",
    "UnprocessableEntityError",
    "__version__",
    "parse_chain",
    "register_backend",
]

_LOCATIONS = {
    "AsyncClient": "llmrouter._async.client",
    "AsyncStream": "llmrouter._async.stream",
    "Client": "llmrouter._sync.client",
    "Stream": "llmrouter._sync.stream",
    "ChatCompletion": "llmrouter.types",
    "ChatCompletionChunk": "llmrouter.types",
    "Attempt": "llmrouter.route",
    "Route": "llmrouter.route",
    "BackendSpec": "llmrouter.config",
    "Timeouts": "llmrouter.config",
    "parse_chain": "llmrouter.config",
    "register_backend": "llmrouter.backends.registry",
}

if TYPE_CHECKING:
    from llmrouter._async.client import AsyncClient
    from llmrouter._async.stream import AsyncStream
    from llmrouter._sync.client import Client
    from llmrouter._sync.stream import Stream
    from llmrouter.backends.registry import register_backend
    from llmrouter.config import BackendSpec, Timeouts, parse_chain
    from llmrouter.route import Attempt, Route
    from llmrouter.types import ChatCompletion, ChatCompletionChunk


# Written out rather than built by llmrouter._lazy: this is the import every user pays for.
def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmrouter' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
