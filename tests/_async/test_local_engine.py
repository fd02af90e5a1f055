"""llama.cpp in this process (``local://``): the embedded default, with the real model."""

from __future__ import annotations

import pytest

from llmrouter import AsyncClient, ConfigError, InvalidRequestError
from llmrouter.backends import llamacpp
from tests.conftest import PARIS

pytestmark = pytest.mark.local_engine


def _engine(client: AsyncClient) -> llamacpp.LlamaEngine | None:
    return client._router.backends[0]._engine  # type: ignore[union-attr]


async def test_chat_on_the_embedded_model() -> None:
    async with AsyncClient("local://smollm2") as client:
        resp = await client.chat.completions.create(messages=PARIS, max_tokens=32, temperature=0)
    assert "Paris" in resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.prompt_tokens > 10
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.model == "SmolLM2-135M-Instruct.Q4_1"
    assert resp.route.backend == "local://smollm2"


async def test_stream_on_the_embedded_model() -> None:
    async with AsyncClient("local://smollm2") as client:
        stream = await client.chat.completions.create(
            messages=PARIS, max_tokens=32, temperature=0, stream=True
        )
        async with stream:
            chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "Paris" in text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert stream.route.backend == "local://smollm2"


async def test_closing_a_stream_stops_generation_and_frees_the_model() -> None:
    async with AsyncClient("local://smollm2") as client:
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
        assert engine is not None
        assert not engine.lock.locked()  # generation stopped, the model is free
        resp = await client.chat.completions.create(messages=PARIS, max_tokens=32, temperature=0)
    assert "Paris" in resp.choices[0].message.content


async def test_one_engine_per_model_per_process() -> None:
    first = AsyncClient("local://smollm2")
    second = AsyncClient("local://smollm2?name=other")
    try:
        await first.chat.completions.create(messages=PARIS, max_tokens=2)
        await second.chat.completions.create(messages=PARIS, max_tokens=2)
        engine = _engine(first)
        assert engine is not None and engine is _engine(second)
        assert engine.users == 2
    finally:
        await first.aclose()
        assert engine.users == 1
        await second.aclose()
    assert engine.users == 0


async def test_request_errors_are_typed_before_generation() -> None:
    async with AsyncClient("local://smollm2") as client:
        with pytest.raises(InvalidRequestError, match="n must be 1"):
            await client.chat.completions.create(messages=PARIS, n=2)
        with pytest.raises(InvalidRequestError, match=r"not llama\.cpp options"):
            await client.chat.completions.create(messages=PARIS, extra_body={"bogus": 1})


async def test_json_schema_response_format_is_enforced() -> None:
    import json

    schema = {
        "type": "object",
        "properties": {"capital": {"type": "string"}},
        "required": ["capital"],
    }
    async with AsyncClient("local://smollm2") as client:
        resp = await client.chat.completions.create(
            messages=PARIS,
            response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
            max_tokens=40,
            temperature=0,
        )
    assert "capital" in json.loads(resp.choices[0].message.content)


async def test_missing_model_file_is_a_config_error() -> None:
    async with AsyncClient("local:///nonexistent/model.gguf") as client:
        with pytest.raises(ConfigError, match="model file not found"):
            await client.chat.completions.create(messages=PARIS)


async def test_prompt_longer_than_the_context_is_a_context_length_error() -> None:
    from llmrouter import ContextLengthError

    async with AsyncClient("local://smollm2?n_ctx=256&name=small") as client:
        with pytest.raises(ContextLengthError) as info:
            await client.chat.completions.create(
                messages=[{"role": "user", "content": "word " * 400}], max_tokens=4
            )
    assert info.value.backend == "small"


async def test_hub_models_need_a_reachable_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    async with AsyncClient("local://org/model-GGUF?file=*Q4_K_M.gguf") as client:
        with pytest.raises(ConfigError, match="could not fetch from the hub"):
            await client.chat.completions.create(messages=PARIS)
