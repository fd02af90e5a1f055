"""The AWS event-stream decoder (``llmrouter/backends/_eventstream.py``): test vectors from
``shared/protocols/sagemaker.md`` section 3, botocore as the reference, any split of the input."""

from __future__ import annotations

import itertools
import struct
import uuid
import zlib
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrouter.backends._eventstream import (
    EventStreamDecoder,
    EventStreamError,
    Message,
    encode_message,
)

EMPTY = bytes.fromhex("000000100000000005c248eb7d98c8ff")
PAYLOAD_PART = bytes.fromhex(
    "00000077000000593c670ae60b3a6576656e742d7479706507000b5061796c6f6164506172740d3a636f6e74"
    "656e742d747970650700186170706c69636174696f6e2f6f637465742d73747265616d0d3a6d657373616765"
    "2d747970650700056576656e74646174613a7b2278223a317d0a0a6b07553c"
)
PART_HEADERS = {
    ":event-type": "PayloadPart",
    ":content-type": "application/octet-stream",
    ":message-type": "event",
}


def test_empty_message_vector() -> None:
    assert EventStreamDecoder().feed(EMPTY) == [Message({}, b"")]
    assert encode_message({}) == EMPTY


def test_payload_part_vector() -> None:
    (message,) = EventStreamDecoder().feed(PAYLOAD_PART)
    assert message.headers == PART_HEADERS
    assert message.payload == b'data:{"x":1}\n\n'
    assert message.header(":event-type") == "PayloadPart"
    assert encode_message(PART_HEADERS, b'data:{"x":1}\n\n') == PAYLOAD_PART


def test_matches_botocore() -> None:
    from botocore.eventstream import EventStreamBuffer

    data = PAYLOAD_PART + encode_message(
        {":message-type": "exception", ":exception-type": "ModelStreamError", "n": 7, "b": True},
        b'{"Message":"broke","ErrorCode":"StreamBroken"}',
    )
    reference = EventStreamBuffer()
    reference.add_data(data)
    expected = [(dict(m.headers), m.payload) for m in reference]
    assert [(m.headers, m.payload) for m in EventStreamDecoder().feed(data)] == expected


def test_every_header_type_round_trips() -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    headers = {
        "t": True, "f": False, "i32": -5, "i64": 2**40, "b": b"\x00\x01", "s": "é", "u": ident,
        "ts": when,
    }  # fmt: skip
    (message,) = EventStreamDecoder().feed(encode_message(headers, b"x"))
    assert message.headers == {
        "t": True, "f": False, "i32": -5, "i64": 2**40, "b": b"\x00\x01", "s": "é",
        "u": ident.bytes, "ts": int(when.timestamp() * 1000),
    }  # fmt: skip
    from botocore.eventstream import EventStreamBuffer

    reference = EventStreamBuffer()
    reference.add_data(encode_message(headers, b"x"))
    assert dict(next(iter(reference)).headers)["ts"] == message.headers["ts"]


def test_small_ints() -> None:
    head = b"\x01a\x02\xff" + b"\x01b\x03\x01\x00"
    prelude = struct.pack(">II", 16 + len(head), len(head))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + head
    (message,) = EventStreamDecoder().feed(body + struct.pack(">I", zlib.crc32(body)))
    assert message.headers == {"a": -1, "b": 256}


def test_partial_input_waits() -> None:
    decoder = EventStreamDecoder()
    assert decoder.feed(PAYLOAD_PART[:5]) == []
    assert decoder.feed(PAYLOAD_PART[5:60]) == []
    assert decoder.buffered == 60
    assert len(decoder.feed(PAYLOAD_PART[60:] + EMPTY[:3])) == 1
    assert decoder.buffered == 3


def _corrupt(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize(
    ("index", "match"),
    [(0, "prelude checksum"), (9, "prelude checksum"), (30, "message checksum"),
     (118, "message checksum")],
)  # fmt: skip
def test_checksum_mismatch(index: int, match: str) -> None:
    decoder = EventStreamDecoder()
    with pytest.raises(EventStreamError, match=match):
        decoder.feed(_corrupt(PAYLOAD_PART, index))
    with pytest.raises(EventStreamError, match=match):  # broken for good
        decoder.feed(EMPTY)
    assert decoder.error is not None


def test_messages_before_a_bad_frame_are_returned() -> None:
    decoder = EventStreamDecoder()
    messages = decoder.feed(PAYLOAD_PART + _corrupt(EMPTY, 14))
    assert len(messages) == 1
    assert decoder.error is not None and "message checksum" in str(decoder.error)
    with pytest.raises(EventStreamError):
        decoder.feed(b"")


def _framed(head: bytes, payload: bytes = b"") -> bytes:
    prelude = struct.pack(">II", 16 + len(head) + len(payload), len(head))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + head + payload
    return body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize(
    ("head", "match"),
    [
        (b"\x01a\x07\x00\x01x" * 2, "duplicate header"),
        (b"\x01a\x0a", "unknown type"),
        (b"\x05ab", "runs past"),
        (b"\x01a\x07\x00\x09xy", "runs past"),
        (b"\x01a\x05\x00", "runs past"),
        (b"\x01a\x07\x00\x01\xff", "not UTF-8"),
    ],
)
def test_malformed_headers(head: bytes, match: str) -> None:
    with pytest.raises(EventStreamError, match=match):
        EventStreamDecoder().feed(_framed(head))


def test_impossible_lengths() -> None:
    prelude = struct.pack(">II", 15, 0)
    with pytest.raises(EventStreamError, match="too small"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)))
    prelude = struct.pack(">II", 1 << 30, 200 * 1024)
    with pytest.raises(EventStreamError, match="headers length"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)))
    prelude = struct.pack(">II", 30 * 1024 * 1024, 0)
    with pytest.raises(EventStreamError, match="payload length"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)))


payloads = st.lists(st.binary(max_size=300), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(payloads=payloads, cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12))
def test_any_split_decodes_the_same(payloads: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(encode_message(PART_HEADERS, p) for p in payloads)
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    decoder = EventStreamDecoder()
    got: list[Message] = []
    for start, end in itertools.pairwise(points):
        got.extend(decoder.feed(wire[start:end]))
    assert [m.payload for m in got] == payloads
    assert all(m.headers == PART_HEADERS for m in got)
    assert decoder.buffered == 0
