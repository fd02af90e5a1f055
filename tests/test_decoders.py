"""Unit tests of the incremental SSE decoder (``llmrouter._decoders.SSEDecoder``).

Rules from ``shared/protocols/openai-chat.md`` section 3: ``data:`` with or without one space,
``:`` comments ignored, ``event:``/``id:``/``retry:`` ignored, an event ends at a blank line,
LF / CRLF / CR line ends; and any split of the input gives the same events.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrouter._decoders import SSEDecoder


def decode(*pieces: bytes) -> list[bytes]:
    decoder = SSEDecoder()
    events: list[bytes] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.close()


def test_one_event_per_blank_line() -> None:
    assert decode(b"data: a\n\ndata: b\n\n") == [b"a", b"b"]


def test_event_is_returned_as_soon_as_its_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\n") == [b"a"]
    assert decoder.feed(b"data: b\n\n") == [b"b"]


@pytest.mark.parametrize(
    ("raw", "data"),
    [
        (b"data: x\n\n", b"x"),
        (b"data:x\n\n", b"x"),  # TGI (axum) writes no space
        (b"data:  x\n\n", b" x"),  # only one space is stripped
        (b"data:\n\n", b""),
        (b'data: {"a": 1}\n\n', b'{"a": 1}'),
    ],
)
def test_data_field_value(raw: bytes, data: bytes) -> None:
    assert decode(raw) == [data]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_line_endings(newline: bytes) -> None:
    raw = b"data: a" + newline + newline + b"data: b" + newline + newline
    assert decode(raw) == [b"a", b"b"]


def test_multi_line_data_is_joined_with_lf() -> None:
    assert decode(b"data: a\ndata: b\r\ndata:c\n\n") == [b"a\nb\nc"]


def test_comments_and_other_fields_are_ignored() -> None:
    raw = b": keep-alive\n\nevent: message\nid: 7\nretry: 100\ndata: x\n\n:\n\n"
    assert decode(raw) == [b"x"]


def test_blank_lines_without_data_make_no_event() -> None:
    assert decode(b"\n\n\n: ping\n\n\r\n") == []


def test_crlf_split_between_cr_and_lf() -> None:
    assert decode(b"data: a\r", b"\n\r", b"\n") == [b"a"]


def test_close_flushes_an_event_that_lacks_its_blank_line() -> None:
    assert decode(b"data: last\n") == [b"last"]


def test_close_drops_an_unterminated_line() -> None:
    assert decode(b"data: a\n\ndata: trunc") == [b"a"]


def test_close_resets_the_decoder() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: a\n")
    assert decoder.close() == [b"a"]
    assert decoder.close() == []
    assert decoder.feed(b"data: b\n\n") == [b"b"]


def test_done_marker_is_just_data() -> None:
    assert decode(b"data: [DONE]\n\n") == [b"[DONE]"]


# ---------------------------------------------------------------------------------------------
# Property: any split of a valid stream gives the events of the whole.

_value = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=12,
).map(lambda s: s.encode())
_line = st.one_of(
    st.tuples(st.just("data"), _value),
    st.tuples(st.just("data_nospace"), _value),
    st.tuples(st.just("comment"), _value),
    st.tuples(st.sampled_from(["event", "id", "retry"]), _value),
)
_event = st.lists(_line, min_size=1, max_size=4)


def _render(events: list[list[tuple[str, bytes]]], newline: bytes) -> tuple[bytes, list[bytes]]:
    """Stream bytes for ``events`` and the data each one should decode to."""
    out = bytearray()
    expected: list[bytes] = []
    for lines in events:
        data: list[bytes] = []
        for kind, value in lines:
            if kind == "data":
                out += b"data: " + value + newline
                data.append(value)
            elif kind == "data_nospace":
                # Without the space, a value that starts with one would lose it: avoid that.
                value = value.lstrip(b" ")
                out += b"data:" + value + newline
                data.append(value)
            elif kind == "comment":
                out += b":" + value + newline
            else:
                out += kind.encode() + b": " + value + newline
        out += newline
        if data:
            expected.append(b"\n".join(data))
    return bytes(out), expected


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(_event, max_size=6),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_any_split_gives_the_same_events(
    events: list[list[tuple[str, bytes]]], newline: bytes, cuts: list[int]
) -> None:
    raw, expected = _render(events, newline)
    assert decode(raw) == expected
    points = sorted({c % (len(raw) + 1) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    assert decode(*pieces) == expected


@settings(max_examples=100, deadline=None)
@given(events=st.lists(_event, max_size=4), newline=st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_byte_at_a_time_gives_the_same_events(
    events: list[list[tuple[str, bytes]]], newline: bytes
) -> None:
    raw, expected = _render(events, newline)
    assert decode(*(raw[i : i + 1] for i in range(len(raw)))) == expected
