"""Drives a plain Python function as a backend (``backends/function.py``): in a worker thread
on the async client, in the caller's thread on the sync one."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from llmrouter._concurrency import (
    AsyncThreadIterator,
    GenerationWatch,
    athread_call,
    athread_iter,
)
from llmrouter._request import ChatRequest
from llmrouter.backends import function
from llmrouter.config import BackendSpec
from llmrouter.policy import Deadline
from llmrouter.types import ChatCompletion, ChatCompletionChunk, ModelList

__all__ = ["AsyncFunctionBackend"]


class AsyncFunctionBackend:
    """``Client(backends=[my_function])``: the function answers in this process."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.max_context: int | None = spec.max_context

    async def chat(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        watch, cancel = GenerationWatch.for_backend(deadline, self.spec), threading.Event()

        def run() -> ChatCompletion:
            parts = function.pieces(self.spec, request, watch, cancel)
            return function.completion(self.spec, request, parts)

        try:
            return await athread_call(run)
        finally:
            cancel.set()  # a cancelled caller: the function stops at its next piece

    async def chat_stream(
        self, request: ChatRequest, deadline: Deadline
    ) -> AsyncThreadIterator[ChatCompletionChunk]:
        watch = GenerationWatch.for_backend(deadline, self.spec)

        def generate(cancel: threading.Event) -> Iterator[ChatCompletionChunk]:
            parts = function.pieces(self.spec, request, watch, cancel)
            yield from function.to_chunks(self.spec, request, parts)

        return athread_iter(generate)

    async def list_models(self, deadline: Deadline) -> ModelList:
        return function.model_list(self.spec)

    async def health(self, deadline: Deadline) -> None:
        """A function is always there."""

    async def aclose(self) -> None:
        """Nothing to release."""
