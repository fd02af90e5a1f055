"""A streamed chat response that fails over until its first content reaches the caller."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING

from llmrouter._accumulate import ChunkAccumulator
from llmrouter.errors import BackendError, StreamInterruptedError
from llmrouter.route import Attempt, Route
from llmrouter.types import ChatCompletionChunk

if TYPE_CHECKING:
    from llmrouter._async.router import AsyncRouter, Opening

__all__ = ["AsyncStream"]


class AsyncStream:
    """Iterate with ``async for``; use as ``async with`` so the connection is always released.

    ``route`` says which backend is serving and every attempt so far. Before any content has
    been handed over, a failing backend is replaced by the next one in the chain; after that, a
    failure raises :class:`StreamInterruptedError` with the partial output.
    """

    __slots__ = ("_acc", "_closed", "_opening", "_router", "_started")

    def __init__(self, router: AsyncRouter, opening: Opening) -> None:
        self._router = router
        self._opening = opening
        self._acc = ChunkAccumulator()
        self._closed = False
        self._started = time.monotonic()

    @property
    def route(self) -> Route:
        """Which backend serves this stream, and the attempts made."""
        return self._opening.route

    @property
    def text(self) -> str:
        """The content (choice 0) delivered so far."""
        return self._acc.text

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        while True:
            if self._closed:
                raise StopAsyncIteration
            try:
                chunk = await self._opening.source.__anext__()
            except StopAsyncIteration:
                self._finish(None)
                raise
            except BackendError as exc:
                await self._recover(exc)
                continue
            self._acc.add(chunk)
            return chunk

    async def _recover(self, exc: BackendError) -> None:
        """Fail over if the caller has seen nothing yet; otherwise report the interruption."""
        await self._opening.source.aclose()
        if self._acc.delivered:
            self._finish(exc)
            raise StreamInterruptedError(
                f"stream interrupted after {len(self._acc.text)} characters: {exc.message}",
                backend=self._opening.backend.name,
                partial_text=self._acc.text,
                partial_tool_calls=self._acc.tool_call_list(),
            ) from exc
        try:
            self._opening = await self._router.reopen(self._opening, exc)
        except BaseException:
            self._closed = True
            raise

    def _finish(self, error: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        opening = self._opening
        opening.route.attempts.append(
            Attempt(opening.backend.name, error, time.monotonic() - opening.started)
        )

    async def aclose(self) -> None:
        """Stop the stream and release its connection (or stop the local engine)."""
        if not self._closed:
            self._finish(None)
            await self._opening.source.aclose()

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
