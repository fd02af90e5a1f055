"""What every SSE-framed chunk decoder shares: framing, the done/finished flags, the end check.

A codec's ``ChunkDecoder`` subclasses :class:`SSEChunkDecoder` and writes ``parse`` (one event
-> one chunk or ``None``), setting ``_done`` when the protocol's terminator is parsed and
``_finished`` when a finish reason arrives (see ``ADDING_A_BACKEND.md``).
"""

from __future__ import annotations

from llmrouter._decoders import SSEDecoder
from llmrouter.config import BackendSpec
from llmrouter.errors import BackendConnectionError

__all__ = ["SSEChunkDecoder"]


class SSEChunkDecoder:
    """Base class: SSE framing and the end-of-stream bookkeeping (protocol-neutral)."""

    __slots__ = ("_done", "_finished", "_spec", "_sse")

    #: How the protocol ends a stream and says an answer is finished (for error messages).
    TERMINATOR = "[DONE]"
    FINISH = "finish_reason"

    def __init__(self, spec: BackendSpec) -> None:
        self._spec = spec
        self._sse = SSEDecoder()
        self._done = False
        self._finished = False

    @property
    def done(self) -> bool:
        """The terminator was parsed: the stream is complete."""
        return self._done

    @property
    def finished(self) -> bool:
        """A finish reason was seen: the answer is whole even if the terminator never comes."""
        return self._finished or self._done

    def feed(self, data: bytes) -> list[bytes]:
        """Frame more body bytes into events (not parsed yet)."""
        return self._sse.feed(data)

    def close(self) -> list[bytes]:
        """The body ended: the last event it held, if it lacked its blank line."""
        return self._sse.close()

    def check_end(self) -> None:
        """Every event is parsed and the body is over: complain if the answer was cut short."""
        if not self._done and not self._finished:
            raise BackendConnectionError(
                f"stream ended before {self.TERMINATOR} and before any {self.FINISH}",
                backend=self._spec.name,
            )
