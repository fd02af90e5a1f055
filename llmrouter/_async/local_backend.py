"""Drives llama.cpp in this process: blocking engine calls run off the event loop.

The request's deadlines travel into the engine as a :class:`GenerationWatch` (total, time to
first token, idle), checked at every token, so a slow generation stops with
:class:`BackendTimeoutError` and the router fails over as it does for an HTTP backend.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from llmrouter._concurrency import (
    AsyncThreadIterator,
    GenerationWatch,
    athread_call,
    athread_iter,
)
from llmrouter._embed import EmbeddingRequest, from_vectors
from llmrouter._request import ChatRequest
from llmrouter.backends import llamacpp, llamacpp_embed
from llmrouter.config import BackendSpec
from llmrouter.embeddings import CreateEmbeddingResponse, EmbedLimits
from llmrouter.policy import Deadline
from llmrouter.types import ChatCompletion, ChatCompletionChunk, ModelList

__all__ = ["AsyncLocalBackend"]


class AsyncLocalBackend:
    """A ``local://`` backend; the model loads on first use and is shared per process."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self._engine: llamacpp.LlamaEngine | None = None
        self._embedder: llamacpp_embed.LlamaEmbedder | None = None
        #: What one embeddings request may carry (``llmrouter.backends.llamacpp_embed``).
        self.embed_limits: EmbedLimits = llamacpp_embed.LIMITS
        self._lock = threading.Lock()
        #: The context window: declared, else the loaded engine's n_ctx.
        self.max_context: int | None = spec.max_context

    def _load(self) -> llamacpp.LlamaEngine:
        with self._lock:
            if self._engine is None:
                self._engine = llamacpp.acquire_engine(self.spec)
                if self.max_context is None:
                    self.max_context = self._engine.n_ctx
            return self._engine

    async def _get_engine(self) -> llamacpp.LlamaEngine:
        if self._engine is not None:
            return self._engine
        return await athread_call(self._load)

    async def chat(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        engine = await self._get_engine()
        kwargs = llamacpp.build_kwargs(request, self.spec.model or engine.model_name)
        # After loading: the first token is the engine's latency.
        watch = GenerationWatch.for_backend(deadline, self.spec)
        # Set when this call is abandoned (a cancelled task): the engine stops at its next token.
        cancel = threading.Event()
        try:
            data = await athread_call(lambda: engine.complete(kwargs, self.name, watch, cancel))
        finally:
            cancel.set()
        return llamacpp.to_completion(data)

    async def chat_stream(
        self, request: ChatRequest, deadline: Deadline
    ) -> AsyncThreadIterator[ChatCompletionChunk]:
        engine = await self._get_engine()
        kwargs = llamacpp.build_kwargs(request, self.spec.model or engine.model_name)
        # After loading: the first token is the engine's latency.
        watch = GenerationWatch.for_backend(deadline, self.spec)

        def generate(cancel: threading.Event) -> Iterator[ChatCompletionChunk]:
            for data in engine.stream(kwargs, cancel, self.name, watch):
                yield llamacpp.to_chunk(data)

        return athread_iter(generate)

    def _load_embedder(self) -> llamacpp_embed.LlamaEmbedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = llamacpp_embed.acquire_embedder(self.spec)
            return self._embedder

    async def embed(self, request: EmbeddingRequest, deadline: Deadline) -> CreateEmbeddingResponse:
        """One pooled, normalised vector per input (``llamacpp_embed``), off the event loop
        (a worker thread) where there is one."""
        embedder = self._embedder
        if embedder is None:
            embedder = await athread_call(self._load_embedder)
        vectors, tokens = await athread_call(lambda: embedder.embed(request.input, self.name))
        model = self.spec.model or request.model or embedder.model_name
        return from_vectors(vectors, model, tokens)

    async def list_models(self, deadline: Deadline) -> ModelList:
        return llamacpp.model_list(await self._get_engine())

    async def health(self, deadline: Deadline) -> None:
        """An in-process engine is healthy once it has loaded."""
        await self._get_engine()

    async def aclose(self) -> None:
        with self._lock:
            engine, self._engine = self._engine, None
            embedder, self._embedder = self._embedder, None
        if engine is not None:
            llamacpp.release_engine(engine)
        if embedder is not None:
            llamacpp_embed.release_embedder(embedder)
