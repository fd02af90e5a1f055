"""The OpenAI-compatible backend against a real llama.cpp server running a real model."""

from __future__ import annotations

import json

import httpx2
import pytest

from llmrouter import AsyncClient, BackendConnectionError
from tests.conftest import PARIS

pytestmark = pytest.mark.llama_server


async def test_chat_answers_with_real_content_and_usage(llama_server: str) -> None:
    async with AsyncClient(llama_server) as client:
        resp = await client.chat.completions.create(messages=PARIS, max_tokens=32, temperature=0)
    assert "Paris" in resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.role == "assistant"
    usage = resp.usage
    assert usage is not None
    assert usage.prompt_tokens > 10
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert resp.route.backend == llama_server
    assert [a.error for a in resp.route.attempts] == [None]


async def test_model_is_discovered_from_the_server(llama_server: str, gguf_path: str) -> None:
    async with AsyncClient(llama_server) as client:
        resp = await client.chat.completions.create(messages=PARIS, max_tokens=4)
        models = await client.models.list()
    # llama-cpp-python's /v1/models lists the GGUF path it was started with.
    assert [m.id for m in models.data] == [gguf_path]
    assert resp.model == gguf_path


async def test_length_limit_gives_finish_reason_length(llama_server: str) -> None:
    async with AsyncClient(llama_server + "?model=smollm2") as client:
        resp = await client.chat.completions.create(
            messages=[{"role": "user", "content": "Write a long story about a cat."}],
            max_tokens=3,
            temperature=0,
        )
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 3
    assert resp.model == "smollm2"  # the pinned model is sent, and echoed back


async def test_model_dump_is_the_json_the_server_sent(llama_server: str) -> None:
    body = {"messages": PARIS, "max_tokens": 12, "temperature": 0, "model": "m", "seed": 1}
    raw = httpx2.post(llama_server + "/chat/completions", json=body, timeout=60).json()
    async with AsyncClient(llama_server) as client:
        resp = await client.chat.completions.create(
            messages=PARIS, max_tokens=12, temperature=0, model="m", seed=1
        )
    dumped = resp.model_dump(exclude_unset=True)
    for varying in ("id", "created"):
        assert isinstance(dumped.pop(varying), type(raw.pop(varying)))
    assert dumped == raw


async def test_stream_delivers_the_answer_chunk_by_chunk(llama_server: str) -> None:
    async with AsyncClient(llama_server) as client:
        stream = await client.chat.completions.create(
            messages=PARIS, max_tokens=32, temperature=0, stream=True
        )
        async with stream:
            chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert len(chunks) > 3
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert stream.route.backend == llama_server
    assert [a.error for a in stream.route.attempts] == [None]
    assert stream.text == text


async def test_closing_a_stream_early_then_reusing_the_client(llama_server: str) -> None:
    async with AsyncClient(llama_server) as client:
        stream = await client.chat.completions.create(
            messages=[{"role": "user", "content": "Count from 1 to 100."}],
            max_tokens=200,
            stream=True,
        )
        async with stream:
            async for _chunk in stream:
                break
        # The server is free again and the client still works.
        resp = await client.chat.completions.create(messages=PARIS, max_tokens=32, temperature=0)
    assert "Paris" in resp.choices[0].message.content


async def test_forced_tool_call(llama_server: str) -> None:
    tools = [
        {
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
    ]
    async with AsyncClient(llama_server) as client:
        resp = await client.chat.completions.create(
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=tools,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=64,
            temperature=0,
        )
    calls = resp.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "get_weather"
    assert isinstance(json.loads(calls[0].function.arguments), dict)


async def test_json_mode(llama_server: str) -> None:
    schema = {
        "type": "object",
        "properties": {"capital": {"type": "string"}},
        "required": ["capital"],
    }
    async with AsyncClient(llama_server) as client:
        resp = await client.chat.completions.create(
            messages=PARIS,
            # llama-cpp-python's server takes the schema at the top level (openai-chat.md 6.5).
            response_format={"type": "json_object", "schema": schema},
            max_tokens=40,
            temperature=0,
        )
    assert "capital" in json.loads(resp.choices[0].message.content)


async def test_fails_over_from_a_dead_backend(llama_server: str, closed_url: str) -> None:
    async with AsyncClient(f"{closed_url}, {llama_server}") as client:
        resp = await client.chat.completions.create(messages=PARIS, max_tokens=32, temperature=0)
        stream = await client.chat.completions.create(messages=PARIS, max_tokens=8, stream=True)
        async with stream:
            async for _ in stream:
                pass
    assert "Paris" in resp.choices[0].message.content
    for route in (resp.route, stream.route):
        assert route.backend == llama_server
        assert [a.backend for a in route.attempts] == [closed_url, llama_server]
        assert isinstance(route.attempts[0].error, BackendConnectionError)
        assert route.attempts[1].error is None


async def test_bad_request_from_the_server_is_typed(llama_server: str) -> None:
    from llmrouter import BadRequestError

    async with AsyncClient(llama_server) as client:
        with pytest.raises(BadRequestError) as info:
            # Valid for us, rejected by the server's own validation (an unknown role type in
            # a content part): llama-cpp-python answers 500 with a pydantic 'body' message.
            await client.chat.completions.create(
                messages=[{"role": "user", "content": [{"type": "video", "video": "x"}]}],
                max_tokens=4,
            )
    assert info.value.backend == llama_server
    assert info.value.status_code in (400, 422, 500)
