"""Relaying a chat stream as Server-Sent Events, with failover until the first content.

The HTTP status is committed as late as possible: chunks are held back until the first one
that carries output (content, a tool call, reasoning) or the end of the stream, because until
then the client's :class:`~llmrouter.AsyncStream` may still fail over, and a failure of every
backend can still be answered with a proper 502/503/504. From the first output on, the 200 and
the held chunks go out, every further chunk is written as it arrives, and a failure becomes an
OpenAI-style error event, ``data: {"error": {...}}``, followed by ``data: [DONE]``.

The pump that copies chunks runs as its own task so a graceful shutdown can cut a stream that
outlives the grace period without cancelling the request handler, which then still writes the
error event and ``[DONE]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from llmrouter._async.stream import AsyncStream
from llmrouter.errors import LLMRouterError
from llmrouter.server.responses import error_body, stream_error_event
from llmrouter.types import ChatCompletionChunk

__all__ = ["DONE", "SSE_HEADERS", "StreamTally", "has_output", "relay"]

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}
SHUTDOWN_EVENT = (
    b"data: "
    + error_body(
        "the gateway is shutting down: the stream was cut after the grace period",
        "service_unavailable",
        code="shutting_down",
    )
    + b"\n\n"
)


def has_output(chunk: ChatCompletionChunk) -> bool:
    """Whether a chunk hands the caller output (after which a stream can no longer fail over)."""
    for choice in chunk.choices:
        delta = choice.delta
        if delta.content or delta.tool_calls:
            return True
        extra = delta.model_extra
        if extra and (extra.get("reasoning") or extra.get("reasoning_content")):
            return True
    return False


def encode(chunk: ChatCompletionChunk) -> bytes:
    """One chunk as an SSE event: the JSON the backend sent."""
    return b"data: " + chunk.model_dump_json(exclude_unset=True).encode() + b"\n\n"


class StreamTally:
    """What went through a stream: output chunks, usage when the backend sent it, the text."""

    __slots__ = ("chunks", "completion_tokens", "keep_text", "parts", "prompt_tokens")

    def __init__(self, keep_text: bool) -> None:
        self.keep_text = keep_text
        self.chunks = 0
        self.parts: list[str] = []
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None

    def add(self, chunk: ChatCompletionChunk) -> None:
        if chunk.usage is not None:
            self.prompt_tokens = chunk.usage.prompt_tokens
            self.completion_tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            content = choice.delta.content
            if content:
                self.chunks += 1
                if self.keep_text and choice.index == 0:
                    self.parts.append(content)

    @property
    def output_tokens(self) -> int:
        """The backend's count when it sent usage, else one token per content chunk."""
        return self.completion_tokens if self.completion_tokens is not None else self.chunks


async def _pump(stream: AsyncStream, response: web.StreamResponse, tally: StreamTally) -> None:
    async for chunk in stream:
        tally.add(chunk)
        await response.write(encode(chunk))


async def relay(
    stream: AsyncStream,
    response: web.StreamResponse,
    tally: StreamTally,
    live: set[asyncio.Task[None]],
    cut: set[asyncio.Task[None]],
    pump: Coroutine[Any, Any, None] | None = None,
) -> str | None:
    """Copy the rest of ``stream`` to the prepared ``response``, then end it.

    Args:
        pump: what copies it (default: parsed chunks, re-encoded; the gateway passes
            ``passthrough.pump_raw`` for an OpenAI SSE backend).
        live: where the pump task is registered while it runs (the gateway's shutdown cuts it).
        cut: the pump tasks the gateway has cut; their stream ends with a shutdown error event.

    Returns:
        the error class that ended the stream early, or ``None`` when it completed.
    """
    task = asyncio.ensure_future(pump or _pump(stream, response, tally))
    live.add(task)
    error: str | None = None
    tail: Any = DONE
    try:
        await task
    except asyncio.CancelledError:
        if task not in cut:
            raise  # the handler itself was cancelled
        error, tail = "ShutdownCut", SHUTDOWN_EVENT + DONE
    except LLMRouterError as exc:
        error, tail = type(exc).__name__, stream_error_event(exc) + DONE
    except ConnectionError:
        return "ClientDisconnected"  # nobody is left to tell
    finally:
        live.discard(task)
        cut.discard(task)
    try:
        await response.write(tail)
        await response.write_eof()
    except ConnectionError:
        return error or "ClientDisconnected"
    return error
