"""The ``anthropic://`` backend through the public client, against the loopback Messages API fake.

The fake (``tests/fakes/anthropic_fake.py``) validates what it receives as the real API does, so
a request the codec builds wrongly fails here with the API's own 400. Protocol facts:
``shared/protocols/anthropic.md``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from llmrouter import (
    AsyncClient,
    AuthenticationError,
    BackendConnectionError,
    BadRequestError,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)
from llmrouter.policy import RetryPolicy
from tests.conftest import free_port
from tests.fakes.anthropic_fake import (
    API_KEY,
    MODEL,
    REQUEST_ID,
    AnthropicFake,
    Close,
    Error,
    Reply,
    Stream,
    api_error,
    event,
    text_block,
    tool_use_block,
)

NO_RETRY = RetryPolicy.testing(max_retries=0)
HI = [{"role": "user", "content": "one two three"}]
WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]

_MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "content": []}
START = event("message_start", {"type": "message_start", "message": _MESSAGE})


@pytest.fixture(autouse=True)
def anthropic_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)


@pytest.fixture
def fake() -> Iterator[AnthropicFake]:
    with AnthropicFake() as server:
        yield server


@pytest.fixture
def fake2() -> Iterator[AnthropicFake]:
    with AnthropicFake() as server:
        yield server


def sent(fake: AnthropicFake, i: int = -1) -> Any:
    """The JSON body of the ``i``-th request to ``/v1/messages``."""
    return fake.message_requests[i].json


async def chat(url: str, policy: RetryPolicy = NO_RETRY, **kw: Any) -> Any:
    kw.setdefault("messages", HI)
    async with AsyncClient(url, retry_policy=policy) as client:
        return await client.chat.completions.create(**kw)


async def stream(url: str, into: list[Any], policy: RetryPolicy = NO_RETRY, **kw: Any) -> Any:
    """Stream one chat, appending each chunk to ``into`` (kept when it raises)."""
    kw.setdefault("messages", HI)
    async with AsyncClient(url, retry_policy=policy) as client:
        async with await client.chat.completions.create(stream=True, **kw) as s:
            async for chunk in s:
                into.append(chunk)
        return s


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def tool_calls_of(chunks: list[Any]) -> dict[int, dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for frag in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(frag.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = call["id"] or frag.id
            call["name"] = call["name"] or frag.function.name
            call["arguments"] += frag.function.arguments or ""
    return calls


# ---------------------------------------------------------------------------------------------
# Chat, streaming, parameters


async def test_plain_chat(fake: AnthropicFake) -> None:
    resp = await chat(fake.url)
    choice = resp.choices[0]
    assert choice.message.content == "Hello! You said: one two three"
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert resp.id == "msg_fake0123"
    assert resp.model == MODEL
    assert resp.object == "chat.completion"
    assert resp.usage.prompt_tokens == 3
    assert resp.usage.completion_tokens == 6
    assert resp.usage.total_tokens == 9
    assert resp.usage.prompt_tokens_details == {"cached_tokens": 0, "cache_creation_tokens": 0}
    assert resp.route.backend == fake.url
    request = fake.message_requests[-1]
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == API_KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert request.json == {"model": MODEL, "max_tokens": 4096, "messages": HI}


async def test_system_and_developer_messages_go_to_the_system_field(fake: AnthropicFake) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Bonjour"},
    ]
    resp = await chat(fake.url, messages=messages)
    assert resp.choices[0].message.content == "Hello! You said: Bonjour"
    body = sent(fake)
    assert body["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Answer in French."},
    ]
    assert body["messages"] == [{"role": "user", "content": "Bonjour"}]


async def test_multi_turn_merges_consecutive_turns_of_one_role(fake: AnthropicFake) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": "third"},
    ]
    resp = await chat(fake.url, messages=messages)
    assert resp.choices[0].message.content == "Hello! You said: third"
    assert sent(fake)["system"] == "Be brief."
    assert sent(fake)["messages"] == [
        {"role": "user", "content": [text_block("first"), text_block("second")]},
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": "third"},
    ]


async def test_stream_assembles_to_the_non_streamed_answer(fake: AnthropicFake) -> None:
    whole = await chat(fake.url)
    chunks: list[Any] = []
    s = await stream(fake.url, chunks)
    assert text_of(chunks) == whole.choices[0].message.content
    assert s.text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage == whole.usage
    assert all(c.id == whole.id and c.model == MODEL for c in chunks)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert sent(fake)["stream"] is True
    assert fake.message_requests[-1].headers["accept"] == "text/event-stream"
    assert s.route.backend == fake.url


async def test_stop_sequences(fake: AnthropicFake) -> None:
    resp = await chat(fake.url, stop="two")
    assert resp.choices[0].message.content == "Hello! You said: one "
    assert resp.choices[0].finish_reason == "stop"
    assert sent(fake)["stop_sequences"] == ["two"]
    chunks: list[Any] = []
    await stream(fake.url, chunks, stop=["three", "two"])
    assert text_of(chunks) == "Hello! You said: one "
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert sent(fake)["stop_sequences"] == ["three", "two"]


async def test_max_tokens_gives_finish_reason_length(fake: AnthropicFake) -> None:
    resp = await chat(fake.url, max_tokens=3)
    assert resp.choices[0].message.content == "Hello! You said: "
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 3
    assert sent(fake)["max_tokens"] == 3
    chunks: list[Any] = []
    await stream(fake.url, chunks, max_completion_tokens=2, temperature=0.5, top_p=0.9)
    assert text_of(chunks) == "Hello! You "
    assert chunks[-1].choices[0].finish_reason == "length"
    assert {k: sent(fake)[k] for k in ("max_tokens", "temperature", "top_p")} == {
        "max_tokens": 2,
        "temperature": 0.5,
        "top_p": 0.9,
    }


async def test_image_data_uri_becomes_a_base64_image_block(fake: AnthropicFake) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    resp = await chat(fake.url, messages=[{"role": "user", "content": content}])
    assert resp.choices[0].message.content == "Hello! You said: What is this?"
    assert sent(fake)["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }


# ---------------------------------------------------------------------------------------------
# Tools and structured output


async def test_tool_call_round_trip(fake: AnthropicFake) -> None:
    question = {"role": "user", "content": "Weather in Paris?"}
    resp = await chat(fake.url, messages=[question], tools=WEATHER, tool_choice="required")
    assert resp.choices[0].finish_reason == "tool_calls"
    message = resp.choices[0].message
    assert message.content is None
    [call] = message.tool_calls
    assert (call.id, call.type, call.function.name) == ("toolu_01", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "fake city"}
    assert sent(fake)["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather",
            "input_schema": WEATHER[0]["function"]["parameters"],
        }
    ]
    assert sent(fake)["tool_choice"] == {"type": "any"}

    follow_up = [
        question,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": "toolu_01", "content": "18C, cloudy"},
    ]
    resp = await chat(fake.url, messages=follow_up, tools=WEATHER)
    assert resp.choices[0].message.content == "Tool said: 18C, cloudy"
    assert resp.choices[0].finish_reason == "stop"
    assert sent(fake)["messages"][1:] == [
        {
            "role": "assistant",
            "content": [tool_use_block("get_weather", {"city": "fake city"})],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C, cloudy"}
            ],
        },
    ]


async def test_tool_results_and_a_user_message_share_one_user_turn(fake: AnthropicFake) -> None:
    calls = [
        {
            "id": f"toolu_0{i}",
            "function": {"name": "get_weather", "arguments": f'{{"city": "{c}"}}'},
        }
        for i, c in ((1, "Paris"), (2, "Rome"))
    ]
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "toolu_01", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_02", "content": [{"type": "text", "text": "25C"}]},
        {"role": "user", "content": "And tomorrow?"},
    ]
    resp = await chat(fake.url, messages=messages, tools=WEATHER, tool_choice="auto")
    assert resp.choices[0].message.content == "Tool said: 18C 25C"
    turns = sent(fake)["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert [b["type"] for b in turns[1]["content"]] == ["text", "tool_use", "tool_use"]
    assert [b["type"] for b in turns[2]["content"]] == ["tool_result", "tool_result", "text"]
    assert sent(fake)["tool_choice"] == {"type": "auto"}


async def test_streamed_tool_calls_arrive_as_indexed_fragments(fake: AnthropicFake) -> None:
    content = [
        text_block("Checking."),
        tool_use_block("get_weather", {"city": "Paris"}, "toolu_01"),
        tool_use_block("get_weather", {"city": "Rome"}, "toolu_02"),
    ]
    fake.script(Reply(content=content, stop_reason="tool_use"))
    whole = await chat(fake.url, tools=WEATHER)
    fake.script(Reply(content=content, stop_reason="tool_use"))
    chunks: list[Any] = []
    await stream(fake.url, chunks, tools=WEATHER, tool_choice="auto", parallel_tool_calls=False)
    assert sent(fake)["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert text_of(chunks) == whole.choices[0].message.content == "Checking."
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    streamed = tool_calls_of(chunks)
    assert sorted(streamed) == [0, 1]
    for i, call in enumerate(whole.choices[0].message.tool_calls):
        assert streamed[i] == {
            "id": call.id,
            "name": call.function.name,
            "arguments": call.function.arguments,
        }
    assert json.loads(streamed[1]["arguments"]) == {"city": "Rome"}


async def test_json_schema_is_answered_through_a_forced_tool(fake: AnthropicFake) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
        "required": ["city", "temp"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema}}
    resp = await chat(fake.url, response_format=fmt)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.tool_calls is None
    assert json.loads(resp.choices[0].message.content) == {"city": "fake city", "temp": 1}
    body = sent(fake)
    assert body["tools"][0]["name"] == "json_response__weather"
    assert body["tools"][0]["input_schema"] == schema
    assert body["tool_choice"] == {"type": "tool", "name": "json_response__weather"}
    chunks: list[Any] = []
    await stream(fake.url, chunks, response_format=fmt)
    assert text_of(chunks) == resp.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"


# ---------------------------------------------------------------------------------------------
# Models


async def test_models_list_and_model_discovery(fake: AnthropicFake) -> None:
    async with AsyncClient(fake.base_url, retry_policy=NO_RETRY) as client:
        models = await client.models.list()
        resp = await client.chat.completions.create(messages=HI)
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].owned_by == "anthropic"
    assert models.data[0].created == 1739923200  # 2025-02-19T00:00:00Z
    assert resp.model == MODEL
    listing = next(r for r in fake.requests if r.path.startswith("/v1/models"))
    assert listing.headers["x-api-key"] == API_KEY
    assert listing.headers["anthropic-version"] == "2023-06-01"


# ---------------------------------------------------------------------------------------------
# Errors


async def test_invalid_requests_are_refused_before_sending(fake: AnthropicFake) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"temperature": 1.5}, "between 0 and 1"),
        ({"seed": 7}, "seed"),
        ({"n": 2}, "n must be 1"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "json_schema"),
    ]
    for kwargs, words in cases:
        with pytest.raises(InvalidRequestError) as info:
            await chat(fake.url, **kwargs)
        assert words in str(info.value)
    assert fake.requests == []


async def test_400_from_the_api_is_a_bad_request(fake: AnthropicFake) -> None:
    # Valid for us, refused by the API: a conversation must start with a user turn.
    with pytest.raises(BadRequestError) as info:
        await chat(fake.url, messages=[{"role": "assistant", "content": "Hi"}])
    err = info.value
    assert err.status_code == 400
    assert err.error_type == "invalid_request_error"
    assert "first message must use the" in err.message
    assert err.request_id == REQUEST_ID
    assert not err.retryable


async def test_401_wrong_key_never_shows_the_key(
    fake: AnthropicFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-ant-wrong-secret-42"
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    with pytest.raises(AuthenticationError) as info:
        await chat(fake.url)
    err = info.value
    assert err.status_code == 401
    assert err.error_type == "authentication_error"
    assert fake.message_requests[-1].headers["x-api-key"] == secret
    for text in (str(err), repr(err), json.dumps(err.body), err.backend):
        assert secret not in text


async def test_404_unknown_model(fake: AnthropicFake) -> None:
    with pytest.raises(NotFoundError) as info:
        await chat(fake.base_url + "?model=claude-nope")
    assert info.value.status_code == 404
    assert info.value.error_type == "not_found_error"


async def test_413_page_from_the_edge_is_a_bad_request(fake: AnthropicFake) -> None:
    fake.script(Error(413, "<html><body>413 Request Entity Too Large</body></html>"))
    with pytest.raises(BadRequestError) as info:
        await chat(fake.url)
    assert info.value.status_code == 413
    assert "non-JSON error page" in str(info.value)


async def test_429_carries_retry_after_and_request_id(fake: AnthropicFake) -> None:
    fake.script(api_error(429, "rate_limit_error", "Too many requests", {"retry-after": "7"}))
    with pytest.raises(RateLimitError) as info:
        await chat(fake.url)
    err = info.value
    assert (err.status_code, err.retry_after, err.request_id) == (429, 7.0, REQUEST_ID)
    assert err.error_type == "rate_limit_error"
    assert err.retryable
    assert len(fake.message_requests) == 1


async def test_529_overloaded_is_a_retryable_server_error(fake: AnthropicFake) -> None:
    fake.script(api_error(529, "overloaded_error", "Overloaded"))
    with pytest.raises(ServerError) as info:
        await chat(fake.url)
    assert (info.value.status_code, info.value.error_type) == (529, "overloaded_error")
    assert info.value.retryable
    fake.script(api_error(529, "overloaded_error", "Overloaded"))
    resp = await chat(fake.url, policy=RetryPolicy.testing(max_retries=1))
    assert resp.choices[0].message.content == "Hello! You said: one two three"
    assert [type(a.error) for a in resp.route.attempts] == [ServerError, type(None)]


async def test_500_api_error(fake: AnthropicFake) -> None:
    fake.script(api_error(500, "api_error", "Internal server error"))
    with pytest.raises(ServerError) as info:
        await chat(fake.url)
    assert (info.value.status_code, info.value.error_type) == (500, "api_error")


async def test_error_event_before_content_fails_over(
    fake: AnthropicFake, fake2: AnthropicFake
) -> None:
    fake.script(Reply(content=[], error=("overloaded_error", "Overloaded")))
    with pytest.raises(ServerError) as info:
        await stream(fake.url, [])
    assert info.value.error_type == "overloaded_error"
    assert info.value.status_code == 529

    fake.script(Reply(content=[], error=("overloaded_error", "Overloaded")))
    chunks: list[Any] = []
    s = await stream(f"{fake.url}, {fake2.url}", chunks)
    assert text_of(chunks) == "Hello! You said: one two three"
    assert [type(a.error) for a in s.route.attempts] == [ServerError, type(None)]


async def test_error_event_after_content_interrupts_the_stream(fake: AnthropicFake) -> None:
    fake.script(Reply(content=[text_block("Partial answer")], error=("api_error", "boom")))
    chunks: list[Any] = []
    with pytest.raises(StreamInterruptedError) as info:
        await stream(fake.url, chunks)
    assert info.value.partial_text == "Partial answer"
    assert text_of(chunks) == "Partial answer"
    assert isinstance(info.value.__cause__, ServerError)
    assert info.value.__cause__.error_type == "api_error"


async def test_malformed_frame_is_a_protocol_error(fake: AnthropicFake) -> None:
    frames = [START, b"event: content_block_delta\ndata: {not json\n\n"]
    fake.script(Stream(frames))
    with pytest.raises(ProtocolError):
        await stream(fake.url, [])
    fake.script(Error(200, "this is not a message"))
    with pytest.raises(ProtocolError):
        await chat(fake.url)


async def test_stream_cut_before_message_stop(fake: AnthropicFake) -> None:
    fake.script(Stream([START], cut=True))
    with pytest.raises(BackendConnectionError):
        await stream(fake.url, [])


async def test_reset_and_closed_port_fail_over(fake: AnthropicFake, fake2: AnthropicFake) -> None:
    fake.script(Close())
    resp = await chat(f"{fake.url}, {fake2.url}")
    assert resp.route.backend == fake2.url
    assert [type(a.error) for a in resp.route.attempts] == [BackendConnectionError, type(None)]

    dead = f"anthropic+http://127.0.0.1:{free_port()}?model={MODEL}"
    chunks: list[Any] = []
    s = await stream(f"{dead}, {fake.url}", chunks)
    assert text_of(chunks) == "Hello! You said: one two three"
    assert [a.backend for a in s.route.attempts] == [dead, fake.url]
    assert isinstance(s.route.attempts[0].error, BackendConnectionError)


async def test_the_key_never_appears_in_errors(
    fake: AnthropicFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.script(
        api_error(429, "rate_limit_error", "slow down", {"retry-after": "1"}),
        api_error(529, "overloaded_error", "Overloaded"),
        Close(),
        Reply(content=[text_block("Partial")], error=("api_error", "boom")),
    )
    dead = f"anthropic+http://127.0.0.1:{free_port()}?model={MODEL}"
    dead2 = f"anthropic+http://127.0.0.1:{free_port()}?model={MODEL}"
    errors: list[BaseException] = []
    for url, kw in [
        (fake.url, {}),  # 429
        (fake.url, {}),  # 529
        (fake.url, {}),  # reset
        (fake.url, {"messages": [{"role": "assistant", "content": "x"}]}),  # 400
        (fake.base_url + "?model=claude-nope", {}),  # 404
        (f"{dead}, {dead2}", {}),  # refused twice: AllBackendsFailedError
    ]:
        with pytest.raises(Exception) as info:
            await chat(url, **kw)
        errors.append(info.value)
    with pytest.raises(StreamInterruptedError) as interrupted:
        await stream(fake.url, [])
    errors.append(interrupted.value)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-another-secret")
    with pytest.raises(AuthenticationError) as denied:
        await chat(fake.url)
    errors.append(denied.value)
    assert [type(e).__name__ for e in errors] == [
        "RateLimitError",
        "ServerError",
        "BackendConnectionError",
        "BadRequestError",
        "NotFoundError",
        "AllBackendsFailedError",
        "StreamInterruptedError",
        "AuthenticationError",
    ]
    for err in errors:
        for text in (str(err), repr(err), repr(getattr(err, "body", "")), repr(err.__cause__)):
            assert API_KEY not in text
            assert "sk-ant-another-secret" not in text
