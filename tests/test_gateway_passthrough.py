"""Streams passed through: after the first content, an OpenAI SSE backend's bytes go to the
client as they came (``llmrouter/server/passthrough.py``), with usage counted, the end and
errors detected, and failover before the first content kept. Real sockets: the gateway in a
thread, the loopback OpenAI fake behind it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from llmrouter.policy import RetryPolicy
from llmrouter.server import GatewaySettings
from tests.fakes.openai_fake import (
    DONE,
    Error,
    OpenAIFake,
    Stream,
    chunk,
    error_frame,
    finish_frame,
    role_frame,
    usage_frame,
)
from tests.test_gateway import GatewayThread

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def spaced(data: dict[str, Any]) -> bytes:
    """An event as Python's json.dumps writes it (with spaces): re-encoding would drop them."""
    return f"data: {json.dumps(data)}\n\n".encode()


def contents(*texts: str) -> list[bytes]:
    return [spaced(chunk({"content": t})) for t in texts]


@pytest.fixture
def fakes() -> Iterator[tuple[OpenAIFake, OpenAIFake]]:
    with OpenAIFake(models=["m"]) as a, OpenAIFake(models=["m"]) as b:
        yield a, b


def gateway(*fakes: OpenAIFake, **kwargs: Any) -> GatewayThread:
    chain = ", ".join(f"{f.url}?model=m" for f in fakes)
    options = {"retry_policy": RetryPolicy.testing()}
    return GatewayThread(GatewaySettings(url=chain, client_options=options, **kwargs))


def stream(gw: GatewayThread) -> httpx2.Response:
    return httpx2.post(f"{gw.base}/chat/completions", json=BODY, timeout=10)


def events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def tokens(gw: GatewayThread, want: dict[str, float]) -> dict[str, float]:
    """The token counters, once they read ``want`` (the handler counts after the last byte)."""
    deadline = time.monotonic() + 3
    while True:
        text = httpx2.get(f"{gw.url}/metrics", timeout=5).text
        found = {}
        for line in text.splitlines():
            if line.startswith("llmrouter_gateway_tokens_total{"):
                found[line.split('direction="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
        if found == want or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_the_backends_bytes_go_through_and_usage_is_counted(
    fakes: tuple[OpenAIFake, OpenAIFake],
) -> None:
    a, _ = fakes
    tail = [*contents("lo", " there", "!"), finish_frame(), usage_frame(), DONE]
    a.script(Stream([role_frame(), *contents("Hel"), *tail], split=7))
    with gateway(a) as gw:
        r = stream(gw)
        assert r.status_code == 200
        assert b"".join(tail[:3]) in r.content  # byte for byte, spaces and all
        got = events(r.text)
        assert got[-1] == "[DONE]"
        text = "".join(
            c["delta"].get("content") or "" for e in got[:-1] for c in json.loads(e)["choices"]
        )
        assert text == "Hello there!"
        assert tokens(gw, {"in": 12, "out": 3}) == {"in": 12, "out": 3}


def test_without_passthrough_each_chunk_is_re_encoded(
    fakes: tuple[OpenAIFake, OpenAIFake],
) -> None:
    a, _ = fakes
    tail = [*contents("lo"), finish_frame(), DONE]
    a.script(Stream([role_frame(), *contents("Hel"), *tail]))
    with gateway(a, passthrough=False) as gw:
        r = stream(gw)
        assert r.status_code == 200 and tail[0] not in r.content
        assert events(r.text)[-1] == "[DONE]"


def test_an_error_event_after_content_ends_with_the_usual_error_event(
    fakes: tuple[OpenAIFake, OpenAIFake],
) -> None:
    a, _ = fakes
    a.script(Stream([role_frame(), *contents("Hel", "lo"), error_frame("engine failed")]))
    with gateway(a) as gw:
        got = events(stream(gw).text)
    assert got[-1] == "[DONE]"
    error = json.loads(got[-2])["error"]
    assert error["type"] == "stream_interrupted" and "interrupted" in error["message"]
    assert not any('"engine failed"' in e for e in got[:-2])  # the raw event is not relayed


def test_a_cut_after_content_ends_with_an_error_event(
    fakes: tuple[OpenAIFake, OpenAIFake],
) -> None:
    a, _ = fakes
    a.script(Stream([role_frame(), *contents("Hel", "lo")], cut=True))
    with gateway(a) as gw:
        got = events(stream(gw).text)
    assert got[-1] == "[DONE]"
    assert json.loads(got[-2])["error"]["type"] == "stream_interrupted"
    assert json.loads(got[-3])["choices"][0]["delta"]["content"] == "lo"


def test_failover_before_the_first_content_still_works(
    fakes: tuple[OpenAIFake, OpenAIFake],
) -> None:
    a, b = fakes
    a.script(Error(500, {"error": {"message": "down"}}))
    b.script(Stream([role_frame(), *contents("from", " b"), finish_frame(), DONE]))
    with gateway(a, b) as gw:
        r = stream(gw)
        assert r.status_code == 200
        assert contents(" b")[0] in r.content
        assert events(r.text)[-1] == "[DONE]"
    a.script(Stream([role_frame(), error_frame("early")]))  # an error before content
    b.script(Stream([role_frame(), *contents("ok"), finish_frame(), DONE]))
    with gateway(a, b) as gw:
        r = stream(gw)
        assert r.status_code == 200 and b'"ok"' in r.content
