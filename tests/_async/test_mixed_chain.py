"""One failover chain across different wire protocols: Ollama -> vLLM -> Anthropic."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from llmrouter import AsyncClient, BackendConnectionError, ServerError
from llmrouter.policy import RetryPolicy
from tests.fakes.anthropic_fake import API_KEY, AnthropicFake
from tests.fakes.fault_proxy import FaultProxy
from tests.fakes.ollama_fake import OllamaFake, Reply

pytestmark = pytest.mark.llama_server

MESSAGES = [{"role": "user", "content": "Say hi."}]


@pytest.fixture
def chain(
    llama_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[OllamaFake, FaultProxy, AnthropicFake, str]]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    port = urlsplit(llama_server).port
    assert port is not None
    with OllamaFake() as ollama, FaultProxy(port) as vllm, AnthropicFake() as anthropic:
        vllm_url = f"vllm://127.0.0.1:{vllm.port}?model=smollm2"
        url = f"{ollama.url}?model={ollama.models[0]}, {vllm_url}, {anthropic.url}"
        yield ollama, vllm, anthropic, url


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_failover_across_protocols(
    chain: tuple[OllamaFake, FaultProxy, AnthropicFake, str], streamed: bool
) -> None:
    ollama, vllm, anthropic, url = chain
    ollama.script(Reply(503, "server busy"))
    vllm.script("reset")
    async with AsyncClient(url, retry_policy=RetryPolicy.testing(max_retries=0)) as client:
        if streamed:
            stream = await client.chat.completions.create(
                messages=MESSAGES, max_tokens=16, stream=True
            )
            async with stream:
                text = "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )
            route = stream.route
        else:
            resp = await client.chat.completions.create(messages=MESSAGES, max_tokens=16)
            text = resp.choices[0].message.content or ""
            route = resp.route
    assert text
    assert [type(a.error) for a in route.attempts] == [
        ServerError,
        BackendConnectionError,
        type(None),
    ]
    assert route.backend == anthropic.url
    assert len(anthropic.message_requests) == 1


async def test_each_protocol_serves_when_first(
    chain: tuple[OllamaFake, FaultProxy, AnthropicFake, str],
) -> None:
    url = chain[3]
    backends = [u.strip() for u in url.split(",")]
    for backend in backends:
        async with AsyncClient(backend) as client:
            resp = await client.chat.completions.create(messages=MESSAGES, max_tokens=16)
        assert resp.choices[0].message.content
        assert resp.choices[0].finish_reason in ("stop", "length")
        assert resp.usage is not None and resp.usage.total_tokens > 0
        assert resp.route.backend == backend
