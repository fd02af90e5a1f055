"""A streamed chat response that fails over until its first content reaches the caller.

What happens after a failure is decided by :mod:`llmrouter.execution`; the stream records what
it saw there and asks its opener (the router) for the next backend's stream.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Protocol

from llmrouter._accumulate import ChunkAccumulator
from llmrouter.backends.interfaces import AsyncChunkSource
from llmrouter.errors import BackendError, StreamInterruptedError
from llmrouter.execution import Execution, Try, first_content, record
from llmrouter.route import Route
from llmrouter.types import ChatCompletionChunk

__all__ = ["AsyncStream", "AsyncStreamOpener"]


class AsyncStreamOpener(Protocol):
    """What a stream needs of its router: the next backend's stream, after a failure."""

    async def open_stream(self, ex: Execution[Any]) -> tuple[Try[Any], AsyncChunkSource]: ...

    # if async
    def observe_latency(self, seconds: float) -> None: ...

    # endif


class AsyncStream:
    """Iterate with ``async for``; use as ``async with`` so the connection is always released.

    ``route`` says which backend is serving and every attempt so far. Until content has been
    handed over, a failing backend (refused, 5xx, stalled, cut, malformed) is replaced by the
    next one in the chain; after that, a failure raises :class:`StreamInterruptedError` with
    the partial output, never a raw transport error and never a silently truncated answer.
    """

    __slots__ = ("_acc", "_closed", "_ex", "_router", "_source", "_try")

    def __init__(
        self,
        router: AsyncStreamOpener,
        ex: Execution[Any],
        attempt: Try[Any],
        source: AsyncChunkSource,
    ) -> None:
        self._router = router
        self._ex = ex
        self._try = attempt
        self._source = source
        self._acc = ChunkAccumulator()
        self._closed = False

    @property
    def route(self) -> Route:
        """Which backend serves this stream, and the attempts made."""
        return self._ex.route

    @property
    def text(self) -> str:
        """The content (choice 0) delivered so far."""
        return self._acc.text

    def http_exchange(self) -> tuple[int, dict[str, str]] | None:
        """The HTTP status and headers of the serving attempt's response; ``None`` for an
        in-process backend (``with_raw_response`` reads them)."""
        exchange = getattr(self._source, "http_exchange", None)
        return exchange() if exchange is not None else None

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        while True:
            if self._closed:
                raise StopAsyncIteration
            try:
                chunk = await self._source.__anext__()
            except StopAsyncIteration:
                self._finish()
                await self._source.aclose()  # finish the HTTP exchange: the connection is reused
                raise
            except BackendError as exc:
                await self._recover(exc)
                continue
            if not self._acc.delivered:
                self._acc.add(chunk)
                if self._acc.delivered:  # the first content: time to first token
                    # if async
                    self._router.observe_latency(self._ex.clock() - self._try.started)
                    # endif
                    first_content(self._ex, self._try)
                return chunk
            self._acc.add(chunk)
            return chunk

    async def _recover(self, exc: BackendError) -> None:
        """Fail over if the caller has seen nothing yet; otherwise report the interruption."""
        await self._source.aclose()
        if self._acc.delivered:
            self._closed = True
            record(self._ex, self._try, exc, after_content=True)
            raise StreamInterruptedError(
                f"stream interrupted after {len(self._acc.text)} characters: {exc.message}",
                backend=self._try.member.name,
                partial_text=self._acc.text,
                partial_tool_calls=self._acc.tool_call_list(),
            ) from exc
        try:
            record(self._ex, self._try, exc)
            self._try, self._source = await self._router.open_stream(self._ex)
        except BaseException:
            self._closed = True
            raise

    def _finish(self) -> None:
        if not self._closed:
            self._closed = True
            record(self._ex, self._try, response=self._acc)

    async def aclose(self) -> None:
        """Stop the stream and release its connection (or stop the local engine)."""
        if not self._closed:
            self._finish()
            await self._source.aclose()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backend={self.route.backend!r}>"
