"""Drives an HTTP codec over the transport: send, check the status, parse, stream.

Two duties sit here because every HTTP backend shares them:

* **Secrets out of server text.** Every error leaving this module (a status error, a
  mid-stream error event, a malformed body, a transport failure) has the backend's key and
  credential header values cut from its message, body and request id (``llmrouter._scrub``):
  servers echo keys, and the error goes on into logs, events, the route, the CLI and the
  gateway.
* **Discovery never blocks a request.** Asking the server which model it serves (``GET
  /v1/models``, TGI's ``GET /info``) is an optimisation: when it fails, the request goes on with
  what is known (no model named: the server's default; the context window unknown), the
  failure is logged once at DEBUG, and nothing fails over because of it.
"""

from __future__ import annotations

import logging
from collections import deque
from types import ModuleType
from typing import Any

from llmrouter._concurrency import athread_call
from llmrouter._http import AsyncHTTPTransport, AsyncResponse, HTTPRequest, with_query
from llmrouter._request import ChatRequest
from llmrouter._scrub import header_secrets, scrub_error
from llmrouter.config import BackendSpec
from llmrouter.errors import (
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    InvalidRequestError,
    LLMRouterError,
    ProtocolError,
    StatusError,
)
from llmrouter.policy import Deadline
from llmrouter.types import ChatCompletion, ChatCompletionChunk, ModelList, set_exchange

__all__ = ["AsyncHTTPBackend", "AsyncHTTPChunkSource", "backend_secrets"]

logger = logging.getLogger("llmrouter")

# How long discovery may take when the backend sets no connect timeout.
_DISCOVERY_TIMEOUT = 5.0


def _final(exc: BackendError) -> bool:
    """Whether a failed discovery is worth asking again (no: the answer will not change)."""
    if isinstance(exc, BackendTimeoutError | ProtocolError):
        return True
    if isinstance(exc, StatusError):
        return exc.status_code != 429 and exc.status_code < 500
    return False


def backend_secrets(spec: BackendSpec) -> list[str]:
    """What must never be shown of this backend: its key and credential header values."""
    secrets = header_secrets(dict(spec.headers))
    if spec.api_key is not None:
        secrets.append(spec.api_key.reveal())
    return secrets


class AsyncHTTPChunkSource:
    """The chunks of one streamed response; ``aclose()`` releases the connection.

    Events are framed as bytes arrive and parsed one per pull. Iteration ends at ``[DONE]``.
    Closing afterwards reads the few bytes that finish the HTTP exchange (as openai-python
    does), so the connection can be reused; closing earlier drops the connection, since the
    server may still be writing into it.
    """

    __slots__ = (
        "_backend", "_bytes", "_closed", "_deadline", "_decoder", "_eof", "_pending", "_response",
        "_secrets",
    )  # fmt: skip

    def __init__(
        self,
        response: AsyncResponse,
        decoder: Any,
        deadline: Deadline,
        backend: str,
        secrets: list[str] | None = None,
    ) -> None:
        self._backend = backend
        self._secrets = secrets or []
        self._response = response
        self._decoder = decoder
        self._deadline = deadline
        self._bytes = response.aiter_bytes()
        self._pending: deque[bytes] = deque()
        self._closed = False
        self._eof = False

    def __aiter__(self) -> AsyncHTTPChunkSource:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        decoder = self._decoder
        pending = self._pending
        while True:
            if pending:
                try:
                    chunk: ChatCompletionChunk | None = decoder.parse(pending.popleft())
                except LLMRouterError as exc:  # an error event: its text came from the server
                    await self.aclose()
                    scrub_error(exc, self._secrets)
                    raise
                except BaseException:
                    await self.aclose()
                    raise
                if chunk is not None:
                    return chunk
                continue
            if self._eof or decoder.done or self._closed:
                if not decoder.finished and not self._closed:
                    await self.aclose()
                    try:
                        decoder.check_end()
                    except LLMRouterError as exc:
                        scrub_error(exc, self._secrets)
                        raise
                raise StopAsyncIteration
            await self._read()

    async def _read(self) -> None:
        try:
            data = await self._bytes.__anext__()
        except StopAsyncIteration:
            self._eof = True
            self._pending.extend(self._decoder.close())
            return
        except BackendError as exc:
            if not self._decoder.finished:
                await self.aclose()
                scrub_error(exc, self._secrets)
                raise
            # The answer was whole (finish_reason seen) when the body broke off: that is an
            # end of stream, however the HTTP framing ended (chunked or not).
            self._eof = True
            return
        except BaseException:
            await self.aclose()
            raise
        if self._deadline.expired():
            await self.aclose()
            raise BackendTimeoutError(
                "the request's total deadline passed mid-stream", backend=self._backend
            )
        self._pending.extend(self._decoder.feed(data))

    def http_exchange(self) -> tuple[int, dict[str, str]]:
        """The response's status and headers."""
        return self._response.status, dict(self._response.headers)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._decoder.done and not self._eof:
            # Finish the exchange so the connection goes back to the pool.
            try:
                async for _ in self._bytes:
                    pass
            except BackendError:
                pass
        close_bytes = getattr(self._bytes, "aclose", None)  # a generator: finish it here
        if close_bytes is not None:
            await close_bytes()
        await self._response.aclose()


class AsyncHTTPBackend:
    """One HTTP backend: a spec, a codec module and the shared transport."""

    def __init__(self, spec: BackendSpec, transport: AsyncHTTPTransport, codec: ModuleType) -> None:
        self.spec = spec
        self.name = spec.name
        self._transport = transport
        self._codec = codec
        self._secrets = backend_secrets(spec)
        self._discovered: str | None = None
        # Discovery answered with an error status (the endpoint is not there, say behind a
        # proxy that exposes only /v1/chat/completions): not asked again.
        self._discovery_refused = False
        self._discovery_logged = False
        self._discovery_failure = ""
        #: The context window: declared (``?max_context=``), else learned from discovery
        #: (vLLM's ``max_model_len`` in /v1/models, TGI's /info).
        self.max_context: int | None = spec.max_context

    def _timed(
        self, http: HTTPRequest, deadline: Deadline, request: ChatRequest | None = None
    ) -> HTTPRequest:
        """Set the request's timeouts from this backend's settings (or the call's, where it
        set them), capped by the deadline; add the call's query parameters."""
        timeouts = self.spec.timeouts
        connect, read, ttft = timeouts.connect, timeouts.read, timeouts.ttft
        if request is not None:
            if request.connect_timeout is not None:
                connect = request.connect_timeout
            if request.read_timeout is not None:
                # httpx's read timeout covers the wait for the response's head too.
                read = request.read_timeout
                ttft = read if ttft is None else min(ttft, read)
            if request.extra_query:
                http.url = with_query(http.url, request.extra_query)
        http.connect_timeout = deadline.cap(connect)
        http.first_byte_timeout = None if ttft is None else deadline.cap(ttft)
        http.read_timeout = None if read is None else deadline.cap(read)
        http.total_timeout = deadline.remaining()
        return http

    async def _prepare(self) -> None:
        # A codec that must do blocking work before building requests (SageMaker: resolving
        # and refreshing AWS credentials) says so cheaply; the async client does that work in
        # a worker thread so the event loop never blocks.
        needs = getattr(self._codec, "needs_prepare", None)
        if needs is not None and needs(self.spec):
            await athread_call(lambda: self._codec.prepare(self.spec))

    async def _send(self, http: HTTPRequest) -> AsyncResponse:
        response = await self._transport.send(http)
        if response.status >= 300:
            body = await response.aread()
            raise self._codec.map_error(self.spec, response.status, response.headers, body)
        return response

    def _scrubbed(self, exc: LLMRouterError, http: HTTPRequest | None = None) -> LLMRouterError:
        secrets = self._secrets if http is None else self._secrets + header_secrets(http.headers)
        return scrub_error(exc, secrets)

    async def _model(self, request: ChatRequest, deadline: Deadline) -> str:
        """The model to name in the request; ``""`` when discovery failed (the codec then
        leaves the choice to the server).

        Discovery gets the connect timeout (5 s by default) for its whole answer, a small
        document a server has in memory: a route that stalls costs one wait, never the
        request's deadline. A codec that cannot send without a model (``MODEL_REQUIRED``:
        Ollama, Anthropic, Gemini) gets an :class:`InvalidRequestError` saying so instead of
        a request the server would reject.
        """
        if self.spec.model:
            return self.spec.model
        if request.model:
            return request.model
        if self._discovered is not None:
            return self._discovered
        if self._discovery_refused:
            return self._undiscovered(None)
        budget = self.spec.timeouts.connect or _DISCOVERY_TIMEOUT
        try:
            models = await self.list_models(Deadline(deadline.cap(budget)))
        except BackendError as exc:
            # Discovery is an optimisation: the chat itself says whether the backend serves.
            # The route missing or refused, a malformed answer or a stall is the server's
            # answer (not asked again); a connection failure, a 429 or a 5xx may pass, so the
            # next request asks again.
            self._discovery_refused = _final(exc)
            self._discovery_failure = f"{type(exc).__name__}: {exc.message}"
            if not self._discovery_logged:
                self._discovery_logged = True
                logger.debug(
                    "%s: model discovery failed (%s); going on without it",
                    self.name,
                    self._discovery_failure,
                )
            return self._undiscovered(exc)
        ids = [m.id for m in models.data]
        if len(ids) != 1:
            raise InvalidRequestError(
                f"{self.name}: model= is required (or pin one with ?model= on the URL); "
                f"this server serves {len(ids)} models: {', '.join(ids[:10]) or 'none'}",
                param="model",
            )
        self._discovered = ids[0]
        learned = (models.data[0].model_extra or {}).get("max_model_len")
        if self.max_context is None and isinstance(learned, int) and learned > 0:
            self.max_context = learned
        return self._discovered

    def _undiscovered(self, exc: BackendError | None) -> str:
        if not getattr(self._codec, "MODEL_REQUIRED", False):
            return ""
        if isinstance(exc, BackendConnectionError) and not isinstance(exc, BackendTimeoutError):
            raise exc  # the backend is down: the chat would fail the same way
        raise InvalidRequestError(
            f"{self.name}: model= is required (or pin one with ?model= on the URL); asking "
            f"the server which model it serves failed ({self._discovery_failure})",
            param="model",
        )

    async def chat(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        http: HTTPRequest | None = None
        try:
            model = await self._model(request, deadline)
            await self._prepare()
            http = self._codec.build_chat(self.spec, request, model)
            response = await self._send(self._timed(http, deadline, request))
            body = await response.aread()
            completion: ChatCompletion = self._codec.parse_chat(self.spec, body)
        except LLMRouterError as exc:
            self._scrubbed(exc, http)
            raise
        # What the attempt that served sent back, for ``with_raw_response``.
        set_exchange(completion, response.status, response.headers, body)
        return completion

    async def chat_stream(self, request: ChatRequest, deadline: Deadline) -> AsyncHTTPChunkSource:
        http: HTTPRequest | None = None
        try:
            model = await self._model(request, deadline)
            await self._prepare()
            http = self._codec.build_chat(self.spec, request, model)
            response = await self._send(self._timed(http, deadline, request))
        except LLMRouterError as exc:
            self._scrubbed(exc, http)
            raise
        return AsyncHTTPChunkSource(
            response,
            self._codec.ChunkDecoder(self.spec),
            deadline,
            self.name,
            self._secrets + header_secrets(http.headers),
        )

    async def list_models(self, deadline: Deadline) -> ModelList:
        http: HTTPRequest | None = None
        try:
            await self._prepare()
            http = self._codec.build_models(self.spec)
            response = await self._send(self._timed(http, deadline))
            models: ModelList = self._codec.parse_models(self.spec, await response.aread())
        except LLMRouterError as exc:
            self._scrubbed(exc, http)
            raise
        return models

    async def health(self, deadline: Deadline) -> None:
        """Raise a :class:`BackendError` unless the backend answers its health probe."""
        http: HTTPRequest | None = None
        try:
            await self._prepare()
            http = self._codec.build_health(self.spec)
            response = await self._send(self._timed(http, deadline))
            await response.aread()
        except LLMRouterError as exc:
            self._scrubbed(exc, http)
            raise

    async def aclose(self) -> None:
        """Nothing to release: the transport belongs to the client."""
