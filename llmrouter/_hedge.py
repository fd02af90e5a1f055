"""Hedged requests (async only, opt-in): after a delay, ask the next backend too.

``AsyncClient(hedge=0.5)`` (or ``hedge="p95"``: the p95 of recently observed times to first
token) sends the same request to the next untried backend when the first has not answered
within the delay. The first to answer wins (for a stream: the first to produce content); the
other is cancelled and its connection closed. Hedges spend the retry budget, so they cannot
multiply load during an outage.

The sync client has no hedging: it would need a thread per attempt, which is exactly the cost
the sync client exists to avoid. ``scripts/unasync.py`` leaves the hedging code out of
``_sync/`` altogether (its ``# if async`` blocks), so ``Client`` has no ``hedge=`` at all.

Like the router, this module only performs steps: :mod:`llmrouter.execution` decides which
backend is called, whether a failure ends the race, and whether the budget allows the hedge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from llmrouter._async.stream import AsyncStream, AsyncStreamOpener
from llmrouter._request import ChatRequest
from llmrouter.backends.interfaces import AsyncChunkSource
from llmrouter.errors import BackendError, ConfigError, InvalidRequestError
from llmrouter.execution import Execution, Try, cancelled, hedge, record
from llmrouter.types import ChatCompletion, ChatCompletionChunk

__all__ = ["AsyncHedgingRouter", "acheck_hedge", "ahedged_chat", "ahedged_stream"]

T = TypeVar("T")


class AsyncHedgingRouter(AsyncStreamOpener, Protocol):
    """What hedging needs of the router: executions, their next call, and the delay."""

    def start(self, request: ChatRequest) -> Execution[Any]: ...

    async def next_call(self, ex: Execution[Any]) -> Try[Any]: ...

    def hedge_delay(self) -> float: ...


def _has_content(chunk: ChatCompletionChunk) -> bool:
    return any(
        c.delta.content or c.delta.tool_calls or c.finish_reason is not None for c in chunk.choices
    )


class _Prefetched:
    """A stream source whose first chunks were read while racing; they are replayed first."""

    __slots__ = ("_buffer", "_source")

    def __init__(self, buffer: list[ChatCompletionChunk], source: AsyncChunkSource) -> None:
        self._buffer = buffer
        self._source = source

    def __aiter__(self) -> _Prefetched:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        if self._buffer:
            return self._buffer.pop(0)
        return await self._source.__anext__()

    async def aclose(self) -> None:
        await self._source.aclose()


async def _race(
    router: AsyncHedgingRouter,
    ex: Execution[Any],
    attempt: Callable[[Try[Any]], Awaitable[T]],
) -> tuple[Try[Any], T]:
    """Run ``attempt(try)`` on the chain, hedging once after the delay; return the winner."""
    running: dict[asyncio.Future[T], Try[Any]] = {}

    async def launch() -> None:
        t = await router.next_call(ex)
        running[asyncio.ensure_future(attempt(t))] = t

    await launch()
    hedged = False
    try:
        while True:
            timeout = None
            if not hedged and len(running) == 1 and ex.pending:
                timeout = router.hedge_delay()
            done, _ = await asyncio.wait(
                running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                hedged = True
                if timeout is not None and hedge(ex, timeout):
                    await launch()
                continue
            for future in done:
                t = running.pop(future)
                error = future.exception()
                if error is None:
                    return t, future.result()
                if not isinstance(error, (BackendError, InvalidRequestError)):
                    raise error
                verdict = record(ex, t, error)
                if verdict is not None:
                    raise verdict.error
            if not running:
                await launch()
    finally:
        for future in running:
            future.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
            for t in running.values():
                cancelled(ex, t)


async def ahedged_chat(router: AsyncHedgingRouter, request: ChatRequest) -> ChatCompletion:
    """``chat`` with hedging."""
    ex = router.start(request)

    async def attempt(t: Try[Any]) -> ChatCompletion:
        completion: ChatCompletion = await t.member.backend.chat(request, t.deadline)
        return completion

    t, completion = await _race(router, ex, attempt)
    record(ex, t, response=completion)
    router.observe_latency(ex.clock() - t.started)
    completion.route = ex.route
    return completion


async def ahedged_stream(router: AsyncHedgingRouter, request: ChatRequest) -> AsyncStream:
    """``stream`` with hedging: the race is to the first content chunk."""
    ex = router.start(request)

    async def attempt(t: Try[Any]) -> _Prefetched:
        source: AsyncChunkSource = await t.member.backend.chat_stream(request, t.deadline)
        buffer: list[ChatCompletionChunk] = []
        try:
            while not buffer or not _has_content(buffer[-1]):
                buffer.append(await source.__anext__())
        except StopAsyncIteration:
            pass
        except BaseException:
            await source.aclose()
            raise
        return _Prefetched(buffer, source)

    t, source = await _race(router, ex, attempt)
    ex.route.backend = t.member.name
    return AsyncStream(router, ex, t, source)


def acheck_hedge(hedge: object) -> None:
    """Validate ``AsyncClient(hedge=...)``."""
    if hedge is None or hedge == "p95":
        return
    if isinstance(hedge, bool) or not isinstance(hedge, (int, float)) or hedge < 0:
        raise ConfigError(f"hedge={hedge!r}: expected a delay in seconds, 'p95' or None")
