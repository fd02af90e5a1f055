"""Drives vLLM in this process (``vllm+local://``): the engine runs on its own event loop
thread (``backends/vllm_engine.py``); this client awaits work there, so the async and the sync
client share one engine. The request's deadlines go with each request as a
:class:`GenerationWatch`: the engine aborts the request when one passes."""

from __future__ import annotations

import threading

from llmrouter._concurrency import (
    AsyncLoopIterator,
    GenerationWatch,
    aloop_call,
    aloop_iter,
    athread_call,
)
from llmrouter._embed import EmbeddingRequest, from_vectors
from llmrouter._request import ChatRequest
from llmrouter.backends import vllm_embed, vllm_engine
from llmrouter.config import BackendSpec
from llmrouter.embeddings import CreateEmbeddingResponse, EmbedLimits
from llmrouter.policy import Deadline
from llmrouter.types import ChatCompletion, ChatCompletionChunk, ModelList

__all__ = ["AsyncVLLMBackend"]


class AsyncVLLMBackend:
    """A ``vllm+local://`` backend; the engine starts on first use and is shared per process."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self._engine: vllm_engine.VLLMEngine | None = None
        self._lock = threading.Lock()
        #: The context window: declared, else the engine's max_model_len.
        self.max_context: int | None = spec.max_context
        #: What one embeddings request may carry (``llmrouter.backends.vllm_embed``).
        self.embed_limits: EmbedLimits = vllm_embed.LIMITS

    def _load(self) -> vllm_engine.VLLMEngine:
        with self._lock:
            if self._engine is None:
                self._engine = vllm_engine.acquire_engine(self.spec)
                if self.max_context is None:
                    self.max_context = self._engine.max_model_len
            return self._engine

    async def _get_engine(self) -> vllm_engine.VLLMEngine:
        if self._engine is not None and not self._engine.dead:
            return self._engine
        if self._engine is not None:  # died: the next acquire starts a fresh one
            await self.aclose()
        return await athread_call(self._load)

    def _plan(self, engine: vllm_engine.VLLMEngine, request: ChatRequest) -> vllm_engine.Plan:
        model = self.spec.model or request.model or engine.model_name
        return vllm_engine.build_plan(request, model, engine.max_model_len)

    async def chat(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        engine = await self._get_engine()
        plan = self._plan(engine, request)
        # After starting: the first token is the engine's latency.
        watch = GenerationWatch.for_backend(deadline, self.spec)
        return await aloop_call(engine.loop, lambda: engine.complete(plan, self.name, watch))

    async def chat_stream(
        self, request: ChatRequest, deadline: Deadline
    ) -> AsyncLoopIterator[ChatCompletionChunk]:
        engine = await self._get_engine()
        plan = self._plan(engine, request)
        watch = GenerationWatch.for_backend(deadline, self.spec)
        return aloop_iter(engine.loop, lambda: engine.stream(plan, self.name, watch))

    async def embed(self, request: EmbeddingRequest, deadline: Deadline) -> CreateEmbeddingResponse:
        """Vectors from vLLM's pooling runner (an embedding model, or ``?runner=pooling``)."""
        engine = await self._get_engine()
        watch = GenerationWatch.for_backend(deadline, self.spec)
        vectors, tokens = await aloop_call(
            engine.loop,
            lambda: vllm_embed.embed(engine, request.input, request.dimensions, self.name, watch),
        )
        model = self.spec.model or request.model or engine.model_name
        return from_vectors(vectors, model, tokens)

    async def list_models(self, deadline: Deadline) -> ModelList:
        engine = await self._get_engine()
        return vllm_engine.model_list(engine, self.spec.model or engine.model_name)

    async def health(self, deadline: Deadline) -> None:
        """An in-process engine is healthy once it has started and while it lives."""
        engine = await self._get_engine()
        await aloop_call(engine.loop, engine.check_health)

    async def aclose(self) -> None:
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            vllm_engine.release_engine(engine)
