"""TGI's Messages API through the client, against the loopback TGI fake over real sockets.

The fake (``tests/fakes/tgi_fake.py``) validates requests the way TGI's router does, so these
tests show both what the codec sends and that TGI would accept it. Protocol facts:
``shared/protocols/tgi.md``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from llmrouter import (
    AsyncClient,
    BackendConnectionError,
    BadRequestError,
    ContextLengthError,
    InvalidRequestError,
    RateLimitError,
    ServerError,
    StatusError,
    StreamInterruptedError,
)
from llmrouter.policy import RetryPolicy
from llmrouter.types import ChatCompletion, ChatCompletionChunk
from tests.conftest import free_port
from tests.fakes.openai_fake import Error, Stream
from tests.fakes.tgi_fake import (
    DONE,
    KEEP_ALIVE,
    MODEL_ID,
    REPLY,
    TGIFake,
    error_event,
    event,
    generation_error,
    overloaded,
    rejection,
    tgi_chunk,
    tgi_error,
    tgi_stream,
    validation_error,
)

MESSAGES = [{"role": "user", "content": "hi"}]
NO_RETRY = RetryPolicy.testing(max_retries=0)
FAST = RetryPolicy.testing()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


@pytest.fixture(autouse=True)
def _no_hf_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def tgi() -> Iterator[TGIFake]:
    with TGIFake() as server:
        yield server


@pytest.fixture
def tgi2() -> Iterator[TGIFake]:
    with TGIFake() as server:
        yield server


def pinned(fake: TGIFake) -> str:
    """The fake's URL with the served model pinned: no ``/info`` call before the chat."""
    return f"{fake.url}?model={MODEL_ID}"


async def chat(url: str, policy: RetryPolicy = NO_RETRY, **kw: Any) -> ChatCompletion:
    kw.setdefault("messages", MESSAGES)
    async with AsyncClient(url, retry_policy=policy) as client:
        return await client.chat.completions.create(**kw)


async def stream(
    url: str, chunks: list[ChatCompletionChunk] | None = None, **kw: Any
) -> list[ChatCompletionChunk]:
    kw.setdefault("messages", MESSAGES)
    got: list[ChatCompletionChunk] = [] if chunks is None else chunks
    async with (
        AsyncClient(url, retry_policy=NO_RETRY) as client,
        await client.chat.completions.create(stream=True, **kw) as response,
    ):
        async for chunk in response:
            got.append(chunk)
    return got


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def last_finish(chunks: list[ChatCompletionChunk]) -> str | None:
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    return [r for r in reasons if r is not None][-1]


# -- round trips -----------------------------------------------------------------------------


async def test_chat_discovers_the_model_from_info(tgi: TGIFake) -> None:
    resp = await chat(tgi.url)
    assert resp.choices[0].message.content == REPLY
    assert resp.choices[0].finish_reason == "stop"
    assert resp.id.startswith("chatcmpl-") and len(resp.id) > len("chatcmpl-")
    assert resp.model == MODEL_ID
    assert resp.usage is not None and resp.usage.total_tokens > 0
    assert [r.path for r in tgi.requests] == ["/info", "/v1/chat/completions"]
    sent = tgi.chat_requests[0]
    assert sent.json["model"] == "tgi"  # the served model, never an adapter id
    assert "authorization" not in sent.headers
    assert resp.route.backend == tgi.url


async def test_discovery_happens_once_per_client(tgi: TGIFake) -> None:
    async with AsyncClient(tgi.url, retry_policy=NO_RETRY) as client:
        for _ in range(2):
            await client.chat.completions.create(messages=MESSAGES)
    assert [r.path for r in tgi.requests].count("/info") == 1


async def test_hf_token_is_sent_as_a_bearer_token(
    tgi: TGIFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    await chat(tgi.url)
    assert [r.headers["authorization"] for r in tgi.requests] == ["Bearer hf_test_token"] * 2


async def test_a_pinned_model_skips_discovery_and_is_sent_as_tgi(tgi: TGIFake) -> None:
    resp = await chat(pinned(tgi))
    assert [r.path for r in tgi.requests] == ["/v1/chat/completions"]
    assert tgi.chat_requests[0].json["model"] == "tgi"
    assert resp.model == MODEL_ID


async def test_a_model_named_by_the_call_is_sent_as_the_lora_adapter(tgi: TGIFake) -> None:
    resp = await chat(tgi.url, model="acme/support-lora")
    assert [r.path for r in tgi.requests] == ["/v1/chat/completions"]
    assert tgi.chat_requests[0].json["model"] == "acme/support-lora"
    assert resp.model == "acme/support-lora"


async def test_a_tgi_model_echo_is_labelled_with_the_pinned_model() -> None:
    with TGIFake(echo_tgi=True) as old:
        resp = await chat(pinned(old))
        chunks = await stream(pinned(old))
    assert resp.model == MODEL_ID
    assert {c.model for c in chunks} == {MODEL_ID}


async def test_stream_round_trip(tgi: TGIFake) -> None:
    chunks = await stream(tgi.url, stream_options={"include_usage": True})
    assert text_of(chunks) == REPLY
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert last_finish(chunks) == "stop"
    assert {c.model for c in chunks} == {MODEL_ID}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    sent = tgi.chat_requests[0]
    assert sent.json["stream"] is True and sent.json["model"] == "tgi"


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_a_stop_string_is_sent_as_a_list_and_finishes_with_stop(
    tgi: TGIFake, streamed: bool
) -> None:
    if streamed:
        chunks = await stream(pinned(tgi), stop="help")
        text, finish = text_of(chunks), last_finish(chunks)
    else:
        resp = await chat(pinned(tgi), stop="help")
        text, finish = resp.choices[0].message.content, resp.choices[0].finish_reason
    assert tgi.chat_requests[0].json["stop"] == ["help"]
    assert text == "Hello! How can I "
    assert finish == "stop"  # TGI said stop_sequence


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_max_tokens_finishes_with_length(tgi: TGIFake, name: str, streamed: bool) -> None:
    kw: dict[str, Any] = {name: 2}
    if streamed:
        chunks = await stream(pinned(tgi), **kw)
        text, finish = text_of(chunks), last_finish(chunks)
    else:
        resp = await chat(pinned(tgi), **kw)
        text, finish = resp.choices[0].message.content, resp.choices[0].finish_reason
    body = tgi.chat_requests[0].json
    assert body["max_tokens"] == 2 and "max_completion_tokens" not in body
    assert (text, finish) == ("Hello! How", "length")


async def test_json_schema_becomes_a_tgi_grammar(tgi: TGIFake) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    resp = await chat(pinned(tgi), response_format=fmt)
    assert tgi.chat_requests[0].json["response_format"] == {"type": "json", "value": PERSON}
    assert set(json.loads(resp.choices[0].message.content or "")) == {"name", "age"}


async def test_json_object_needs_a_schema(tgi: TGIFake) -> None:
    with pytest.raises(InvalidRequestError, match="schema") as info:
        await chat(pinned(tgi), response_format={"type": "json_object"})
    assert info.value.param == "response_format"
    assert tgi.chat_requests == []
    await chat(pinned(tgi), response_format={"type": "json_object", "schema": PERSON})
    assert tgi.chat_requests[0].json["response_format"] == {"type": "json", "value": PERSON}


async def test_a_schema_without_properties_is_rejected_by_tgi(tgi: TGIFake) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "integer"}}}
    with pytest.raises(BadRequestError, match="properties"):
        await chat(pinned(tgi), response_format=fmt)


@pytest.mark.parametrize(
    ("params", "sent"),
    [
        ({"top_p": 1.0}, {}),  # TGI requires top_p < 1; 1.0 is its default anyway
        ({"top_p": 0.0}, {"temperature": 0}),  # only the top token: greedy
        ({"top_p": 0.9, "temperature": 0.7}, {"top_p": 0.9, "temperature": 0.7}),
        ({"temperature": 0}, {"temperature": 0}),  # TGI's chat route: greedy
        ({"presence_penalty": 0}, {}),  # no penalty (TGI would read 0 as 2.0)
        ({"n": 1, "logit_bias": {}}, {}),
    ],
    ids=["top_p_1", "top_p_0", "sampling", "temperature_0", "presence_0", "no_ops"],
)
async def test_sampling_parameters_are_made_acceptable(
    tgi: TGIFake, params: dict[str, Any], sent: dict[str, Any]
) -> None:
    resp = await chat(pinned(tgi), **params)
    assert resp.choices[0].finish_reason == "stop"
    body = tgi.chat_requests[0].json
    names = ("top_p", "temperature", "presence_penalty", "n", "logit_bias")
    assert {k: body[k] for k in names if k in body} == sent


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"n": 2}, "n"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"response_format": {"type": "json_object", "schema": PERSON}, "tools": [WEATHER]}, None),
    ],
    ids=["n", "logit_bias", "presence_penalty", "response_format_and_tools"],
)
async def test_what_tgi_cannot_do_is_refused_before_sending(
    tgi: TGIFake, params: dict[str, Any], param: str | None
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await chat(pinned(tgi), **params)
    assert info.value.param == (param or "response_format")
    assert tgi.chat_requests == []


async def test_tools_round_trip(tgi: TGIFake) -> None:
    resp = await chat(pinned(tgi), tools=[WEATHER], tool_choice="auto")
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert calls[0].id


async def test_streamed_tool_calls_get_one_id_and_finish_with_tool_calls(tgi: TGIFake) -> None:
    chunks = await stream(pinned(tgi), tools=[WEATHER])
    fragments = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert fragments[0].id and fragments[0].id.startswith("call_")
    assert all(f.id is None for f in fragments[1:])
    assert json.loads("".join(f.function.arguments or "" for f in fragments if f.function)) == {
        "city": "Paris"
    }
    assert last_finish(chunks) == "tool_calls"


async def test_messages_are_adapted_without_touching_the_callers_list(tgi: TGIFake) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "again"},
    ]
    before = json.dumps(messages)
    await chat(pinned(tgi), messages=messages)
    sent = tgi.chat_requests[0].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[2]["content"] == ""
    assert json.dumps(messages) == before


# -- errors ----------------------------------------------------------------------------------

ERRORS = [
    (validation_error("`top_p` must be > 0.0 and < 1.0"), BadRequestError),
    (tgi_error(422, "Template error: unknown role", "template_error"), BadRequestError),
    (generation_error(), ServerError),
    (overloaded(), RateLimitError),
    (tgi_error(500, "Incomplete generation", "incomplete_generation"), ServerError),
    (rejection(400, "Failed to parse the request body as JSON: EOF"), BadRequestError),
    (rejection(415, "Expected request with `Content-Type: application/json`"), BadRequestError),
    (rejection(422, "Failed to deserialize the JSON body into the target type"), BadRequestError),
    (validation_error("`inputs` must have less than 10 tokens. Given: 12"), ContextLengthError),
]
ERROR_IDS = [
    "422_validation",
    "422_template",
    "424_generation",
    "429_overloaded",
    "500_incomplete",
    "400_text",
    "415_text",
    "422_text",
    "422_context",
]


@pytest.mark.parametrize(("response", "cls"), ERRORS, ids=ERROR_IDS)
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_error_answers_map_to_the_error_tree(
    tgi: TGIFake, response: Error, cls: type[StatusError], streamed: bool
) -> None:
    tgi.script(response)
    with pytest.raises(StatusError) as info:
        if streamed:
            await stream(pinned(tgi))
        else:
            await chat(pinned(tgi))
    assert type(info.value) is cls
    assert info.value.status_code == response.status
    assert info.value.backend == pinned(tgi)


async def test_a_validation_error_is_neither_retried_nor_failed_over(
    tgi: TGIFake, tgi2: TGIFake
) -> None:
    tgi.script(validation_error("`top_p` must be > 0.0 and < 1.0"))
    with pytest.raises(BadRequestError):
        await chat(f"{pinned(tgi)}, {pinned(tgi2)}", policy=FAST)
    assert (len(tgi.chat_requests), len(tgi2.chat_requests)) == (1, 0)


async def test_overloaded_is_retried(tgi: TGIFake) -> None:
    tgi.script(overloaded())
    resp = await chat(pinned(tgi), policy=RetryPolicy.testing(max_retries=1))
    assert resp.choices[0].message.content == REPLY
    assert [type(a.error) for a in resp.route.attempts] == [RateLimitError, type(None)]


@pytest.mark.parametrize("response", [generation_error(), overloaded()], ids=["424", "429"])
async def test_generation_errors_and_overload_fail_over(
    tgi: TGIFake, tgi2: TGIFake, response: Error
) -> None:
    tgi.script(response)
    resp = await chat(f"{pinned(tgi)}, {pinned(tgi2)}")
    assert resp.route.backend == pinned(tgi2)
    assert isinstance(resp.route.attempts[0].error, ServerError | RateLimitError)


async def test_tgi_validation_through_the_fake(tgi: TGIFake) -> None:
    # What TGI itself says when the codec's adaptations are bypassed with extra_body.
    with pytest.raises(BadRequestError, match="top_p"):
        await chat(pinned(tgi), extra_body={"top_p": 1.0})
    with pytest.raises(BadRequestError, match="deserialize"):
        await chat(pinned(tgi), extra_body={"stop": "x"})
    grammar = {"type": "json", "value": PERSON}
    with pytest.raises(BadRequestError, match="mutually exclusive"):
        await chat(pinned(tgi), tools=[WEATHER], extra_body={"response_format": grammar})


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_over_long_prompts_are_context_length_errors(streamed: bool) -> None:
    with TGIFake(max_input_tokens=50, max_total_tokens=60) as small:
        call = stream if streamed else chat
        with pytest.raises(ContextLengthError, match="must have less than 50 tokens"):
            await call(pinned(small), messages=[{"role": "user", "content": "word " * 80}])
        with pytest.raises(ContextLengthError, match="must be <= 60"):
            await call(pinned(small), max_tokens=59)


MID_STREAM = [
    ("Request failed during generation: CUDA out of memory", ServerError, 424),
    ("Model is overloaded", RateLimitError, 429),
    ("Incomplete generation", ServerError, 500),
    ("Input validation error: `top_p` must be > 0.0 and < 1.0", BadRequestError, 422),
]


@pytest.mark.parametrize(("message", "cls", "status"), MID_STREAM, ids=["424", "429", "500", "422"])
async def test_mid_stream_errors_map_by_their_message(
    tgi: TGIFake, message: str, cls: type[StatusError], status: int
) -> None:
    tgi.script(Stream([KEEP_ALIVE, error_event(message), DONE]))
    with pytest.raises(StatusError) as info:
        await stream(pinned(tgi))
    assert type(info.value) is cls
    assert info.value.status_code == status


async def test_a_mid_stream_generation_error_before_content_fails_over(
    tgi: TGIFake, tgi2: TGIFake
) -> None:
    tgi.script(Stream([KEEP_ALIVE, error_event("Request failed during generation: x"), DONE]))
    chunks: list[ChatCompletionChunk] = []
    await stream(f"{pinned(tgi)}, {pinned(tgi2)}", chunks)
    assert text_of(chunks) == REPLY
    assert len(tgi2.chat_requests) == 1


async def test_a_mid_stream_error_after_content_keeps_the_partial_text(tgi: TGIFake) -> None:
    frames = [
        event(tgi_chunk({"content": "Hel"})),
        error_event("Request failed during generation: boom"),
        DONE,
    ]
    tgi.script(Stream(frames))
    chunks: list[ChatCompletionChunk] = []
    with pytest.raises(StreamInterruptedError) as info:
        await stream(pinned(tgi), chunks)
    assert info.value.partial_text == "Hel"
    assert text_of(chunks) == "Hel"


async def test_a_stream_cut_before_done_after_the_finish_is_whole(tgi: TGIFake) -> None:
    tgi.script(Stream(tgi_stream("Hi", "!", done=False)))
    chunks = await stream(pinned(tgi))
    assert text_of(chunks) == "Hi!" and last_finish(chunks) == "stop"


# -- failover, discovery, health -------------------------------------------------------------


@pytest.mark.parametrize("pin", [False, True], ids=["discovered", "pinned"])
async def test_failover_from_a_dead_tgi(tgi: TGIFake, pin: bool) -> None:
    dead = f"tgi://127.0.0.1:{free_port()}"
    live = tgi.url
    if pin:
        dead, live = f"{dead}?model={MODEL_ID}", pinned(tgi)
    resp = await chat(f"{dead}, {live}")
    assert resp.route.backend == live
    assert isinstance(resp.route.attempts[0].error, BackendConnectionError)
    assert resp.choices[0].message.content == REPLY


async def test_models_list_reads_info(tgi: TGIFake) -> None:
    async with AsyncClient(tgi.url, retry_policy=NO_RETRY) as client:
        models = await client.models.list()
    assert [m.id for m in models.data] == [MODEL_ID]
    extra = models.data[0].model_dump()
    assert (extra["max_model_len"], extra["max_input_tokens"]) == (2048, 1000)
    assert [r.path for r in tgi.requests] == ["/info"]


async def test_health_probe_uses_health(tgi: TGIFake) -> None:
    async with AsyncClient(tgi.url, retry_policy=NO_RETRY) as client:
        member = client._router.members[0]
        assert await client._router.probe(member) is True
        tgi.healthy = False
        assert await client._router.probe(member) is False
    assert [r.path for r in tgi.requests] == ["/health", "/health"]
