"""Streams passed through: the rest of an OpenAI SSE stream relayed as the backend's bytes.

Until a stream's first content the gateway reads it as parsed chunks (``streaming``), because
until then the client's :class:`~llmrouter.AsyncStream` may still fail over. After that nothing
can fail over any more, and when the serving backend speaks OpenAI's SSE (the
``openai_compat`` codec: ``http``, ``https``, ``openai``, ``vllm``, ``llamacpp``) there is no
need to turn each event into a model and back into JSON: :func:`take_over` detaches the
stream's HTTP chunk source, and :func:`pump_raw` relays its events as they came, all the events
of one network read in one write.

What is still looked at, cheaply (a substring or short regex per event):

* an event with a non-null ``finish_reason`` or ``usage`` is parsed (one or two per stream), so
  the token counts for the limits and metrics are the backend's own, and the end is checked;
* an event that mentions ``"error"`` is parsed through the chunk source, which raises the typed,
  secret-scrubbed error for an ``{"error": ...}`` event; the gateway then ends the stream with
  the same error event and ``[DONE]`` as for a parsed stream;
* ``[DONE]``, the total deadline, a body cut before the answer finished
  (``BackendConnectionError``, the same checks as the chunk source) end the relay;
* other events count one output chunk each when they carry non-empty ``content`` (the token
  estimate when the backend sends no usage).

This reaches into the router's stream and the HTTP chunk source (private attributes): the
router has no public "detach the raw source" hook yet. :func:`take_over` checks every attribute
it needs and returns ``None`` when anything is not as expected (another codec, an in-process
engine, a refactored stream), and the gateway then relays parsed chunks as before.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from llmrouter.errors import BackendError, StreamInterruptedError

if TYPE_CHECKING:
    from aiohttp import web

    from llmrouter._async.stream import AsyncStream
    from llmrouter.server.streaming import StreamTally

__all__ = ["RawTail", "pump_raw", "take_over"]

_FINISH = re.compile(rb'"finish_reason"\s*:\s*"')
_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_CONTENT = re.compile(rb'"content"\s*:\s*"[^"]')
_STREAM_ATTRS = ("_source", "_recover", "_closed", "_acc")
_SOURCE_ATTRS = ("_pending", "_decoder", "_eof", "_closed", "_read")


class RawTail:
    """An :class:`AsyncStream` after its first content, with its chunk source detached."""

    __slots__ = ("chunks", "source", "stream")

    def __init__(self, stream: AsyncStream, source: Any) -> None:
        self.stream = stream
        self.source = source
        self.chunks = 0

    async def interrupted(self, exc: BackendError) -> None:
        """Fail the stream as it fails itself after content: the route records the failure,
        and :class:`~llmrouter.StreamInterruptedError` (with the text before passthrough) is
        raised."""
        stream: Any = self.stream
        await stream._recover(exc)  # after content it always raises
        raise StreamInterruptedError(exc.message, backend=exc.backend) from exc


def take_over(stream: AsyncStream) -> RawTail | None:
    """The stream's OpenAI SSE chunk source, to relay raw; ``None`` when it is not one."""
    if not all(hasattr(stream, a) for a in _STREAM_ATTRS) or getattr(stream, "_closed", True):
        return None
    source = getattr(stream, "_source", None)
    if source is None or not all(hasattr(source, a) for a in _SOURCE_ATTRS):
        return None
    from llmrouter.backends.openai_compat import ChunkDecoder

    if type(source._decoder) is not ChunkDecoder:
        return None
    return RawTail(stream, source)


def _frame(event: bytes) -> bytes:
    if b"\n" in event:  # a multi-line data field: one data: line each (the SSE spec, 9.2.6)
        event = event.replace(b"\n", b"\ndata: ")
    return b"data: " + event + b"\n\n"


async def pump_raw(tail: RawTail, response: web.StreamResponse, tally: StreamTally) -> None:
    """Relay the rest of the stream to ``response`` as the backend sent it.

    Raises:
        StreamInterruptedError: the backend failed, cut the stream, or sent an error event.
        ConnectionError: the client left.
    """
    source = tail.source
    decoder = source._decoder
    pending = source._pending
    accumulated = tail.stream._acc
    out: list[bytes] = []
    try:
        while True:
            while pending:
                event: bytes = pending.popleft()
                if event.startswith(b"[DONE]"):
                    decoder.parse(event)  # marks the decoder done: the exchange is whole
                    continue
                if decoder.done:
                    continue
                if b'"error"' in event or _FINISH.search(event) or _USAGE.search(event):
                    pending.appendleft(event)  # the source parses it: typed, scrubbed errors
                    parsed = await source.__anext__()
                    tally.add(parsed)
                    accumulated.add(parsed)  # the usage and finish reason the route reports
                elif _CONTENT.search(event):
                    tally.chunks += 1
                out.append(_frame(event))
                tail.chunks += 1
            if out:
                await response.write(b"".join(out))
                out.clear()
            if source._eof or decoder.done or source._closed:
                if not decoder.finished and not source._closed:
                    await source.aclose()
                    decoder.check_end()
                break
            await source._read()
    except BackendError as exc:
        if out:  # what came before the failure in the same read still goes out
            await response.write(b"".join(out))
        await tail.interrupted(exc)
    await tail.stream.aclose()  # the route records success; the connection is reused
