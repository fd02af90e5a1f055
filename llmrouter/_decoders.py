"""Incremental stream decoders: ``feed(bytes) -> events``, no I/O, any split of the input.
(The AWS event-stream decoder is ``llmrouter.backends._eventstream.EventStreamDecoder``.)

:class:`SSEDecoder` follows the rules in ``shared/protocols/openai-chat.md`` section 3: ``data:``
with or without one space, ``:`` comment lines (keep-alives) ignored, ``event:``/``id:``/
``retry:`` ignored for chat, an event ends at a blank line, CRLF, CR and LF line ends alike.
"""

from __future__ import annotations

__all__ = ["NDJSONDecoder", "SSEDecoder"]


class SSEDecoder:
    """Turns Server-Sent Events bytes into the ``data`` payloads of complete events."""

    __slots__ = ("_buffer", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the data of every event they complete, in order."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            # A CR at the very end may be the first half of a CRLF split across reads.
            held = buffer.endswith(b"\r")
            if held:
                buffer = buffer[:-1]
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if held:
                buffer += b"\r"
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data = self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value[:1] == b" " else value)
            # Comments (":") and event:/id:/retry: fields carry nothing for chat.
        return events

    def close(self) -> list[bytes]:
        """End of input: the data of a last event that lacked its blank line, if any.

        A final line without its newline is incomplete and is dropped, as the SSE spec says.
        """
        data, self._data, self._buffer = self._data, [], b""
        return [b"\n".join(data)] if data else []


class NDJSONDecoder:
    """Turns newline-delimited JSON bytes into complete, non-blank lines (not parsed)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return every complete non-blank line they finish, in order."""
        buffer = self._buffer + chunk if self._buffer else chunk
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        return [line for line in lines if line.strip()]

    def close(self) -> list[bytes]:
        """End of input: the last line if it lacked its newline (it may be cut short: the
        caller's parser decides)."""
        rest, self._buffer = self._buffer.strip(), b""
        return [rest] if rest else []
