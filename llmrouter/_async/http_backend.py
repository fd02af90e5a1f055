"""Drives an HTTP codec over the transport: send, check the status, parse, stream."""

from __future__ import annotations

from collections import deque
from types import ModuleType
from typing import Any

from llmrouter._concurrency import athread_call
from llmrouter._http import AsyncHTTPTransport, AsyncResponse, HTTPRequest
from llmrouter._request import ChatRequest
from llmrouter.config import BackendSpec
from llmrouter.errors import BackendError, BackendTimeoutError, InvalidRequestError
from llmrouter.policy import Deadline
from llmrouter.types import ChatCompletion, ChatCompletionChunk, ModelList

__all__ = ["AsyncHTTPBackend", "AsyncHTTPChunkSource"]


class AsyncHTTPChunkSource:
    """The chunks of one streamed response; ``aclose()`` releases the connection.

    Events are framed as bytes arrive and parsed one per pull. Iteration ends at ``[DONE]``.
    Closing afterwards reads the few bytes that finish the HTTP exchange (as openai-python
    does), so the connection can be reused; closing earlier drops the connection, since the
    server may still be writing into it.
    """

    __slots__ = (
        "_backend", "_bytes", "_closed", "_deadline", "_decoder", "_eof", "_pending", "_response"
    )  # fmt: skip

    def __init__(
        self, response: AsyncResponse, decoder: Any, deadline: Deadline, backend: str
    ) -> None:
        self._backend = backend
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
                except BaseException:
                    await self.aclose()
                    raise
                if chunk is not None:
                    return chunk
                continue
            if self._eof or decoder.done or self._closed:
                if not decoder.finished and not self._closed:
                    await self.aclose()
                    decoder.check_end()
                raise StopAsyncIteration
            await self._read()

    async def _read(self) -> None:
        try:
            data = await self._bytes.__anext__()
        except StopAsyncIteration:
            self._eof = True
            self._pending.extend(self._decoder.close())
            return
        except BackendError:
            if not self._decoder.finished:
                await self.aclose()
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
        self._discovered: str | None = None
        #: The context window: declared (``?max_context=``), else learned from discovery
        #: (vLLM's ``max_model_len`` in /v1/models, TGI's /info).
        self.max_context: int | None = spec.max_context

    def _timed(self, http: HTTPRequest, deadline: Deadline) -> HTTPRequest:
        """Set the request's timeouts from this backend's settings, capped by the deadline."""
        timeouts = self.spec.timeouts
        http.connect_timeout = deadline.cap(timeouts.connect)
        http.first_byte_timeout = None if timeouts.ttft is None else deadline.cap(timeouts.ttft)
        http.read_timeout = None if timeouts.read is None else deadline.cap(timeouts.read)
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

    async def _model(self, request: ChatRequest, deadline: Deadline) -> str:
        if self.spec.model:
            return self.spec.model
        if request.model:
            return request.model
        if self._discovered is None:
            models = await self.list_models(deadline)
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

    async def chat(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        model = await self._model(request, deadline)
        await self._prepare()
        http = self._codec.build_chat(self.spec, request, model)
        response = await self._send(self._timed(http, deadline))
        completion: ChatCompletion = self._codec.parse_chat(self.spec, await response.aread())
        return completion

    async def chat_stream(self, request: ChatRequest, deadline: Deadline) -> AsyncHTTPChunkSource:
        model = await self._model(request, deadline)
        await self._prepare()
        http = self._codec.build_chat(self.spec, request, model)
        response = await self._send(self._timed(http, deadline))
        return AsyncHTTPChunkSource(
            response, self._codec.ChunkDecoder(self.spec), deadline, self.name
        )

    async def list_models(self, deadline: Deadline) -> ModelList:
        await self._prepare()
        http = self._codec.build_models(self.spec)
        response = await self._send(self._timed(http, deadline))
        models: ModelList = self._codec.parse_models(self.spec, await response.aread())
        return models

    async def health(self, deadline: Deadline) -> None:
        """Raise a :class:`BackendError` unless the backend answers its health probe."""
        await self._prepare()
        http = self._codec.build_health(self.spec)
        response = await self._send(self._timed(http, deadline))
        await response.aread()

    async def aclose(self) -> None:
        """Nothing to release: the transport belongs to the client."""
