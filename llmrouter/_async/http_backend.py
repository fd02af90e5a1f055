"""Drives an HTTP codec over the transport: send, check the status, parse, stream."""

from __future__ import annotations

from collections import deque
from types import ModuleType
from typing import Any

from llmrouter._http import AsyncHTTPTransport, AsyncResponse
from llmrouter._request import ChatRequest
from llmrouter.config import BackendSpec
from llmrouter.errors import InvalidRequestError
from llmrouter.policy import Deadline
from llmrouter.types import ChatCompletion, ChatCompletionChunk, ModelList

__all__ = ["AsyncHTTPBackend", "AsyncHTTPChunkSource"]


class AsyncHTTPChunkSource:
    """The chunks of one streamed response; ``aclose()`` drops the connection."""

    __slots__ = ("_bytes", "_closed", "_decoder", "_pending", "_response")

    def __init__(self, response: AsyncResponse, decoder: Any) -> None:
        self._response = response
        self._decoder = decoder
        self._bytes = response.aiter_bytes()
        self._pending: deque[ChatCompletionChunk] = deque()
        self._closed = False

    def __aiter__(self) -> AsyncHTTPChunkSource:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        pending = self._pending
        while not pending:
            if self._closed:
                raise StopAsyncIteration
            try:
                data = await self._bytes.__anext__()
            except StopAsyncIteration:
                self._closed = True
                await self._response.aclose()
                pending.extend(self._decoder.close())
                continue
            except BaseException:
                await self.aclose()
                raise
            try:
                pending.extend(self._decoder.feed(data))
            except BaseException:
                await self.aclose()
                raise
        return pending.popleft()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._response.aclose()


class AsyncHTTPBackend:
    """One HTTP backend: a spec, a codec module and the shared transport."""

    def __init__(self, spec: BackendSpec, transport: AsyncHTTPTransport, codec: ModuleType) -> None:
        self.spec = spec
        self.name = spec.name
        self._transport = transport
        self._codec = codec
        self._discovered: str | None = None

    async def _send(self, http: Any) -> AsyncResponse:
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
        return self._discovered

    async def chat(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        model = await self._model(request, deadline)
        read_timeout = deadline.cap(self.spec.timeouts.read)
        http = self._codec.build_chat(self.spec, request, model, read_timeout=read_timeout)
        response = await self._send(http)
        completion: ChatCompletion = self._codec.parse_chat(self.spec, await response.aread())
        return completion

    async def chat_stream(self, request: ChatRequest, deadline: Deadline) -> AsyncHTTPChunkSource:
        model = await self._model(request, deadline)
        read_timeout = deadline.cap(self.spec.timeouts.read)
        http = self._codec.build_chat(self.spec, request, model, read_timeout=read_timeout)
        response = await self._send(http)
        return AsyncHTTPChunkSource(response, self._codec.ChunkDecoder(self.spec))

    async def list_models(self, deadline: Deadline) -> ModelList:
        http = self._codec.build_models(
            self.spec, read_timeout=deadline.cap(self.spec.timeouts.read)
        )
        response = await self._send(http)
        models: ModelList = self._codec.parse_models(self.spec, await response.aread())
        return models

    async def aclose(self) -> None:
        """Nothing to release: the transport belongs to the client."""
