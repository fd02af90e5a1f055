"""Discovery never blocks a request: a failed ``GET /v1/models`` or TGI ``GET /info`` is skipped.

Every HTTP backend that asks the server which model it serves (when neither the URL nor the call
names one) is checked here against its loopback fake, whose discovery route answers 404, 500 or
nothing at all (``fake.discovery``) while the chat route works. The chat goes on with what is
known (no model named: the server's default; the context window unknown), the failure is logged
once at DEBUG, and nothing fails over because of it. Backends whose protocol cannot send a chat
without a model (Ollama, Anthropic, Gemini) say so with an :class:`InvalidRequestError` naming the
discovery failure, never with the discovery's own error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from llmrouter import AsyncClient, InvalidRequestError
from llmrouter.policy import RetryPolicy
from tests.fakes import anthropic_fake, gemini_fake
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.gemini_fake import GeminiFake
from tests.fakes.ollama_fake import OllamaFake
from tests.fakes.openai_fake import Error, OpenAIFake, Response, Stall
from tests.fakes.tgi_fake import MODEL_ID, TGIFake

MESSAGES = [{"role": "user", "content": "hi"}]
NO_RETRY = RetryPolicy.testing(max_retries=0)
# A stalled discovery waits the connect timeout: short here, so the test is quick.
QUICK = "connect_timeout=0.3"

FAULTS: dict[str, Response] = {
    "404": Error(404, b"404 page not found", content_type="text/plain"),
    "500": Error(500, {"error": "boom"}),
    "stall": Stall(),
}
OLLAMA_FAULTS: dict[str, int | str] = {"404": 404, "500": 500, "stall": "stall"}

# scheme -> the backend URL for a fake (no model pinned: the backend discovers one).
OPTIONAL_MODEL: dict[str, Callable[[int], str]] = {
    "openai-compatible": lambda port: f"http://127.0.0.1:{port}/v1?{QUICK}",
    "vllm": lambda port: f"vllm://127.0.0.1:{port}?{QUICK}",
    "llamacpp": lambda port: f"llamacpp://127.0.0.1:{port}?{QUICK}",
    "tgi": lambda port: f"tgi://127.0.0.1:{port}?{QUICK}",
}


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger="llmrouter"):
        yield caplog


def _discovery_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "discovery failed" in r.getMessage()]


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("scheme", list(OPTIONAL_MODEL))
async def test_a_failed_discovery_does_not_stop_the_chat(
    scheme: str, fault: str, debug_log: pytest.LogCaptureFixture
) -> None:
    upstream = TGIFake() if scheme == "tgi" else OpenAIFake()
    upstream.discovery = FAULTS[fault]
    with upstream:
        url = OPTIONAL_MODEL[scheme](upstream.port)
        async with AsyncClient(url, retry_policy=NO_RETRY) as client:
            first = await client.chat.completions.create(messages=MESSAGES, max_tokens=4)
            second = await client.chat.completions.create(messages=MESSAGES, max_tokens=4)
            backend = client._router.members[0].backend
            assert backend.max_context is None  # unknown: never learned
    asked = [r for r in upstream.requests if r.method == "GET"]
    assert first.choices[0].message.content
    assert second.choices[0].message.content
    assert first.route.failovers == 0 and len(first.route.attempts) == 1
    assert second.route.failovers == 0
    assert len(upstream.chat_requests) == 2
    lines = _discovery_lines(debug_log)
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    if fault == "500":  # may pass: asked again on the next request, logged once all the same
        assert len(asked) == 2
    else:  # the server's answer (or a stall): not asked again
        assert len(asked) == 1


async def test_tgi_behind_a_v1_only_proxy_chats(debug_log: pytest.LogCaptureFixture) -> None:
    with TGIFake(serves_info=False) as tgi:
        async with AsyncClient(tgi.url, retry_policy=NO_RETRY) as client:
            resp = await client.chat.completions.create(messages=MESSAGES, max_tokens=4)
            again = await client.chat.completions.create(messages=MESSAGES, max_tokens=4)
            async with await client.chat.completions.create(
                messages=MESSAGES, max_tokens=4, stream=True
            ) as stream:
                text = "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )
            assert client._router.members[0].backend.max_context is None
    assert resp.model == MODEL_ID  # "tgi" was sent: the served model answered
    assert resp.choices[0].message.content and again.choices[0].message.content and text
    assert resp.route.failovers == 0
    paths = [r.path for r in tgi.requests]
    assert paths.count("/info") == 1  # a 404 is the server's answer: asked once
    assert [r.path for r in tgi.chat_requests] == ["/v1/chat/completions"] * 3
    assert len(_discovery_lines(debug_log)) == 1


async def test_a_failed_discovery_fails_nothing_over() -> None:
    """The first backend's /info is missing; it serves anyway, the second is never asked."""
    with TGIFake(serves_info=False) as tgi, OpenAIFake() as spare:
        async with AsyncClient(f"{tgi.url}, {spare.url}", retry_policy=NO_RETRY) as client:
            resp = await client.chat.completions.create(messages=MESSAGES, max_tokens=4)
    assert resp.route.backend == client._router.members[0].name
    assert spare.requests == []


Fake = OpenAIFake | OllamaFake
REQUIRED_MODEL: dict[str, Callable[[], Fake]] = {
    "ollama": OllamaFake,
    "anthropic": AnthropicFake,
    "gemini": GeminiFake,
}
SCHEMES = {"ollama": "ollama", "anthropic": "anthropic+http", "gemini": "gemini+http"}
KEYS = {"ANTHROPIC_API_KEY": anthropic_fake.API_KEY, "GEMINI_API_KEY": gemini_fake.API_KEY}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("scheme", list(REQUIRED_MODEL))
async def test_a_protocol_that_needs_a_model_says_so(
    scheme: str, fault: str, monkeypatch: pytest.MonkeyPatch, debug_log: pytest.LogCaptureFixture
) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    upstream = REQUIRED_MODEL[scheme]()
    if isinstance(upstream, OllamaFake):
        upstream.discovery = OLLAMA_FAULTS[fault]
    else:
        upstream.discovery = FAULTS[fault]
    with upstream:
        url = f"{SCHEMES[scheme]}://127.0.0.1:{upstream.port}?{QUICK}"
        async with AsyncClient(url, retry_policy=NO_RETRY) as client:
            with pytest.raises(InvalidRequestError, match="model= is required") as caught:
                await client.chat.completions.create(messages=MESSAGES, max_tokens=4)
            # Named per call, the same backend chats: nothing else was wrong.
            resp = await client.chat.completions.create(
                messages=MESSAGES, max_tokens=4, model=upstream.models[0]
            )
    assert "failed" in str(caught.value)
    assert resp.choices[0].message.content is not None
    assert len(_discovery_lines(debug_log)) == 1
