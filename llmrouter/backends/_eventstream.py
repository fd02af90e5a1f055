"""The AWS event-stream binary framing (``application/vnd.amazon.eventstream``), pure.

:class:`EventStreamDecoder` turns body bytes, split anywhere, into :class:`Message` values
(headers and payload), checking both CRCs; :func:`encode_message` builds a frame (tests and
fakes use it). The format is ``shared/protocols/sagemaker.md`` section 3 (botocore's
``eventstream.py``)::

    total_length u32 | headers_length u32 | prelude_crc u32 | headers | payload | message_crc u32

All integers are big-endian; ``prelude_crc`` is the CRC-32 of the first 8 bytes and
``message_crc`` the CRC-32 of everything before it. No I/O, no botocore.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["EventStreamDecoder", "EventStreamError", "HeaderValue", "Message", "encode_message"]

# A header value as decoded: bool (types 0/1), int (2-5, and 8: a timestamp in milliseconds
# since the epoch, as botocore returns it), bytes (6, and 9: a UUID's 16 bytes), str (7).
HeaderValue = bool | int | bytes | str

_PRELUDE = 12
_MIN_MESSAGE = 16  # prelude + message CRC, no headers, no payload
_MAX_HEADERS = 128 * 1024  # botocore's limits
_MAX_PAYLOAD = 24 * 1024 * 1024
_INTS = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}


class EventStreamError(ValueError):
    """The bytes are not a valid event stream (bad length, checksum or header)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One event-stream message.

    Attributes:
        headers: header name -> decoded value, in wire order.
        payload: the payload bytes, as sent.
    """

    headers: dict[str, HeaderValue] = field(default_factory=dict)
    payload: bytes = b""

    def header(self, name: str) -> str | None:
        """A string header's value (``:message-type``, ``:event-type``, ...), else ``None``."""
        value = self.headers.get(name)
        return value if isinstance(value, str) else None


def _parse_headers(data: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    pos, end = 0, len(data)
    while pos < end:
        name_len = data[pos]
        pos += 1
        if pos + name_len + 1 > end:
            raise EventStreamError("header name runs past the headers section")
        try:
            name = data[pos : pos + name_len].decode("utf-8")
        except UnicodeDecodeError:
            raise EventStreamError("header name is not UTF-8") from None
        pos += name_len
        kind = data[pos]
        pos += 1
        value: HeaderValue
        if kind in (0, 1):
            value = kind == 0
        elif kind in _INTS:
            fmt = _INTS[kind]
            size = struct.calcsize(fmt)
            if pos + size > end:
                raise EventStreamError(f"header {name!r} value runs past the headers section")
            (value,) = struct.unpack_from(fmt, data, pos)
            pos += size
        elif kind in (6, 7):
            if pos + 2 > end:
                raise EventStreamError(f"header {name!r} length runs past the headers section")
            (length,) = struct.unpack_from(">H", data, pos)
            pos += 2
            if pos + length > end:
                raise EventStreamError(f"header {name!r} value runs past the headers section")
            raw = data[pos : pos + length]
            pos += length
            if kind == 6:
                value = raw
            else:
                try:
                    value = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise EventStreamError(f"header {name!r} is not UTF-8") from None
        elif kind == 9:
            if pos + 16 > end:
                raise EventStreamError(f"header {name!r} value runs past the headers section")
            value = data[pos : pos + 16]
            pos += 16
        else:
            raise EventStreamError(f"header {name!r} has unknown type {kind}")
        if name in headers:
            raise EventStreamError(f"duplicate header {name!r}")
        headers[name] = value
    return headers


class EventStreamDecoder:
    """Incremental decoder: ``feed(bytes) -> [Message, ...]`` for any split of the input.

    A frame that fails its checks breaks the decoder (a stream cannot be resynchronised):
    ``feed`` still returns the messages before it, keeps the error in :attr:`error`, and raises
    it (:class:`EventStreamError`) on every later call.
    """

    __slots__ = ("_buffer", "_error")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._error: EventStreamError | None = None

    @property
    def error(self) -> EventStreamError | None:
        """Why the stream is broken, once a frame failed its checks."""
        return self._error

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet make a whole message (non-zero at the end: truncated)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        """Add body bytes; return every message they complete, in order."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        try:
            while len(buffer) >= _PRELUDE:
                total, headers_len, prelude_crc = struct.unpack_from(">III", buffer, 0)
                if zlib.crc32(buffer[:8]) != prelude_crc:
                    raise EventStreamError(
                        f"prelude checksum mismatch: expected {prelude_crc:#010x}, "
                        f"computed {zlib.crc32(buffer[:8]):#010x}"
                    )
                if headers_len > _MAX_HEADERS:
                    raise EventStreamError(f"headers length {headers_len} exceeds {_MAX_HEADERS}")
                payload_len = total - headers_len - _MIN_MESSAGE
                if payload_len < 0:
                    raise EventStreamError(
                        f"total length {total} is too small for {headers_len} header bytes"
                    )
                if payload_len > _MAX_PAYLOAD:
                    raise EventStreamError(f"payload length {payload_len} exceeds {_MAX_PAYLOAD}")
                if len(buffer) < total:
                    break
                (message_crc,) = struct.unpack_from(">I", buffer, total - 4)
                computed = zlib.crc32(memoryview(buffer)[: total - 4])
                if computed != message_crc:
                    raise EventStreamError(
                        f"message checksum mismatch: expected {message_crc:#010x}, "
                        f"computed {computed:#010x}"
                    )
                headers_end = _PRELUDE + headers_len
                messages.append(
                    Message(
                        _parse_headers(bytes(buffer[_PRELUDE:headers_end])),
                        bytes(buffer[headers_end : total - 4]),
                    )
                )
                del buffer[:total]
        except EventStreamError as exc:
            self._error = exc
            if not messages:
                raise
        return messages


def _encode_header(name: str, value: HeaderValue | uuid.UUID | datetime) -> bytes:
    raw_name = name.encode("utf-8")
    out = struct.pack(">B", len(raw_name)) + raw_name
    if isinstance(value, bool):
        return out + (b"\x00" if value else b"\x01")
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return out + b"\x04" + struct.pack(">i", value)
        return out + b"\x05" + struct.pack(">q", value)
    if isinstance(value, bytes):
        return out + b"\x06" + struct.pack(">H", len(value)) + value
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return out + b"\x07" + struct.pack(">H", len(raw)) + raw
    if isinstance(value, uuid.UUID):
        return out + b"\x09" + value.bytes
    return out + b"\x08" + struct.pack(">q", int(value.timestamp() * 1000))


def encode_message(
    headers: Mapping[str, HeaderValue | uuid.UUID | datetime], payload: bytes = b""
) -> bytes:
    """One framed message: str headers as type 7, bytes 6, bool 0/1, int 4 (or 5 when it does
    not fit 32 bits), :class:`uuid.UUID` 9, :class:`datetime` 8."""
    head = b"".join(_encode_header(name, value) for name, value in headers.items())
    total = _MIN_MESSAGE + len(head) + len(payload)
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + head + payload
    return body + struct.pack(">I", zlib.crc32(body))
