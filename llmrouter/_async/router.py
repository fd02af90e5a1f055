"""Runs a request along the backend chain: one attempt per backend, failing over in order.

The decisions (does this error fail over? how much time is left?) are pure functions in
``llmrouter.policy``; this module only performs them.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from llmrouter._async.http_backend import AsyncHTTPBackend
from llmrouter._async.local_backend import AsyncLocalBackend
from llmrouter._async.stream import AsyncStream
from llmrouter._http import AsyncHTTPTransport
from llmrouter._request import ChatRequest
from llmrouter.config import BackendSpec, Timeouts
from llmrouter.errors import AllBackendsFailedError, BackendError
from llmrouter.policy import Deadline, fails_over
from llmrouter.route import Attempt, Route
from llmrouter.types import ChatCompletion, ChatCompletionChunk, Model, ModelList

__all__ = ["AsyncChunkSource", "AsyncRouter", "Opening"]

logger = logging.getLogger("llmrouter")


def _log_failure(backend: str, error: BackendError, moving_on: bool) -> None:
    # Backend names are redacted URLs and error messages never hold keys (errors.py).
    if logger.isEnabledFor(logging.INFO):
        action = "failing over" if moving_on else "giving up"
        logger.info("%s failed (%s: %s); %s", backend, type(error).__name__, error.message, action)

AsyncBackend = AsyncHTTPBackend | AsyncLocalBackend


class AsyncChunkSource(Protocol):
    """What a backend's open stream offers: the next chunk, and a way to stop."""

    async def __anext__(self) -> ChatCompletionChunk: ...

    async def aclose(self) -> None: ...


# Wire protocol -> codec module, imported when a backend of that kind is first built.
_CODECS = {"openai_compat": "llmrouter.backends.openai_compat"}


def _make_backend(spec: BackendSpec, transport: AsyncHTTPTransport) -> AsyncBackend:
    if spec.kind == "llamacpp":
        return AsyncLocalBackend(spec)
    return AsyncHTTPBackend(spec, transport, importlib.import_module(_CODECS[spec.kind]))


@dataclass(slots=True)
class Opening:
    """A stream being served: by which backend, from which source, since when."""

    backend: AsyncBackend
    source: AsyncChunkSource
    route: Route
    request: ChatRequest
    deadline: Deadline
    remaining: Iterator[AsyncBackend]
    started: float


class AsyncRouter:
    """The backends of one client, in failover order."""

    def __init__(
        self, chain: list[list[BackendSpec]], transport: AsyncHTTPTransport, timeout: float | None
    ) -> None:
        self.backends: list[AsyncBackend] = [
            _make_backend(spec, transport) for group in chain for spec in group
        ]
        self._transport = transport
        self._timeout = Timeouts().total if timeout is None else timeout

    def _deadline(self, request: ChatRequest) -> Deadline:
        return Deadline(request.timeout if request.timeout is not None else self._timeout)

    @staticmethod
    def _give_up(route: Route) -> BaseException:
        errors = [a.error for a in route.attempts if a.error is not None]
        if len(route.attempts) == 1 and errors:
            return errors[0]
        return AllBackendsFailedError(route.attempts)

    async def chat(self, request: ChatRequest) -> ChatCompletion:
        deadline = self._deadline(request)
        route = Route()
        for backend in self.backends:
            started = time.monotonic()
            attempt_deadline = Deadline(deadline.cap(backend.spec.timeouts.total))
            try:
                completion = await backend.chat(request, attempt_deadline)
            except BackendError as exc:
                route.attempts.append(Attempt(backend.name, exc, time.monotonic() - started))
                _log_failure(backend.name, exc, fails_over(exc))
                if not fails_over(exc):
                    raise
                if deadline.expired():
                    raise self._give_up(route) from None
                continue
            route.attempts.append(Attempt(backend.name, None, time.monotonic() - started))
            route.backend = backend.name
            completion._route = route
            return completion
        raise self._give_up(route)

    async def _open(
        self,
        request: ChatRequest,
        deadline: Deadline,
        route: Route,
        remaining: Iterator[AsyncBackend],
    ) -> Opening:
        for backend in remaining:
            started = time.monotonic()
            attempt_deadline = Deadline(deadline.cap(backend.spec.timeouts.total))
            try:
                source = await backend.chat_stream(request, attempt_deadline)
            except BackendError as exc:
                route.attempts.append(Attempt(backend.name, exc, time.monotonic() - started))
                _log_failure(backend.name, exc, fails_over(exc))
                if not fails_over(exc):
                    raise
                if deadline.expired():
                    raise self._give_up(route) from None
                continue
            route.backend = backend.name
            return Opening(backend, source, route, request, deadline, remaining, started)
        raise self._give_up(route)

    async def stream(self, request: ChatRequest) -> AsyncStream:
        deadline = self._deadline(request)
        opening = await self._open(request, deadline, Route(), iter(self.backends))
        return AsyncStream(self, opening)

    async def reopen(self, opening: Opening, error: BackendError) -> Opening:
        """The stream failed before any content: record it, and open the next backend."""
        route = opening.route
        route.attempts.append(
            Attempt(opening.backend.name, error, time.monotonic() - opening.started)
        )
        route.backend = ""
        _log_failure(opening.backend.name, error, fails_over(error))
        if not fails_over(error):
            raise error
        if opening.deadline.expired():
            raise self._give_up(route) from error
        return await self._open(opening.request, opening.deadline, route, opening.remaining)

    async def list_models(self) -> ModelList:
        """The union of every reachable backend's models (first backend first)."""
        seen: dict[str, Model] = {}
        route = Route()
        for backend in self.backends:
            started = time.monotonic()
            try:
                models = await backend.list_models(Deadline(backend.spec.timeouts.total))
            except BackendError as exc:
                route.attempts.append(Attempt(backend.name, exc, time.monotonic() - started))
                continue
            route.attempts.append(Attempt(backend.name, None, time.monotonic() - started))
            for model in models.data:
                seen.setdefault(model.id, model)
        if not seen and route.attempts:
            raise self._give_up(route)
        result = ModelList(object="list", data=list(seen.values()))
        result._route = route
        return result

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.aclose()
        await self._transport.aclose()
