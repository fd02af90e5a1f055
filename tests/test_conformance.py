"""One conformance suite for every backend: the same cases, sync and async, streamed and not.

Each backend is a loopback fake behind the uniform interface of ``tests/fakes/adapters.py``
(its URL, keys, and how to script each error kind in its own wire format), so what is checked
here is the promise of the README: whichever protocol serves it, the caller sees the OpenAI
shape and the same typed errors. Where a backend's ``CAPABILITIES`` lacks what a case needs, the
case asserts the refusal instead (``InvalidRequestError`` before anything is sent).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pydantic
import pytest

import llmrouter
from llmrouter._http import SyncHTTPTransport
from llmrouter.policy import RetryPolicy
from tests.conftest import free_port
from tests.fakes import adapters
from tests.fakes.adapters import LAST_USER_TEXT, RETRY_AFTER, Adapter

OPTIONS: dict[str, Any] = {"retry_policy": RetryPolicy.testing(max_retries=0)}
HI = [{"role": "user", "content": LAST_USER_TEXT}]
SYSTEM = "You are terse. Answer in five words or fewer."
MULTI_TURN = [
    {"role": "user", "content": "My name is Ada."},
    {"role": "assistant", "content": "Nice to meet you, Ada."},
    {"role": "user", "content": LAST_USER_TEXT},
]
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
CITY_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "country": {"type": "string"}},
    "required": ["name", "country"],
    "additionalProperties": False,
}
JSON_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True},
}


class City(pydantic.BaseModel):
    name: str
    country: str


STATUS_ERRORS: dict[str, type[llmrouter.StatusError]] = {
    "400": llmrouter.BadRequestError,
    "422": llmrouter.BadRequestError,
    "401": llmrouter.AuthenticationError,
    "404": llmrouter.NotFoundError,
    "429": llmrouter.RateLimitError,
    "5xx": llmrouter.ServerError,
}

# What a request needs in order to use each capability (llmrouter.backends.Capabilities).
CAPABILITY_REQUESTS: dict[str, dict[str, Any]] = {
    "tools": {"tools": [WEATHER]},
    "tool_choice": {
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    },
    "json_object": {"response_format": {"type": "json_object"}},
    "json_schema": {"response_format": JSON_SCHEMA},
    "stream_usage": {"stream": True, "stream_options": {"include_usage": True}},
    "seed": {"seed": 7},
    "n": {"n": 2},
    "logprobs": {"logprobs": True, "top_logprobs": 2},
    "stop": {"stop": ["conformance"]},
}


# ---------------------------------------------------------------------------------------------
# Fixtures and one call shape for both clients


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=adapters.NAMES)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Adapter]:
    with adapters.start(str(request.param)) as adapter:
        for name in adapter.unset_env:
            monkeypatch.delenv(name, raising=False)
        for name, value in adapter.env.items():
            monkeypatch.setenv(name, value)
        adapter.reset()
        yield adapter
        adapter.reset()


# Each sync Client builds its own httpx2 client and, with it, an SSL context that loads the CA
# bundle (about 25 ms), although every fake here speaks plain HTTP: one shared context halves
# the suite's time. Everything else is the default path (SyncHTTPTransport, httpx2, sockets).
_SSL_CONTEXT = ssl.create_default_context()


def sync_client(url: str) -> llmrouter.Client:
    transport = SyncHTTPTransport(transport=httpx2.HTTPTransport(verify=_SSL_CONTEXT))
    return llmrouter.Client(url, transport=transport, **OPTIONS)


@dataclass
class Answer:
    """A completion or a whole stream, seen the same way."""

    content: str | None = None
    role: str | None = None
    finish_reason: str | None = None
    usage: Any = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[Any] = field(default_factory=list)  # streams only
    response: Any = None  # the ChatCompletion (or the stream)


def _from_completion(resp: Any) -> Answer:
    message = resp.choices[0].message
    calls = [
        {"id": c.id, "type": c.type, "name": c.function.name, "arguments": c.function.arguments}
        for c in message.tool_calls or []
    ]
    return Answer(
        content=message.content,
        role=message.role,
        finish_reason=resp.choices[0].finish_reason,
        usage=resp.usage,
        tool_calls=calls,
        response=resp,
    )


def _add_chunk(answer: Answer, chunk: Any) -> None:
    answer.chunks.append(chunk)
    if chunk.usage is not None:
        answer.usage = chunk.usage
    for choice in chunk.choices:
        delta = choice.delta
        answer.role = answer.role or delta.role
        if delta.content:
            answer.content = (answer.content or "") + delta.content
        for piece in delta.tool_calls or []:
            while len(answer.tool_calls) <= piece.index:
                answer.tool_calls.append({"id": None, "type": None, "name": None, "arguments": ""})
            call = answer.tool_calls[piece.index]
            call["id"] = call["id"] or piece.id
            call["type"] = call["type"] or piece.type
            if piece.function is not None:
                call["name"] = call["name"] or piece.function.name
                call["arguments"] += piece.function.arguments or ""
        if choice.finish_reason is not None:
            answer.finish_reason = choice.finish_reason


async def chat(
    mode: str, url: str, *, stream: bool = False, into: Answer | None = None, **kw: Any
) -> Answer:
    """One chat through ``Client`` or ``AsyncClient``; a stream is read to its end. Chunks go to
    ``into`` as they arrive (so they are kept when the stream raises)."""
    kw.setdefault("messages", HI)
    answer = Answer() if into is None else into
    if mode == "sync":
        with sync_client(url) as client:
            if not stream:
                return _from_completion(client.chat.completions.create(**kw))
            with client.chat.completions.create(stream=True, **kw) as s:
                answer.response = s
                for chunk in s:
                    _add_chunk(answer, chunk)
        return answer
    async with llmrouter.AsyncClient(url, **OPTIONS) as aclient:
        if not stream:
            return _from_completion(await aclient.chat.completions.create(**kw))
        async with await aclient.chat.completions.create(stream=True, **kw) as s:
            answer.response = s
            async for chunk in s:
                _add_chunk(answer, chunk)
    return answer


async def parse(mode: str, url: str, **kw: Any) -> Any:
    kw.setdefault("messages", HI)
    if mode == "sync":
        with sync_client(url) as client:
            return client.chat.completions.parse(**kw)
    async with llmrouter.AsyncClient(url, **OPTIONS) as aclient:
        return await aclient.chat.completions.parse(**kw)


def assert_usage(usage: Any) -> None:
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def assert_one_finish(answer: Answer) -> None:
    finishing = [c for c in answer.chunks for ch in c.choices if ch.finish_reason is not None]
    assert len(finishing) == 1, [c.model_dump() for c in finishing]


async def assert_refused(mode: str, backend: Adapter, **kw: Any) -> None:
    """The request is refused before sending: ``InvalidRequestError``, nothing received."""
    stream = bool(kw.pop("stream", False))
    with pytest.raises(llmrouter.InvalidRequestError):
        await chat(mode, backend.url, stream=stream, **kw)
    assert backend.chat_requests() == []


STREAMED = pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])


# ---------------------------------------------------------------------------------------------
# Answers


async def test_plain_chat(mode: str, backend: Adapter) -> None:
    answer = await chat(mode, backend.url)
    assert isinstance(answer.content, str) and answer.content
    assert answer.role == "assistant"
    assert answer.finish_reason == "stop"
    assert answer.tool_calls == []
    assert_usage(answer.usage)
    resp = answer.response
    assert resp.object == "chat.completion"
    assert isinstance(resp.id, str) and resp.id
    assert isinstance(resp.model, str) and resp.model
    assert isinstance(resp.created, int)
    assert resp.route.backend == backend.url
    assert len(backend.chat_requests()) == 1


@STREAMED
@pytest.mark.parametrize("shape", ["string", "parts"])
async def test_system_prompt_reaches_the_server(
    mode: str, backend: Adapter, streamed: bool, shape: str
) -> None:
    content: Any = SYSTEM if shape == "string" else [{"type": "text", "text": SYSTEM}]
    messages = [{"role": "system", "content": content}, *HI]
    answer = await chat(mode, backend.url, stream=streamed, messages=messages)
    assert answer.content and answer.finish_reason == "stop"
    body = backend.chat_requests()[0].json
    assert backend.system_of(body) == SYSTEM
    assert backend.turns_of(body) == [("user", LAST_USER_TEXT)]


@STREAMED
@pytest.mark.parametrize("shape", ["string", "parts"])
async def test_multi_turn_reaches_the_server_in_order(
    mode: str, backend: Adapter, streamed: bool, shape: str
) -> None:
    messages = MULTI_TURN
    if shape == "parts":
        messages = [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in messages]
    answer = await chat(mode, backend.url, stream=streamed, messages=messages)
    assert answer.content and answer.finish_reason == "stop"
    body = backend.chat_requests()[0].json
    assert backend.system_of(body) is None
    assert backend.turns_of(body) == [(m["role"], m["content"]) for m in MULTI_TURN]


async def test_stream_assembles_to_the_plain_answer(mode: str, backend: Adapter) -> None:
    plain = await chat(mode, backend.url)
    if not backend.capabilities.stream_usage:
        await assert_refused(mode, backend, **CAPABILITY_REQUESTS["stream_usage"])
        streamed = await chat(mode, backend.url, stream=True)
    else:
        streamed = await chat(
            mode, backend.url, stream=True, stream_options={"include_usage": True}
        )
        assert_usage(streamed.usage)
        assert streamed.usage.model_dump() == plain.usage.model_dump()
    assert streamed.content == plain.content
    assert streamed.role == "assistant"
    assert streamed.finish_reason == plain.finish_reason == "stop"
    assert_one_finish(streamed)
    assert all(c.object == "chat.completion.chunk" for c in streamed.chunks)
    # Every chunk of one stream shares its id, created and model (openai-chat.md 3).
    assert len({(c.id, c.created, c.model) for c in streamed.chunks}) == 1
    assert streamed.chunks[0].id and streamed.chunks[0].model
    assert streamed.response.text == plain.content
    assert streamed.response.route.backend == backend.url


@STREAMED
@pytest.mark.parametrize("shape", ["list", "string"])
async def test_stop_sequence_cuts_the_answer(
    mode: str, backend: Adapter, streamed: bool, shape: str
) -> None:
    full = (await chat(mode, backend.url)).content
    assert full is not None
    stop = full.split()[1]  # a word in the middle of the answer
    answer = await chat(
        mode, backend.url, stream=streamed, stop=[stop] if shape == "list" else stop
    )
    assert answer.content == full[: full.index(stop)]
    assert answer.finish_reason == "stop"
    if streamed:
        assert_one_finish(answer)


@STREAMED
@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_gives_finish_reason_length(
    mode: str, backend: Adapter, streamed: bool, param: str
) -> None:
    full = (await chat(mode, backend.url)).content
    extra: dict[str, Any] = {param: 2}
    if streamed:
        extra["stream_options"] = {"include_usage": True}
    answer = await chat(mode, backend.url, stream=streamed, **extra)
    assert answer.finish_reason == "length"
    assert answer.content and full and full.startswith(answer.content)
    assert len(answer.content) < len(full)
    if not streamed or backend.capabilities.stream_usage:
        assert_usage(answer.usage)
        assert answer.usage.completion_tokens == 2
    if streamed:
        assert_one_finish(answer)


# ---------------------------------------------------------------------------------------------
# Tools and structured output


# How the caller sends the assistant's tool call back: built by hand (content None, as the
# OpenAI SDK does), with content "" (as some frameworks do), or the returned message dumped.
FOLLOW_UPS = ["none", "empty", "dumped"]


@pytest.mark.parametrize(
    ("streamed", "follow_up"),
    [(False, f) for f in FOLLOW_UPS] + [(True, f) for f in FOLLOW_UPS if f != "dumped"],
    ids=[f"plain-{f}" for f in FOLLOW_UPS] + [f"stream-{f}" for f in FOLLOW_UPS[:2]],
)
async def test_tool_call_round_trip(
    mode: str, backend: Adapter, streamed: bool, follow_up: str
) -> None:
    if not backend.capabilities.tools:
        await assert_refused(mode, backend, stream=streamed, **CAPABILITY_REQUESTS["tools"])
        return
    backend.script_tool_call("get_weather", {"city": "Paris"}, stream=streamed)
    answer = await chat(mode, backend.url, stream=streamed, tools=[WEATHER])
    assert answer.finish_reason == "tool_calls"
    assert answer.role == "assistant"
    assert not answer.content
    [call] = answer.tool_calls
    assert call["type"] == "function"
    assert call["name"] == "get_weather"
    assert isinstance(call["id"], str) and call["id"]
    assert isinstance(call["arguments"], str)
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    if streamed:
        assert_one_finish(answer)

    # The follow-up carries the assistant's call and the tool's result, OpenAI-shaped.
    function = {"name": call["name"], "arguments": call["arguments"]}
    assistant: dict[str, Any] = {
        "role": "assistant",
        "content": "" if follow_up == "empty" else None,
        "tool_calls": [{"id": call["id"], "type": "function", "function": function}],
    }
    if follow_up == "dumped":
        assistant = answer.response.choices[0].message.model_dump(exclude_none=True)
    result = {"role": "tool", "tool_call_id": call["id"], "content": "18C and cloudy"}
    messages = [*HI, assistant, result]
    again = await chat(mode, backend.url, stream=streamed, messages=messages, tools=[WEATHER])
    assert again.finish_reason in ("stop", "tool_calls")
    assert again.content or again.tool_calls
    assert len(backend.chat_requests()) == 2
    assert backend.turns_of(backend.chat_requests()[1].json)[-1][1] == "18C and cloudy"


@pytest.mark.parametrize("choice", ["named", "required"])
async def test_forced_tool_choice(mode: str, backend: Adapter, choice: str) -> None:
    request = dict(CAPABILITY_REQUESTS["tool_choice"])
    if choice == "required":
        request["tool_choice"] = "required"
    if not backend.capabilities.tool_choice:
        await assert_refused(mode, backend, **request)
        return
    answer = await chat(mode, backend.url, **request)
    [call] = answer.tool_calls
    assert call["name"] == "get_weather"
    assert isinstance(json.loads(call["arguments"]), dict)


@STREAMED
async def test_json_schema_response_format(mode: str, backend: Adapter, streamed: bool) -> None:
    if not backend.capabilities.json_schema:
        await assert_refused(mode, backend, stream=streamed, response_format=JSON_SCHEMA)
        return
    answer = await chat(mode, backend.url, stream=streamed, response_format=JSON_SCHEMA)
    assert answer.content is not None
    value = json.loads(answer.content)
    assert set(value) == {"name", "country"}
    assert all(isinstance(v, str) for v in value.values())
    assert answer.finish_reason == "stop"
    assert answer.tool_calls == []


async def test_parse_returns_the_pydantic_model(mode: str, backend: Adapter) -> None:
    if not backend.capabilities.json_schema:
        with pytest.raises(llmrouter.InvalidRequestError):
            await parse(mode, backend.url, response_format=City)
        assert backend.chat_requests() == []
        return
    resp = await parse(mode, backend.url, response_format=City)
    parsed = resp.choices[0].message.parsed
    assert isinstance(parsed, City)
    assert parsed == City.model_validate_json(resp.choices[0].message.content)


@pytest.mark.parametrize("capability", list(CAPABILITY_REQUESTS))
async def test_capability_is_served_or_refused_before_sending(
    mode: str, backend: Adapter, capability: str
) -> None:
    request = dict(CAPABILITY_REQUESTS[capability])
    if not getattr(backend.capabilities, capability):
        await assert_refused(mode, backend, **request)
        return
    stream = bool(request.pop("stream", False))
    answer = await chat(mode, backend.url, stream=stream, **request)
    assert answer.finish_reason is not None
    assert len(backend.chat_requests()) == 1


# ---------------------------------------------------------------------------------------------
# Errors


@STREAMED
@pytest.mark.parametrize("kind", adapters.ERROR_KINDS)
async def test_status_error_maps_to_the_error_tree(
    mode: str, backend: Adapter, kind: str, streamed: bool
) -> None:
    status = backend.script_error(kind)
    with pytest.raises(llmrouter.StatusError) as info:
        await chat(mode, backend.url, stream=streamed)
    error = info.value
    assert type(error) is STATUS_ERRORS[kind], repr(error)
    if kind == "5xx":
        assert error.status_code >= 500
    else:
        assert error.status_code == status
    assert error.backend == backend.url
    if kind == "429":
        assert error.retry_after == RETRY_AFTER
        assert error.retryable


@STREAMED
async def test_unknown_model_is_not_found(mode: str, backend: Adapter, streamed: bool) -> None:
    url = backend.missing_model_url
    if url is None:  # the protocol has no model to miss: script the server's 404
        url = backend.url
        backend.script_error("404")
    with pytest.raises(llmrouter.NotFoundError) as info:
        await chat(mode, url, stream=streamed)
    assert info.value.status_code in (400, 404)  # SageMaker: 400 ValidationError
    assert len(backend.chat_requests()) == 1


@pytest.mark.parametrize("name", [n for n in adapters.NAMES if adapters._ADAPTERS[n].wrong_key_env])
@STREAMED
async def test_wrong_key_is_an_authentication_error(
    mode: str, name: str, streamed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    with adapters.start(name) as backend:
        assert backend.wrong_key_env is not None
        for var in backend.unset_env:
            monkeypatch.delenv(var, raising=False)
        for var, value in {**backend.env, **backend.wrong_key_env}.items():
            monkeypatch.setenv(var, value)
        backend.reset()
        try:
            with pytest.raises(llmrouter.AuthenticationError) as info:
                await chat(mode, backend.url, stream=streamed)
        finally:
            backend.reset()
        assert info.value.status_code in (401, 403)  # AWS: 403 for a bad signature
        assert "wrong" not in str(info.value) + repr(info.value)  # the key never leaks


async def test_mid_stream_error_after_content_is_an_interruption(
    mode: str, backend: Adapter
) -> None:
    sent = backend.script_mid_stream_error()
    got = Answer()
    with pytest.raises(llmrouter.StreamInterruptedError) as info:
        await chat(mode, backend.url, stream=True, into=got)
    assert sent and info.value.partial_text == sent
    assert got.content == sent
    assert isinstance(info.value.__cause__, llmrouter.BackendError)
    assert info.value.backend == backend.url


@pytest.mark.parametrize(
    ("streamed", "after_content"),
    [(False, False), (True, False), (True, True)],
    ids=["plain", "stream_first_frame", "stream_after_content"],
)
async def test_malformed_answer(
    mode: str, backend: Adapter, streamed: bool, after_content: bool
) -> None:
    sent = backend.script_malformed(stream=streamed, after_content=after_content)
    got = Answer()
    if not after_content:
        with pytest.raises(llmrouter.ProtocolError):
            await chat(mode, backend.url, stream=streamed, into=got)
        assert not got.content
        return
    with pytest.raises(llmrouter.StreamInterruptedError) as info:
        await chat(mode, backend.url, stream=True, into=got)
    assert sent and info.value.partial_text == sent == got.content
    assert isinstance(info.value.__cause__, llmrouter.ProtocolError)


@STREAMED
async def test_refused_connection(mode: str, backend: Adapter, streamed: bool) -> None:
    url = backend.url_at(free_port())
    with pytest.raises(llmrouter.BackendConnectionError) as info:
        await chat(mode, url, stream=streamed)
    assert info.value.backend == url


@STREAMED
async def test_connection_closed_without_an_answer(
    mode: str, backend: Adapter, streamed: bool
) -> None:
    backend.script_close()
    with pytest.raises(llmrouter.BackendConnectionError):
        await chat(mode, backend.url, stream=streamed)
    assert len(backend.chat_requests()) == 1


async def test_connection_cut_after_content_is_an_interruption(mode: str, backend: Adapter) -> None:
    sent = backend.script_cut_after_content()
    got = Answer()
    with pytest.raises(llmrouter.StreamInterruptedError) as info:
        await chat(mode, backend.url, stream=True, into=got)
    assert sent and info.value.partial_text == sent == got.content
    assert isinstance(info.value.__cause__, llmrouter.BackendConnectionError)
