"""Secrets in server text: a key echoed in an error body, in a header, or inside a stream's error
event never reaches an exception, a log line, an event, the route, the gateway's answer or the
CLI's output; keys that cannot be sent (a trailing ``\\r``, spaces, non-ASCII) are fixed or
refused at load, naming the variable and never the value. Over real HTTP to the loopback OpenAI
fake (``tests/fakes/openai_fake.py``), with the sync client, the async client, the gateway
and the CLI in a subprocess."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx2
import pytest

from llmrouter import AsyncClient, Client, ConfigError, LLMRouterError
from llmrouter._scrub import MASK, scrub
from llmrouter.events import Event
from llmrouter.policy import RetryPolicy
from llmrouter.server import KeyStore
from tests.fakes.openai_fake import (
    Error,
    OpenAIFake,
    Stream,
    error_frame,
    role_frame,
)
from tests.test_gateway import GatewayThread, settings

KEY = "sk-proj-ECHOED-Zq8bX2mN4vL7pR1tY6wK"
HI = [{"role": "user", "content": "hi"}]

# The ways servers echo a key, each as (scripted answer, where the key sits).
ECHOES = {
    "body": lambda: Error(
        401,
        {
            "error": {
                "message": f"Incorrect API key provided: {KEY}. Find yours at ...",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        },
    ),
    "url-encoded body": lambda: Error(400, f"bad header Authorization=Bearer%20{quote(KEY)}"),
    "long prefix": lambda: Error(401, {"error": {"message": f"key {KEY[:-3]}... is revoked"}}),
    "header": lambda: Error(
        503, {"error": {"message": "proxy"}}, {"x-request-id": f"Bearer {KEY}"}
    ),
    "stream error event": lambda: Stream(
        [role_frame(), error_frame(f"upstream rejected Authorization: Bearer {KEY}")]
    ),
}


def _texts(error: BaseException) -> list[str]:
    out = [str(error), repr(error), repr(error.args)]
    for name in ("body", "request_id", "message", "error_type", "partial_text"):
        out.append(repr(getattr(error, name, None)))
    for inner in getattr(error, "errors", None) or ():
        out.extend(_texts(inner))
    for attempt in getattr(error, "attempts", None) or ():
        out.append(attempt.describe())
    return out


def _assert_hidden(*texts: str) -> None:
    for text in texts:
        assert KEY not in text
        assert KEY[:12] not in text and KEY[-12:] not in text
        assert quote(KEY) not in text


def _our_logs(caplog: pytest.LogCaptureFixture) -> str:
    # httpcore's own DEBUG lines print raw response headers: not ours to rewrite.
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("llmrouter"))


@pytest.fixture
def fake() -> Iterator[OpenAIFake]:
    with OpenAIFake(models=["m"]) as server:
        yield server


def test_scrub_cuts_the_key_its_encodings_and_its_long_ends() -> None:
    text = f"a {KEY} b {quote(KEY)} c {KEY[:10]} d {KEY[-10:]} e sk-...{KEY[-4:]}"
    cut = scrub(text, [KEY])
    _assert_hidden(cut)
    assert cut.count(MASK) == 4 and cut.endswith(f"sk-...{KEY[-4:]}")  # the server's own mask


@pytest.mark.parametrize("echo", sorted(ECHOES))
def test_sync_client_hides_echoed_keys(
    fake: OpenAIFake, echo: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[Event] = []
    fake.script(ECHOES[echo]())
    client = Client(
        base_url=fake.url,
        api_key=KEY,
        on_event=events.append,
        retry_policy=RetryPolicy.testing(max_retries=0),
    )
    with pytest.raises(LLMRouterError) as info:
        if echo.startswith("stream"):
            for _ in client.chat.completions.create(model="m", messages=HI, stream=True):
                pass
        else:
            client.chat.completions.create(model="m", messages=HI)
    _assert_hidden(*_texts(info.value), _our_logs(caplog), *map(repr, events))
    client.close()


@pytest.mark.parametrize("echo", sorted(ECHOES))
async def test_async_client_hides_echoed_keys(
    fake: OpenAIFake, echo: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[Event] = []
    fake.script(ECHOES[echo]())
    client = AsyncClient(
        base_url=fake.url,
        api_key=KEY,
        on_event=events.append,
        retry_policy=RetryPolicy.testing(max_retries=0),
    )
    with pytest.raises(LLMRouterError) as info:
        if echo.startswith("stream"):
            stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
            async for _ in stream:
                pass
        else:
            await client.chat.completions.create(model="m", messages=HI)
    _assert_hidden(*_texts(info.value), _our_logs(caplog), *map(repr, events))
    await client.close()


@pytest.mark.parametrize("echo", ["body", "header", "stream error event"])
def test_gateway_answers_without_echoed_keys(
    fake: OpenAIFake, echo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECHO_KEY", KEY)
    fake.script(ECHOES[echo]())
    keys = KeyStore([("team", "gw-client-key-123456")])
    url = f"{fake.url}?model=m&api_key_env=ECHO_KEY"
    with GatewayThread(settings(url, keys=keys)) as gw:
        body: dict[str, Any] = {"model": "m", "messages": HI, "stream": echo.startswith("stream")}
        answer = httpx2.post(
            gw.base + "/chat/completions",
            json=body,
            headers={"Authorization": "Bearer gw-client-key-123456"},
            timeout=30,
        )
    assert fake.chat_requests[-1].headers["authorization"] == f"Bearer {KEY}"
    _assert_hidden(answer.text, json.dumps(dict(answer.headers)))


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmrouter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LLMROUTER_URL": "", "OPENAI_BASE_URL": "", **env},
    )


@pytest.mark.parametrize("debug", [False, True])
def test_cli_output_hides_echoed_keys(fake: OpenAIFake, debug: bool) -> None:
    fake.script(ECHOES["body"](), ECHOES["body"](), ECHOES["body"]())
    url = f"{fake.url}?model=m&api_key_env=ECHO_KEY"
    out = _cli("chat", "hi", "--url", url, *(["--debug"] if debug else []), env={"ECHO_KEY": KEY})
    assert out.returncode != 0
    _assert_hidden(out.stdout, out.stderr)
    assert "401" in out.stderr


# -- keys that cannot be sent ---------------------------------------------------------------

BAD_KEYS = {
    "crlf": KEY + "\r",
    "spaces": f"  {KEY}  ",
    "non-ascii": KEY + "é",
    "control": KEY[:10] + "\x1b" + KEY[10:],
}


@pytest.mark.parametrize("kind", sorted(BAD_KEYS))
def test_sync_client_loads_keys_that_cannot_be_sent(
    fake: OpenAIFake, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAD_KEY", BAD_KEYS[kind])
    url = f"{fake.url}?model=m&api_key_env=BAD_KEY"
    if kind in ("crlf", "spaces"):  # stripped at load, then sent whole
        with Client(url) as client:
            client.chat.completions.create(messages=HI)
        assert fake.chat_requests[-1].headers["authorization"] == f"Bearer {KEY}"
        return
    with pytest.raises(ConfigError, match="BAD_KEY") as info:
        Client(url)
    _assert_hidden(str(info.value), repr(info.value))
    assert fake.requests == []


@pytest.mark.parametrize("kind", sorted(BAD_KEYS))
def test_async_client_loads_keys_that_cannot_be_sent(
    fake: OpenAIFake, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAD_KEY", BAD_KEYS[kind])
    url = f"{fake.url}?model=m&api_key_env=BAD_KEY"

    async def chat() -> None:
        async with AsyncClient(url) as client:
            await client.chat.completions.create(messages=HI)

    if kind in ("crlf", "spaces"):
        asyncio.run(chat())
        assert fake.chat_requests[-1].headers["authorization"] == f"Bearer {KEY}"
        return
    with pytest.raises(ConfigError, match="BAD_KEY") as info:
        asyncio.run(chat())
    _assert_hidden(str(info.value), repr(info.value))


@pytest.mark.parametrize("kind", ["crlf", "non-ascii"])
def test_cli_loads_keys_that_cannot_be_sent(fake: OpenAIFake, kind: str) -> None:
    url = f"{fake.url}?model=m&api_key_env=BAD_KEY"
    out = _cli("chat", "hi", "--url", url, env={"BAD_KEY": BAD_KEYS[kind]})
    _assert_hidden(out.stdout, out.stderr)
    if kind == "crlf":
        assert out.returncode == 0, out.stderr
        assert fake.chat_requests[-1].headers["authorization"] == f"Bearer {KEY}"
    else:
        assert out.returncode != 0 and "BAD_KEY" in out.stderr
        assert fake.requests == []


@pytest.mark.parametrize("kind", ["crlf", "non-ascii"])
def test_gateway_loads_keys_that_cannot_be_sent(fake: OpenAIFake, kind: str) -> None:
    url = f"{fake.url}?model=m&api_key_env=BAD_KEY"
    os.environ["BAD_KEY"] = BAD_KEYS[kind]
    try:
        if kind == "crlf":
            with GatewayThread(settings(url)) as gw:
                answer = httpx2.post(
                    gw.base + "/chat/completions", json={"messages": HI}, timeout=30
                )
            assert answer.status_code == 200, answer.text
            assert fake.chat_requests[-1].headers["authorization"] == f"Bearer {KEY}"
        else:
            with pytest.raises(ConfigError, match="BAD_KEY") as info, GatewayThread(settings(url)):
                pass
            _assert_hidden(str(info.value))
    finally:
        del os.environ["BAD_KEY"]


def test_header_values_are_checked_before_sending(fake: OpenAIFake) -> None:
    """A header value that HTTP cannot carry is refused naming the header, never its value
    (httpx would raise ``Illegal header value b'Bearer sk-...'``)."""
    from llmrouter import InvalidRequestError

    client = Client(base_url=fake.url, api_key="sk-fine-000000000")
    with pytest.raises(InvalidRequestError, match="x-token") as info:
        client.chat.completions.create(
            model="m", messages=HI, extra_headers={"x-token": f"{KEY}\r\nX-Evil: 1"}
        )
    client.close()
    client.close()
    _assert_hidden(str(info.value), repr(info.value))
    assert fake.requests == []
