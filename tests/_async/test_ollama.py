"""The Ollama native backend (``ollama://``) end to end, against the loopback fake Ollama.

Real sockets, the default transports, the public client API. Protocol facts:
``shared/protocols/ollama.md``; the fake: ``tests/fakes/ollama_fake.py``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from llmrouter import (
    AllBackendsFailedError,
    AsyncClient,
    BackendConnectionError,
    BadRequestError,
    InvalidRequestError,
    NotFoundError,
    ServerError,
    StreamInterruptedError,
)
from llmrouter.policy import RetryPolicy
from tests.conftest import free_port
from tests.fakes.ollama_fake import CREATED, Answer, Cut, MidStreamError, OllamaFake, Reply

NO_RETRY = RetryPolicy.testing(max_retries=0)
HI = [{"role": "user", "content": "Hello there, fake."}]
WEATHER_TOOL = {
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


@pytest.fixture
def fake() -> Iterator[OllamaFake]:
    with OllamaFake() as server:
        yield server


def url(fake: OllamaFake, model: str = "llama3.2", **query: str) -> str:
    params = "&".join(f"{k}={v}" for k, v in {"model": model, **query}.items())
    return f"{fake.url}?{params}"


def client(fake: OllamaFake, model: str = "llama3.2") -> AsyncClient:
    return AsyncClient(url(fake, model), retry_policy=NO_RETRY)


async def test_plain_chat(fake: OllamaFake) -> None:
    async with client(fake) as c:
        resp = await c.chat.completions.create(messages=HI)
    assert resp.choices[0].message.content == "Echo: Hello there, fake."
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    assert resp.created == CREATED
    assert resp.model == "llama3.2"
    assert resp.usage is not None
    assert resp.usage.completion_tokens == 4
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 4
    assert resp.route.backend == url(fake)
    sent = fake.chat_requests[-1]
    assert sent.json == {"model": "llama3.2", "messages": HI, "stream": False}
    assert "authorization" not in sent.headers


async def test_system_prompt_and_multi_turn_reach_the_server(fake: OllamaFake) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "Echo: One"},
        {"role": "developer", "content": [{"type": "text", "text": "Still brief."}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Two"}, {"type": "text", "text": "Three"}],
        },
    ]
    async with client(fake) as c:
        resp = await c.chat.completions.create(messages=messages)
    assert resp.choices[0].message.content == "Echo: Two\nThree"
    assert fake.chat_requests[-1].json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "Echo: One"},
        {"role": "system", "content": "Still brief."},
        {"role": "user", "content": "Two\nThree"},
    ]


async def test_sampling_parameters_go_into_options(fake: OllamaFake) -> None:
    async with client(fake) as c:
        await c.chat.completions.create(
            messages=HI,
            temperature=0.2,
            top_p=0.5,
            seed=7,
            max_completion_tokens=64,
            stop="###",
            extra_body={"options": {"num_ctx": 8192, "top_k": 20}, "keep_alive": "10m"},
        )
    body = fake.chat_requests[-1].json
    assert body["options"] == {
        "temperature": 0.2,
        "top_p": 0.5,
        "seed": 7,
        "num_predict": 64,
        "stop": ["###"],
        "num_ctx": 8192,
        "top_k": 20,
    }
    assert body["keep_alive"] == "10m"
    assert body["stream"] is False


async def test_stream_assembles_to_the_non_streamed_answer(fake: OllamaFake) -> None:
    async with client(fake) as c:
        whole = await c.chat.completions.create(messages=HI)
        stream = await c.chat.completions.create(messages=HI, stream=True)
        async with stream:
            chunks = [chunk async for chunk in stream]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
    assert text == whole.choices[0].message.content
    assert stream.text == text
    assert len(chunks) == 5  # four tokens, then the finish chunk
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert len({ch.id for ch in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(ch.created == CREATED for ch in chunks)
    assert [ch.choices[0].finish_reason for ch in chunks][-2:] == [None, "stop"]
    assert chunks[-1].usage == whole.usage
    assert all(ch.usage is None for ch in chunks[:-1])
    assert fake.chat_requests[-1].json["stream"] is True
    assert fake.chat_requests[-1].headers["accept"] == "application/x-ndjson"
    assert stream.route.backend == url(fake)


async def test_num_predict_and_stop_give_finish_reasons(fake: OllamaFake) -> None:
    long = [{"role": "user", "content": "one two three four five six"}]
    async with client(fake) as c:
        cut = await c.chat.completions.create(messages=long, max_tokens=3)
        stopped = await c.chat.completions.create(messages=long, stop=[" four", "six"])
        stream = await c.chat.completions.create(messages=long, max_tokens=2, stream=True)
        async with stream:
            chunks = [chunk async for chunk in stream]
    assert cut.choices[0].message.content == "Echo: one two "
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens == 3
    assert stopped.choices[0].message.content == "Echo: one two three"
    assert stopped.choices[0].finish_reason == "stop"
    assert stream.text == "Echo: one "
    assert chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


async def test_tool_call_round_trip(fake: OllamaFake) -> None:
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    fake.script(Answer(tool_calls=[call]), Answer(tool_calls=[call]))
    question = [{"role": "user", "content": "Weather in Paris?"}]
    async with client(fake) as c:
        resp = await c.chat.completions.create(messages=question, tools=[WEATHER_TOOL])
        stream = await c.chat.completions.create(
            messages=question, tools=[WEATHER_TOOL], stream=True
        )
        async with stream:
            chunks = [chunk async for chunk in stream]
        message = resp.choices[0].message
        assert resp.choices[0].finish_reason == "tool_calls"
        assert message.content is None
        assert message.tool_calls is not None and len(message.tool_calls) == 1
        tool_call = message.tool_calls[0]
        assert tool_call.type == "function"
        assert tool_call.function.name == "get_weather"
        assert json.loads(tool_call.function.arguments) == {"city": "Paris"}
        assert tool_call.id.startswith("call_0_")
        # The streamed call has the same stable id, and the stream finishes with tool_calls.
        deltas = [d for ch in chunks for d in ch.choices[0].delta.tool_calls or []]
        assert [(d.index, d.id) for d in deltas] == [(0, tool_call.id)]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"

        # The next turn: the assistant's call and the tool's result, in OpenAI's shape.
        follow_up = [
            *question,
            {"role": "assistant", "content": None, "tool_calls": [tool_call.model_dump()]},
            {"role": "tool", "tool_call_id": tool_call.id, "content": "18C and sunny"},
        ]
        answer = await c.chat.completions.create(messages=follow_up, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content == "get_weather returned: 18C and sunny"
    sent = fake.chat_requests[-1].json
    assert sent["tools"] == [WEATHER_TOOL]
    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}},
                    "id": tool_call.id,
                }
            ],
        },
        {
            "role": "tool",
            "content": "18C and sunny",
            "tool_call_id": tool_call.id,
            "tool_name": "get_weather",
        },
    ]


async def test_json_schema_becomes_format(fake: OllamaFake) -> None:
    schema = {
        "type": "object",
        "properties": {"capital": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["capital", "population"],
    }
    async with client(fake) as c:
        resp = await c.chat.completions.create(
            messages=HI,
            response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
        )
        loose = await c.chat.completions.create(
            messages=HI, response_format={"type": "json_object"}
        )
    assert fake.chat_requests[0].json["format"] == schema
    assert set(json.loads(resp.choices[0].message.content)) == {"capital", "population"}
    assert fake.chat_requests[1].json["format"] == "json"
    assert json.loads(loose.choices[0].message.content) == {"answer": "Echo: Hello there, fake."}


async def test_images_travel_as_base64(fake: OllamaFake) -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n not really an image").decode()
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
    ]
    async with client(fake) as c:
        await c.chat.completions.create(messages=[{"role": "user", "content": content}])
        with pytest.raises(InvalidRequestError, match="data: URI"):
            await c.chat.completions.create(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}
                        ],
                    }
                ]
            )
    assert fake.chat_requests[-1].json["messages"] == [
        {"role": "user", "content": "What is this?", "images": [png]}
    ]


async def test_thinking_models_reasoning(fake: OllamaFake) -> None:
    async with client(fake, "qwen3:0.6b") as c:
        resp = await c.chat.completions.create(messages=HI)
        stream = await c.chat.completions.create(messages=HI, stream=True)
        async with stream:
            chunks = [chunk async for chunk in stream]
        quiet = await c.chat.completions.create(messages=HI, reasoning_effort="none")
    assert resp.choices[0].message.content == "Echo: Hello there, fake."
    reasoning = resp.choices[0].message.model_dump()["reasoning"]
    assert reasoning == "The user wrote 4 words."
    streamed = "".join(ch.choices[0].delta.model_dump().get("reasoning") or "" for ch in chunks)
    assert streamed == reasoning
    assert stream.text == "Echo: Hello there, fake."
    assert "reasoning" not in quiet.choices[0].message.model_dump()
    assert fake.chat_requests[-1].json["think"] is False


async def test_model_discovery_via_api_tags() -> None:
    with OllamaFake(models=["llama3.2:latest"]) as fake:
        async with AsyncClient(fake.url, retry_policy=NO_RETRY) as c:
            resp = await c.chat.completions.create(messages=HI)
            models = await c.models.list()
    assert resp.model == "llama3.2:latest"
    assert [(m.id, m.owned_by) for m in models.data] == [("llama3.2:latest", "library")]
    assert [r.path for r in fake.requests] == ["/api/tags", "/api/chat", "/api/tags"]


async def test_several_models_need_a_model_argument(fake: OllamaFake) -> None:
    async with AsyncClient(fake.url, retry_policy=NO_RETRY) as c:
        with pytest.raises(InvalidRequestError, match=r"llama3\.2:latest, qwen3:0\.6b"):
            await c.chat.completions.create(messages=HI)
        resp = await c.chat.completions.create(messages=HI, model="qwen3:0.6b")
    assert resp.model == "qwen3:0.6b"


async def test_unknown_model_says_ollama_pull(fake: OllamaFake) -> None:
    async with client(fake, "mistral") as c:
        with pytest.raises(NotFoundError, match="ollama pull mistral") as info:
            await c.chat.completions.create(messages=HI)
    assert info.value.status_code == 404
    assert info.value.body == {"error": "model 'mistral' not found"}


async def test_server_errors_are_typed(fake: OllamaFake) -> None:
    fake.script(Reply(503, "server busy, please try again.  maximum pending requests exceeded"))
    async with client(fake) as c:
        with pytest.raises(ServerError, match="server busy"):
            await c.chat.completions.create(messages=HI)
        # Ollama answers a wrong option type with 500, but it is the request's fault.
        with pytest.raises(BadRequestError, match='option "num_ctx" must be of type integer'):
            await c.chat.completions.create(messages=HI, extra_body={"options": {"num_ctx": "8k"}})
        with pytest.raises(BadRequestError, match="does not support thinking"):
            await c.chat.completions.create(messages=HI, extra_body={"think": True})


async def test_unsupported_requests_are_refused_before_sending(fake: OllamaFake) -> None:
    async with client(fake) as c:
        with pytest.raises(InvalidRequestError, match="n > 1"):
            await c.chat.completions.create(messages=HI, n=2)
        with pytest.raises(InvalidRequestError, match="tool_choice"):
            await c.chat.completions.create(
                messages=HI, tools=[WEATHER_TOOL], tool_choice="required"
            )
    assert fake.chat_requests == []


async def test_mid_stream_error_before_content_is_the_typed_error(fake: OllamaFake) -> None:
    fake.script(MidStreamError("llama runner process has terminated", after=0))
    async with client(fake) as c:
        stream = await c.chat.completions.create(messages=HI, stream=True)
        with pytest.raises(ServerError, match="llama runner process has terminated"):
            async with stream:
                async for _ in stream:
                    pass


async def test_mid_stream_error_after_content_interrupts(fake: OllamaFake) -> None:
    fake.script(MidStreamError("llama runner process has terminated", after=2))
    async with client(fake) as c:
        stream = await c.chat.completions.create(messages=HI, stream=True)
        seen = []
        with pytest.raises(StreamInterruptedError) as info:
            async with stream:
                async for chunk in stream:
                    seen.append(chunk.choices[0].delta.content)
        # The client is still usable afterwards.
        resp = await c.chat.completions.create(messages=HI)
    assert seen == ["Echo: ", "Hello "]
    assert info.value.partial_text == "Echo: Hello "
    assert isinstance(info.value.__cause__, ServerError)
    assert resp.choices[0].message.content == "Echo: Hello there, fake."


async def test_mid_stream_error_fails_over_when_nothing_was_delivered() -> None:
    with OllamaFake() as first, OllamaFake() as second:
        first.script(MidStreamError("runner crashed", after=0))
        chain = f"{url(first)}, {url(second)}"
        async with AsyncClient(chain, retry_policy=NO_RETRY) as c:
            stream = await c.chat.completions.create(messages=HI, stream=True)
            async with stream:
                chunks = [chunk async for chunk in stream]
    assert stream.text == "Echo: Hello there, fake."
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert stream.route.backend == url(second)
    assert [type(a.error) for a in stream.route.attempts] == [ServerError, type(None)]


async def test_a_cut_stream_is_a_connection_error(fake: OllamaFake) -> None:
    fake.script(Cut(after=0))
    async with client(fake) as c:
        stream = await c.chat.completions.create(messages=HI, stream=True)
        with pytest.raises(BackendConnectionError):
            async with stream:
                async for _ in stream:
                    pass


async def test_fails_over_from_a_dead_ollama(fake: OllamaFake) -> None:
    dead = f"ollama://127.0.0.1:{free_port()}?model=llama3.2"
    async with AsyncClient(f"{dead}, {url(fake)}", retry_policy=NO_RETRY) as c:
        resp = await c.chat.completions.create(messages=HI)
        stream = await c.chat.completions.create(messages=HI, stream=True)
        async with stream:
            async for _ in stream:
                pass
    assert resp.route.backend == url(fake)
    assert isinstance(resp.route.attempts[0].error, BackendConnectionError)
    assert stream.text == resp.choices[0].message.content


async def test_dead_ollama_alone_fails(fake: OllamaFake) -> None:
    dead = f"ollama://127.0.0.1:{free_port()}?model=llama3.2"
    async with AsyncClient(f"{dead}, {dead}&name=again", retry_policy=NO_RETRY) as c:
        with pytest.raises(AllBackendsFailedError):
            await c.chat.completions.create(messages=HI)


async def test_ollama_host_is_honoured(fake: OllamaFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", f"0.0.0.0:{fake.port}")
    async with AsyncClient("ollama://?model=llama3.2", retry_policy=NO_RETRY) as c:
        resp = await c.chat.completions.create(messages=HI)
    assert resp.choices[0].message.content == "Echo: Hello there, fake."


async def test_health_probe_and_key(fake: OllamaFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_OLLAMA_KEY", "sekrit")
    dead = f"ollama://127.0.0.1:{free_port()}"
    async with AsyncClient(f"{url(fake, api_key_env='MY_OLLAMA_KEY')}, {dead}") as c:
        router = c._router
        assert await router.probe(router.members[0]) is True
        assert await router.probe(router.members[1]) is False
        await c.chat.completions.create(messages=HI)
    probe = fake.requests[0]
    assert (probe.method, probe.path) == ("GET", "/")
    assert fake.chat_requests[-1].headers["authorization"] == "Bearer sekrit"


def test_the_fake_validates_like_ollama(fake: OllamaFake) -> None:
    """What the round trips rely on: the fake refuses what the real server refuses."""
    chat = f"http://127.0.0.1:{fake.port}/api/chat"
    openai_call = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "f", "arguments": '{"x": 1}'}}],
    }
    bad = httpx2.post(chat, json={"model": "llama3.2", "messages": [openai_call], "stream": False})
    assert bad.status_code == 400
    assert "cannot unmarshal string" in bad.json()["error"]
    parts = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    bad = httpx2.post(chat, json={"model": "llama3.2", "messages": [parts]})
    assert bad.status_code == 400
    assert httpx2.post(chat, json={"messages": HI}).json() == {"error": "model is required"}
    wrong = httpx2.post(chat, json={"model": "llama3.2", "messages": HI, "options": {"stop": "x"}})
    assert wrong.status_code == 500
    load = httpx2.post(chat, json={"model": "llama3.2", "messages": []}).json()
    assert (load["done"], load["done_reason"]) == (True, "load")
    streamed = httpx2.post(chat, json={"model": "llama3.2", "messages": HI})  # stream by default
    assert streamed.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(x) for x in streamed.text.splitlines()]
    assert [x["done"] for x in lines] == [False] * 4 + [True]
    root = httpx2.get(f"http://127.0.0.1:{fake.port}/")
    assert root.text == "Ollama is running"
    assert httpx2.get(f"http://127.0.0.1:{fake.port}/v1/nothing").status_code == 404
