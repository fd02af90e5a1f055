"""Hedged requests (async only, opt-in): after a delay, ask the next backend too.

``AsyncClient(hedge=0.5)`` (or ``hedge="p95"``: the p95 of recently observed times to first
token) sends the same request to the next untried backend when the first has not answered
within the delay. The first to answer wins (for a stream: the first to produce content); the
other is cancelled and its connection closed. Hedges spend the retry budget, so they cannot
multiply load during an outage. The sync client has no hedging: it would need a thread per
attempt, which is exactly the cost the sync client exists to avoid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from llmrouter._request import ChatRequest
from llmrouter.errors import BackendError, ConfigError
from llmrouter.events import Event
from llmrouter.types import ChatCompletion, ChatCompletionChunk

if TYPE_CHECKING:
    import asyncio

    from llmrouter._async.router import AsyncChunkSource, AsyncRouter, Execution, Try
    from llmrouter._async.stream import AsyncStream

__all__ = [
    "acheck_hedge",
    "ahedged_chat",
    "ahedged_stream",
    "check_hedge",
    "hedged_chat",
    "hedged_stream",
]


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

    async def __anext__(self) -> ChatCompletionChunk:
        if self._buffer:
            return self._buffer.pop(0)
        return await self._source.__anext__()

    async def aclose(self) -> None:
        await self._source.aclose()


async def _race(router: AsyncRouter, ex: Execution[object], attempt: Any) -> tuple[Try, Any]:
    """Run ``attempt(try)`` on the chain, hedging once after the delay; return the winner."""
    import asyncio

    running: dict[asyncio.Future[Any], Try] = {}

    async def launch() -> None:
        member = await router._next(ex)
        t = router._begin(ex, member)
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
                if router.budget.try_spend():
                    router.events.emit(Event("hedge", elapsed_s=router.now() - ex.started,
                                             detail=f"after {timeout:.3f} s"))  # fmt: skip
                    await launch()
                continue
            for future in done:
                t = running.pop(future)
                error = future.exception()
                if error is None:
                    return t, future.result()
                if not isinstance(error, BackendError):
                    raise error
                router._failed(ex, t, error)
            if not running:
                await launch()
    finally:
        for future in running:
            future.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
            for t in running.values():
                router.cancelled(ex, t)


async def ahedged_chat(router: AsyncRouter, request: ChatRequest) -> ChatCompletion:
    """``chat`` with hedging."""
    ex = router._start(request)

    async def attempt(t: Try) -> ChatCompletion:
        return await t.member.backend.chat(request, t.deadline)

    t, completion = await _race(router, ex, attempt)
    router._succeeded(ex, t)
    router.observe_latency(router.now() - t.started)
    completion.route = ex.route
    return completion  # type: ignore[no-any-return]


async def ahedged_stream(router: AsyncRouter, request: ChatRequest) -> AsyncStream:
    """``stream`` with hedging: the race is to the first content chunk."""
    from llmrouter._async.stream import AsyncStream

    ex = router._start(request)

    async def attempt(t: Try) -> _Prefetched:
        source = await t.member.backend.chat_stream(request, t.deadline)
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


def check_hedge(hedge: object) -> None:
    """The sync client has no hedging (see the module docstring)."""
    if hedge is not None:
        raise ConfigError("hedged requests need AsyncClient (hedge= is async-only)")


def hedged_chat(router: object, request: ChatRequest) -> NoReturn:
    """Unreachable: the sync client refuses ``hedge=``."""
    raise ConfigError("hedged requests need AsyncClient")


def hedged_stream(router: object, request: ChatRequest) -> NoReturn:
    """Unreachable: the sync client refuses ``hedge=``."""
    raise ConfigError("hedged requests need AsyncClient")
