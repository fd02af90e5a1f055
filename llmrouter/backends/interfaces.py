"""The interfaces a backend implements, as ``typing.Protocol`` classes that mypy checks.

* :class:`HTTPCodec`: an HTTP backend is a sans-IO *codec* (usually a module) that builds
  requests and parses bytes; llmrouter's drivers do all I/O, deadlines, retries and failover.
* :class:`ChunkDecoder`: the codec's stateful stream decoder.
* :class:`AsyncEngine` / :class:`Engine`: an in-process backend (llama.cpp, vLLM, a Python
  function) driven directly by the async or the sync client.

A codec module type-checks against the protocol by assignment::

    from llmrouter.backends import HTTPCodec
    import my_pkg.backend
    codec: HTTPCodec = my_pkg.backend   # mypy reports any missing or mistyped name
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from llmrouter._http import HTTPRequest
    from llmrouter._request import ChatRequest
    from llmrouter.backends.spec import BackendSpec
    from llmrouter.errors import StatusError
    from llmrouter.policy import Deadline
    from llmrouter.types import ChatCompletion, ChatCompletionChunk, ModelList

__all__ = ["AsyncChunkSource", "AsyncEngine", "ChunkDecoder", "ChunkSource", "Engine", "HTTPCodec"]


class ChunkDecoder(Protocol):
    """Stream decoding for one response, stateful: frame bytes, then parse one event per pull.

    The driver parses one event per pull, so content before an error event reaches the caller
    first, and a stream holds raw bytes, not models, for what it has buffered.
    """

    def feed(self, data: bytes) -> list[bytes]:
        """Frame more body bytes into raw events (SSE events, NDJSON lines, event-stream
        messages); cheap, no parsing."""
        ...

    def parse(self, event: bytes) -> ChatCompletionChunk | None:
        """One event -> one OpenAI chunk, or ``None`` for an event that carries nothing; raise
        the typed error for an error event, ``ProtocolError`` for a malformed one."""
        ...

    @property
    def done(self) -> bool:
        """The protocol's terminator was parsed; iteration stops."""
        ...

    @property
    def finished(self) -> bool:
        """Every choice has a finish reason (the answer is whole even if the body breaks off)."""
        ...

    def close(self) -> list[bytes]:
        """The body ended: any last framed events."""
        ...

    def check_end(self) -> None:
        """The body ended and every event is parsed: raise ``BackendConnectionError`` if the
        answer was cut short."""
        ...


class _DecoderFactory(Protocol):
    def __call__(self, spec: BackendSpec, /) -> ChunkDecoder: ...


class HTTPCodec(Protocol):
    """What an HTTP backend's codec module defines (``llmrouter/backends/openai_compat.py`` is
    the reference). Never send, sleep, retry or import an HTTP library in a codec.

    Optional: ``needs_prepare(spec) -> bool`` and ``prepare(spec) -> None`` for blocking work
    before building a request (credentials); the async driver runs ``prepare`` in a thread.
    """

    @property
    def ChunkDecoder(self) -> _DecoderFactory:
        """The stream decoder class, built as ``ChunkDecoder(spec)``."""
        ...

    def build_chat(self, spec: BackendSpec, request: ChatRequest, model: str, /) -> HTTPRequest:
        """The chat request, streaming or not (``request.stream``); raise
        ``InvalidRequestError`` for what the backend cannot do."""
        ...

    def parse_chat(self, spec: BackendSpec, body: bytes, /) -> ChatCompletion:
        """A 2xx body -> OpenAI shape; an error inside a 200 -> the typed error; garbage ->
        ``ProtocolError``."""
        ...

    def map_error(
        self, spec: BackendSpec, status: int, headers: Mapping[str, str], body: bytes, /
    ) -> StatusError:
        """A non-2xx answer -> the typed error (start from ``error_from_status``)."""
        ...

    def build_models(self, spec: BackendSpec, /) -> HTTPRequest:
        """Model discovery (used when neither the URL nor the call names a model)."""
        ...

    def parse_models(self, spec: BackendSpec, body: bytes, /) -> ModelList:
        """The discovery answer -> a model list."""
        ...

    def build_health(self, spec: BackendSpec, /) -> HTTPRequest:
        """The active health probe (``?health=10s``)."""
        ...


@runtime_checkable
class AsyncChunkSource(Protocol):
    """An open stream, async: the next chunk, and a way to stop (which cancels the work)."""

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]: ...

    async def __anext__(self) -> ChatCompletionChunk: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ChunkSource(Protocol):
    """An open stream, sync: the next chunk, and a way to stop (which cancels the work)."""

    def __iter__(self) -> Iterator[ChatCompletionChunk]: ...

    def __next__(self) -> ChatCompletionChunk: ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncEngine(Protocol):
    """An in-process backend for :class:`llmrouter.AsyncClient` (or any ready-made backend
    object passed in ``AsyncClient(backends=[...])``).

    It gets the router's failover, breakers, balancing and route like any other backend. It
    must honour the :class:`~llmrouter.policy.Deadline` it is given (raise
    ``BackendTimeoutError`` when it passes, with ``spec.timeouts.ttft`` bounding the first
    chunk and ``spec.timeouts.read`` the gap between chunks) and stop its work when a stream is
    closed early. Errors are :mod:`llmrouter.errors` types: a ``BackendError`` fails over, an
    ``InvalidRequestError`` means "this backend cannot do that" and skips it.
    """

    name: str
    spec: BackendSpec
    max_context: int | None

    async def chat(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion: ...

    async def chat_stream(self, request: ChatRequest, deadline: Deadline) -> AsyncChunkSource: ...

    async def list_models(self, deadline: Deadline) -> ModelList: ...

    async def health(self, deadline: Deadline) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Engine(Protocol):
    """The sync twin of :class:`AsyncEngine`, for :class:`llmrouter.Client`."""

    name: str
    spec: BackendSpec
    max_context: int | None

    def chat(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion: ...

    def chat_stream(self, request: ChatRequest, deadline: Deadline) -> ChunkSource: ...

    def list_models(self, deadline: Deadline) -> ModelList: ...

    def health(self, deadline: Deadline) -> None: ...

    def close(self) -> None: ...
